"""Per-frame CNN features of videos, extracted once and kept as float16 memory-mapped arrays.

Layout under ``cache_root`` (``paths.cache_dir``, never the user's data folder)::

    violence/<key>/features.npy   float16 [videos, T, D], written in place
    violence/<key>/done.npy       bool [videos]: rows whose features are on disk
    violence/<key>/meta.json      what the key was made from (data root, encoder, T, copy, augmentation)
    violence/<key>/complete       marker: every row done; later runs never load the backbone
    violence/<key>.lock           held while a process extracts into that copy
    violence/ready-<key>.json     an extraction pass over a set of copies has finished

One key per "copy": copy 0 is the clean features of every video; copies 1..K-1 are augmented
versions of the training videos, each with its own deterministic augmentation per video. The key
hashes the data root, the video list (with sizes and modification times), the frame encoder's
settings, T, the copy index and the augmentation strengths, so changing any of them makes a new
cache instead of silently reusing a stale one.

An interrupted extraction resumes: ``done.npy`` is rewritten (atomically, after the features are
written) every few seconds, so rows marked done are always on disk. Each video is decoded once
however many copies need it.

Several processes may want the same copy at once (the ranks of a DDP run, the jobs of a sweep):
:meth:`FeatureCache.extract` holds a file lock per copy while it writes, so two writers never share
a copy, and the ranks other than the first of a machine only :meth:`FeatureCache.wait_until_ready`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import mmap
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from datamodules.video import probe_video, read_frames, uniform_indices
from suite.errors import ConfigError, DataError
from suite.io import atomic_write_json, atomic_write_text

CACHE_VERSION = 1
# How long a rank waits for the first rank to take the extraction lock before giving up (the lock is
# released when its holder dies, so a free lock and no finished extraction for this long means that
# the first rank is not coming).
IDLE_WAIT_S = 600.0


def local_rank() -> int:
    """This process's rank on its machine, from the variables DDP launchers set (0 without DDP)."""
    for var in ("LOCAL_RANK", "SLURM_LOCALID", "JSM_NAMESPACE_LOCAL_RANK"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


class FrameFeatures(Protocol):
    """What the cache needs of a frame encoder (``lightning_modules.nets.violence.FrameEncoder``)."""

    backbone: str
    frame_size: int
    feature_dim: int

    def key_fields(self) -> dict[str, Any]: ...

    def load(self, device: str = "auto", batch_frames: int = 256) -> Callable[[np.ndarray], np.ndarray]: ...


@dataclass(frozen=True)
class AugmentSpec:
    """Strengths of one augmented copy (seed 001: brightness +-12 % / +-30 %, rotation +-20 deg,
    Gaussian noise std 0.008 / 0.02 in units of the full pixel range)."""

    brightness: float = 0.12
    rotate_deg: float = 0.0
    noise_std: float = 0.008

    def build(self) -> Any:
        import albumentations as A

        ops: list[Any] = []
        if self.brightness > 0:
            ops.append(A.RandomBrightnessContrast(brightness_limit=self.brightness, contrast_limit=0.0, p=1.0))
        if self.rotate_deg > 0:
            ops.append(A.Affine(rotate=(-self.rotate_deg, self.rotate_deg), border_mode=0, fill=0, p=1.0))
        if self.noise_std > 0:
            ops.append(A.GaussNoise(std_range=(self.noise_std, self.noise_std), p=1.0))
        return A.Compose(ops)


def _fingerprint(videos: Sequence[Path], root: Path) -> str:
    h = hashlib.sha1()
    for path in videos:
        stat = path.stat()
        h.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(fields: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


class MappedFeatures:
    """Read-only view of a ``features.npy`` file: one ``[T, D]`` float16 sequence per read.

    The file is memory mapped, so a dataset ten times larger costs no more memory. Pages of a
    mapping that were read count towards the process's resident size until unmapped, so every
    ``release_every`` reads the pages are given back (``MADV_DONTNEED``); the kernel keeps them in
    its page cache, so reading them again is cheap.
    """

    def __init__(self, path: str | Path, release_every: int = 256):
        self.path = Path(path)
        self.release_every = release_every
        shape, dtype, self.offset = _npy_layout(self.path)
        if len(shape) != 3:
            raise DataError(f"feature cache {self.path} is not a [videos, T, D] array (shape {shape})")
        self.shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.dtype = np.dtype(dtype)
        self._array: np.ndarray | None = None
        self._mm: mmap.mmap | None = None
        self._reads = 0

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = state["_mm"] = None  # DataLoader workers map the file themselves
        return state

    def _open(self) -> np.ndarray:
        if self._array is None:
            with open(self.path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            count = int(np.prod(self.shape))
            self._array = np.frombuffer(self._mm, dtype=self.dtype, count=count, offset=self.offset).reshape(
                self.shape)
        return self._array

    def __getitem__(self, row: int) -> np.ndarray:
        out = np.array(self._open()[row])
        self._reads += 1
        if self.release_every and self._reads % self.release_every == 0:
            self.release()
        return out

    def release(self) -> None:
        if self._mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED)


@dataclass
class CopyPlan:
    """One cached copy: which videos (indices into the video list) and which augmentation."""

    copy: int
    rows: list[int]
    augment: AugmentSpec | None


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a ``.npy`` file, from its header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(f)
        if fortran:
            raise DataError(f"feature cache {path} is stored in Fortran order; delete it to extract again")
        return tuple(int(s) for s in shape), np.dtype(dtype), f.tell()


class _CopyStore:
    """Writer of one copy's ``features.npy``.

    Rows are written with ``os.pwrite`` rather than through a writable memory map: page faults on
    a fresh mapping cost more than the extraction of tiny frames. Data written is in the page
    cache as soon as ``pwrite`` returns, so it survives the process being killed; ``fsync`` runs
    once when the copy is complete, before the ``complete`` marker.
    """

    def __init__(self, directory: Path, meta: dict[str, Any], n_rows: int, shape_td: tuple[int, int]):
        self.dir = directory
        self.meta = meta
        self.n_rows = n_rows
        self.shape_td = shape_td
        self.features_path = directory / "features.npy"
        self.done_path = directory / "done.npy"
        self._fd: int | None = None
        self._offset = 0
        self._row_bytes = int(np.prod(shape_td)) * 2
        self.done: np.ndarray | None = None

    @property
    def complete(self) -> bool:
        return (self.dir / "complete").is_file()

    def open_for_write(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        shape = (self.n_rows, *self.shape_td)
        resumed = False
        if self.features_path.is_file() and self.done_path.is_file():
            try:
                got_shape, dtype, _ = _npy_layout(self.features_path)
                self.done = np.load(self.done_path)
                resumed = got_shape == shape and dtype == np.float16 and self.done.shape == (self.n_rows,)
            except (ValueError, OSError, DataError):
                resumed = False  # unreadable leftovers of an interrupted start: begin this copy again
        if not resumed:
            atomic_write_json(self.dir / "meta.json", self.meta)
            header = np.lib.format.open_memmap(self.features_path, mode="w+", dtype=np.float16, shape=shape)
            del header  # only the header and the (sparse) file size are needed
            self.done = np.zeros(self.n_rows, bool)
            self._save_done()
        _, _, self._offset = _npy_layout(self.features_path)
        self._fd = os.open(self.features_path, os.O_RDWR)

    def write(self, row: int, values: np.ndarray) -> None:
        assert self._fd is not None
        data = np.ascontiguousarray(values, dtype=np.float16).tobytes()
        os.pwrite(self._fd, data, self._offset + row * self._row_bytes)

    def mark(self, rows: list[int]) -> None:
        """Record rows whose bytes were written as done."""
        assert self.done is not None
        if not rows:
            return
        self.done[rows] = True
        self._save_done()

    def _save_done(self) -> None:
        tmp = self.done_path.with_name(f".done.{os.getpid()}.npy")
        np.save(tmp, self.done)
        os.replace(tmp, self.done_path)

    def close(self) -> None:
        if self._fd is not None:
            if self.done is not None and bool(self.done.all()):
                os.fsync(self._fd)
                atomic_write_text(self.dir / "complete", json.dumps({"rows": self.n_rows}))
            os.close(self._fd)
            self._fd = None


@dataclass
class ExtractionReport:
    seconds: float
    videos_decoded: int
    sequences_written: int
    skipped: bool
    bad_videos: dict[str, str]



class _RowWriter:
    """Batches decoded clips through the encoder and writes their rows into the open copies.

    Rows are marked done (``done.npy``) every ``commit_every_s`` seconds and when closed, never before
    their bytes are written: an interruption loses at most the rows of the last few seconds.
    """

    def __init__(self, stores: dict[int, _CopyStore], num_frames: int, videos: Sequence[Path],
                 commit_every_s: float):
        self.stores = stores
        self.num_frames = num_frames
        self.videos = videos
        self.commit_every_s = commit_every_s
        self.pending: list[tuple[int, int, int, np.ndarray]] = []  # (video, copy, row, frames)
        self.unmarked: dict[int, list[int]] = {c: [] for c in stores}
        self.written = 0
        self.last_commit = time.perf_counter()

    @property
    def pending_frames(self) -> int:
        return sum(len(frames) for *_, frames in self.pending)

    def add(self, video_index: int, copy: int, row: int, frames: np.ndarray) -> None:
        self.pending.append((video_index, copy, row, frames))

    def flush(self, encoder: Callable[[np.ndarray], np.ndarray]) -> None:
        if not self.pending:
            return
        feats = encoder(np.concatenate([f for *_, f in self.pending]))
        if feats.dtype != np.float16:
            import torch

            # torch converts to float16 about 50x faster than numpy's software conversion
            feats = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)).half().numpy()
        for i, (video_index, copy, row, _) in enumerate(self.pending):
            seq = feats[i * self.num_frames:(i + 1) * self.num_frames]
            if not np.isfinite(seq).all():
                raise DataError(f"the backbone gave NaN/inf features (or values beyond float16) for "
                                f"{self.videos[video_index]} (copy {copy}); check the video and the frame encoder")
            self.stores[copy].write(row, seq)
            self.unmarked[copy].append(row)
            self.written += 1
        self.pending.clear()
        if time.perf_counter() - self.last_commit > self.commit_every_s:
            self.commit()

    def commit(self) -> None:
        # msync of every copy costs time: done masks are saved every few seconds, not every batch
        for copy, rows in self.unmarked.items():
            self.stores[copy].mark(rows)
            rows.clear()
        self.last_commit = time.perf_counter()

    def close(self) -> None:
        # rows written before an error or an interrupt are kept: the next run resumes after them
        self.commit()
        for store in self.stores.values():
            store.close()


class FeatureCache:
    """Cached features of ``videos`` (absolute paths under ``data_root``), one array per copy."""

    def __init__(self, cache_root: str | Path, data_root: str | Path, videos: Sequence[Path], num_frames: int,
                 encoder: FrameFeatures, aug_seed: int = 0):
        self.cache_root = Path(cache_root).expanduser().resolve()
        self.data_root = Path(data_root).expanduser().resolve()
        if self.cache_root == self.data_root or self.data_root in self.cache_root.parents:
            raise ConfigError(f"paths.cache_dir ({self.cache_root}) lies inside the data folder {self.data_root}; "
                              "the cache must not be written into the user's data")
        self.videos = [Path(v).resolve() for v in videos]
        self.num_frames = int(num_frames)
        self.encoder = encoder
        self.aug_seed = aug_seed
        self.base_fields = {
            "version": CACHE_VERSION, "data_root": str(self.data_root),
            "videos": _fingerprint(self.videos, self.data_root), "num_frames": self.num_frames,
            "encoder": encoder.key_fields(),
        }

    @property
    def folder(self) -> Path:
        return self.cache_root / "violence"

    def _store(self, plan: CopyPlan) -> _CopyStore:
        rel = [str(self.videos[i].relative_to(self.data_root)) for i in plan.rows]
        fields = dict(self.base_fields, copy=plan.copy,
                      augment=asdict(plan.augment) if plan.augment else None,
                      aug_seed=self.aug_seed if plan.augment else None,
                      rows=hashlib.sha1("\n".join(rel).encode()).hexdigest())
        key = cache_key(fields)
        meta = dict(fields, key=key, videos_in_copy=rel, backbone=self.encoder.backbone)
        shape = (self.num_frames, self.encoder.feature_dim)
        return _CopyStore(self.folder / key, meta, len(plan.rows), shape)

    def paths(self, plans: Sequence[CopyPlan]) -> dict[int, Path]:
        return {p.copy: self._store(p).features_path for p in plans}

    def done_rows(self, plan: CopyPlan) -> np.ndarray:
        store = self._store(plan)
        if store.complete:
            return np.ones(len(plan.rows), bool)
        return np.load(store.done_path) if store.done_path.is_file() else np.zeros(len(plan.rows), bool)

    # -- several processes ---------------------------------------------------------------------
    @contextmanager
    def locked(self, plans: Sequence[CopyPlan], timeout: float = -1) -> Iterator[None]:
        """Hold the lock of every copy of ``plans`` (taken in key order, so two holders of
        overlapping sets cannot deadlock); ``filelock.Timeout`` after ``timeout`` seconds."""
        from filelock import FileLock

        self.folder.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            for folder in sorted({self._store(p).dir for p in plans}):
                stack.enter_context(FileLock(f"{folder}.lock", timeout=timeout))
            yield

    def _ready_path(self, plans: Sequence[CopyPlan]) -> Path:
        keys = sorted(self._store(p).dir.name for p in plans)
        return self.folder / f"ready-{cache_key({'copies': keys})}.json"

    def ready(self, plans: Sequence[CopyPlan]) -> bool:
        """True when an extraction pass over ``plans`` finished (rows of unreadable videos may be missing)."""
        return self._ready_path(plans).is_file() or all(self._store(p).complete for p in plans)

    def extract(self, plans: Sequence[CopyPlan], **options: Any) -> ExtractionReport:
        """:meth:`ensure` under the copies' locks, then mark the set ready for the waiting ranks."""
        with self.locked(plans):
            report = self.ensure(plans, **options)
            atomic_write_json(self._ready_path(plans), {"bad_videos": report.bad_videos,
                                                        "copies": sorted(self._store(p).dir.name for p in plans)})
        return report

    def wait_until_ready(self, plans: Sequence[CopyPlan], idle_timeout_s: float | None = None,
                         poll_s: float = 2.0) -> None:
        """Wait for another process to :meth:`extract` ``plans``. Waits as long as that process holds
        a lock; a DataError when the locks stay free for ``idle_timeout_s`` (default :data:`IDLE_WAIT_S`)
        without the set becoming ready."""
        from filelock import Timeout

        idle_timeout_s = IDLE_WAIT_S if idle_timeout_s is None else idle_timeout_s
        idle_since = time.monotonic()
        while True:
            try:
                with self.locked(plans, timeout=poll_s):
                    if self.ready(plans):
                        return
            except Timeout:
                idle_since = time.monotonic()  # the extracting process holds a lock: it is alive
                continue
            if time.monotonic() - idle_since > idle_timeout_s:
                raise DataError(f"waited {idle_timeout_s:.0f} s for the first process of this machine to extract "
                                f"the features under {self.folder}, and none did (it may have failed: see its log)")
            time.sleep(poll_s)

    # -- extraction ------------------------------------------------------------------------------
    def ensure(
        self,
        plans: Sequence[CopyPlan],
        device: str = "cpu",
        batch_frames: int = 256,
        decode_threads: int = 2,
        skip_bad_videos: bool = False,
        progress: bool = True,
        commit_every_s: float = 5.0,
        encoder_factory: Callable[[], Callable[[np.ndarray], np.ndarray]] | None = None,
    ) -> ExtractionReport:
        """Extract whatever is missing; returns timings. Raises DataError naming unreadable videos
        (after extracting all the others, so a re-run only retries those). Call it from one process
        at a time per copy (:meth:`extract` takes care of that)."""
        start = time.perf_counter()
        todo = {p.copy: (p, store) for p in plans if not (store := self._store(p)).complete}
        if not todo:
            return ExtractionReport(time.perf_counter() - start, 0, 0, True, {})
        for _, store in todo.values():
            store.open_for_write()
        needed = self._missing_rows(todo)
        writer = _RowWriter({c: s for c, (_, s) in todo.items()}, self.num_frames, self.videos, commit_every_s)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(needed), desc="extracting features", unit="videos", disable=not progress,
                   dynamic_ncols=True)
        bad: dict[str, str] = {}
        try:
            encoder = encoder_factory() if encoder_factory else self.encoder.load(device, batch_frames)
            transforms = {c: p.augment.build() for c, (p, _) in todo.items() if p.augment}
            for video_index, frames in self._decoded(sorted(needed), decode_threads):
                bar.update(1)
                if isinstance(frames, DataError):
                    bad[str(self.videos[video_index])] = str(frames)
                    continue
                for copy, row in needed[video_index]:
                    writer.add(video_index, copy, row, self._augmented(frames, transforms.get(copy), video_index, copy))
                if writer.pending_frames >= batch_frames:
                    writer.flush(encoder)
            writer.flush(encoder)
        finally:
            writer.close()
            bar.close()
        report = ExtractionReport(time.perf_counter() - start, len(needed) - len(bad), writer.written, False, bad)
        if bad and not skip_bad_videos:
            listed = "\n  ".join(f"{path}: {msg}" for path, msg in list(bad.items())[:20])
            raise DataError(f"{len(bad)} video(s) could not be read (set data.skip_bad_videos=true to leave "
                            f"them out):\n  {listed}")
        return report

    @staticmethod
    def _missing_rows(todo: dict[int, tuple[CopyPlan, _CopyStore]]) -> dict[int, list[tuple[int, int]]]:
        """Video index -> the ``(copy, row)`` pairs of it still missing."""
        needed: dict[int, list[tuple[int, int]]] = {}
        for copy, (plan, store) in todo.items():
            assert store.done is not None
            for row, video_index in enumerate(plan.rows):
                if not store.done[row]:
                    needed.setdefault(video_index, []).append((copy, row))
        return needed

    def _decode(self, video_index: int) -> np.ndarray:
        path = self.videos[video_index]
        size = (self.encoder.frame_size, self.encoder.frame_size)
        return read_frames(path, uniform_indices(probe_video(path).num_frames, self.num_frames), size=size)

    def _decoded(self, order: Sequence[int], threads: int) -> Iterator[tuple[int, np.ndarray | DataError]]:
        """``(video index, frames)`` in ``order``, decoded ``2 x threads`` videos ahead of the consumer;
        an unreadable video gives its DataError instead of frames."""
        threads = max(1, threads)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            it = iter(order)
            queue: deque[tuple[int, Future]] = deque(
                (i, pool.submit(self._decode, i)) for i in itertools.islice(it, 2 * threads))
            while queue:
                video_index, future = queue.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    queue.append((nxt, pool.submit(self._decode, nxt)))
                try:
                    frames: np.ndarray | DataError = future.result()
                except DataError as err:
                    frames = err
                yield video_index, frames

    def _augmented(self, frames: np.ndarray, transform: Any, video_index: int, copy: int) -> np.ndarray:
        if transform is None:
            return frames
        # One seed per (video, copy): the same copy is the same however often it is rebuilt.
        transform.set_random_seed((self.aug_seed * 1_000_003 + video_index * 1009 + copy) % 2**31)
        return np.asarray(transform(images=frames)["images"])

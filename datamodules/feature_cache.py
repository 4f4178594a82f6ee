"""Per-frame CNN features of videos, extracted once and kept as float16 memory-mapped arrays.

Layout under ``cache_root`` (``paths.cache_dir``, never the user's data folder)::

    violence/<key>/features.npy   float16 [videos, T, D], written in place (np.lib.format.open_memmap)
    violence/<key>/done.npy       bool [videos]: rows whose features are on disk
    violence/<key>/meta.json      what the key was made from (data root, backbone, T, copy, augmentation)
    violence/<key>/complete       marker: every row done; later runs never load the backbone

One key per "copy": copy 0 is the clean features of every video; copies 1..K-1 are augmented
versions of the training videos, each with its own deterministic augmentation per video. The key
hashes the data root, the video list (with sizes and modification times), the backbone and its
weights, frame size, T, feature size, the copy index and the augmentation strengths, so changing
any of them makes a new cache instead of silently reusing a stale one.

An interrupted extraction resumes: ``done.npy`` is rewritten (atomically, after the features are
flushed) every batch, so rows marked done are always on disk. Each video is decoded once however
many copies need it.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.video import probe_video, read_frames, uniform_indices
from suite.errors import ConfigError, DataError
from suite.io import atomic_write_json, atomic_write_text

CACHE_VERSION = 1


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


@dataclass(frozen=True)
class EncoderSpec:
    """What determines the features of one frame."""

    backbone: str
    pretrained: bool
    weights: str | None
    frame_size: int
    feature_dim: int
    # True only for the synthetic default: a fixed random fc7-like projection of the tiny model's
    # pooled features outputs feature_dim values.
    head_as_projection: bool = False
    # bumped when the synthetic projection changes, so caches of the old one are not reused
    projection_version: int = 2

    def key_fields(self) -> dict[str, Any]:
        fields = asdict(self)
        if self.weights:
            path = Path(self.weights).expanduser()
            stat = path.stat() if path.is_file() else None
            fields["weights"] = [str(path.resolve()), stat.st_size if stat else None,
                                 stat.st_mtime_ns if stat else None]
        return fields


def _with_fc7_like_projection(model: Any, feature_dim: int) -> Any:
    """The synthetic default's stand-in for VGG16 fc7: ReLU(W norm(x)), W He-initialised.

    A tiny random backbone pools features around 1e-3, and a timm classifier head is initialised for
    logits; together they gave features around 1e-4, far below fc7's scale (order 1), so the seed's L2
    penalty swamped every signal. Normalising the pooled vector and a variance-keeping projection
    give sparse non-negative features of order 1, like fc7's.
    """
    from torch import nn

    projection = nn.Linear(model.num_features, feature_dim)
    nn.init.kaiming_normal_(projection.weight, nonlinearity="relu")
    nn.init.zeros_(projection.bias)
    return nn.Sequential(model, nn.LayerNorm(model.num_features, elementwise_affine=False), projection, nn.ReLU())


class FrameEncoder:
    """A timm backbone in eval mode: uint8 RGB frames ``[N, H, W, 3]`` -> float32 ``[N, D]``."""

    def __init__(self, spec: EncoderSpec, device: str = "cpu", batch_frames: int = 256, seed: int = 0):
        import torch

        from suite.backbones import create_timm_model

        self.spec = spec
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.batch_frames = max(1, int(batch_frames))
        # Random weights (synthetic default, pretrained=false) are fixed by the seed so the cache key stays
        # meaningful; the global generator is left untouched, so a run that extracts and a run that reads
        # the cache train identically.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_timm_model(spec.backbone, pretrained=spec.pretrained, weights=spec.weights,
                                      num_classes=0)
            cfg = getattr(model, "pretrained_cfg", {}) or {}
            if spec.head_as_projection:
                model = _with_fc7_like_projection(model, spec.feature_dim)
        self.model = model.eval().to(self.device)
        mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255.0
        probe = self(np.zeros((1, spec.frame_size, spec.frame_size, 3), np.uint8))
        if probe.shape[1] != spec.feature_dim:
            raise ConfigError(
                f"data.feature_dim={spec.feature_dim}, but backbone '{spec.backbone}' at {spec.frame_size}px gives "
                f"{probe.shape[1]}-d features; set data.feature_dim={probe.shape[1]} (and the model's input_dim "
                "follows it)"
            )

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_frames):
                x = torch.from_numpy(np.ascontiguousarray(frames[start:start + self.batch_frames]))
                x = x.to(self.device).permute(0, 3, 1, 2).float()
                x = (x - self.mean) / self.std
                out.append(self.model(x).float().cpu().numpy())
        return np.concatenate(out)


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


class FeatureCache:
    """Cached features of ``videos`` (absolute paths under ``data_root``), one array per copy."""

    def __init__(self, cache_root: str | Path, data_root: str | Path, videos: Sequence[Path], num_frames: int,
                 encoder: EncoderSpec, aug_seed: int = 0):
        self.cache_root = Path(cache_root).expanduser().resolve()
        self.data_root = Path(data_root).expanduser().resolve()
        if self.cache_root == self.data_root or self.data_root in self.cache_root.parents:
            raise ConfigError(f"paths.cache_dir ({self.cache_root}) lies inside the data folder {self.data_root}; "
                              "the cache must not be written into the user's data")
        self.videos = [Path(v).resolve() for v in videos]
        self.num_frames = int(num_frames)
        self.encoder_spec = encoder
        self.aug_seed = aug_seed
        self.base_fields = {
            "version": CACHE_VERSION, "data_root": str(self.data_root),
            "videos": _fingerprint(self.videos, self.data_root), "num_frames": self.num_frames,
            "encoder": encoder.key_fields(),
        }

    def _store(self, plan: CopyPlan) -> _CopyStore:
        rel = [str(self.videos[i].relative_to(self.data_root)) for i in plan.rows]
        fields = dict(self.base_fields, copy=plan.copy,
                      augment=asdict(plan.augment) if plan.augment else None,
                      aug_seed=self.aug_seed if plan.augment else None,
                      rows=hashlib.sha1("\n".join(rel).encode()).hexdigest())
        key = cache_key(fields)
        meta = dict(fields, key=key, videos_in_copy=rel, backbone=self.encoder_spec.backbone)
        shape = (self.num_frames, self.encoder_spec.feature_dim)
        return _CopyStore(self.cache_root / "violence" / key, meta, len(plan.rows), shape)

    def paths(self, plans: Sequence[CopyPlan]) -> dict[int, Path]:
        return {p.copy: self._store(p).features_path for p in plans}

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
        (after extracting all the others, so a re-run only retries those)."""
        start = time.perf_counter()
        stores = {p.copy: (p, self._store(p)) for p in plans}
        todo = {c: (p, s) for c, (p, s) in stores.items() if not s.complete}
        if not todo:
            return ExtractionReport(time.perf_counter() - start, 0, 0, True, {})
        for _, store in todo.values():
            store.open_for_write()
        # video index -> [(copy, row)] still missing
        needed: dict[int, list[tuple[int, int]]] = {}
        for copy, (plan, store) in todo.items():
            assert store.done is not None
            for row, video_index in enumerate(plan.rows):
                if not store.done[row]:
                    needed.setdefault(video_index, []).append((copy, row))
        encoder = encoder_factory() if encoder_factory else FrameEncoder(
            self.encoder_spec, device=device, batch_frames=batch_frames, seed=self.aug_seed)
        transforms = {c: p.augment.build() for c, (p, _) in todo.items() if p.augment}
        bad: dict[str, str] = {}
        written = 0
        order = sorted(needed)
        size = (self.encoder_spec.frame_size, self.encoder_spec.frame_size)

        def decode(video_index: int) -> np.ndarray:
            path = self.videos[video_index]
            info = probe_video(path)
            return read_frames(path, uniform_indices(info.num_frames, self.num_frames), size=size)

        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc="extracting features", unit="videos", disable=not progress,
                   dynamic_ncols=True)
        pending: list[tuple[int, int, int, np.ndarray]] = []  # (video, copy, row, frames)
        unmarked: dict[int, list[int]] = {c: [] for c in todo}
        last_commit = time.perf_counter()

        def commit() -> None:
            # msync of every copy costs time: done masks are saved every few seconds, not every batch
            nonlocal last_commit
            for copy, rows in unmarked.items():
                todo[copy][1].mark(rows)
                rows.clear()
            last_commit = time.perf_counter()

        def flush() -> None:
            nonlocal written
            if not pending:
                return
            feats = encoder(np.concatenate([f for *_, f in pending]))
            if feats.dtype != np.float16:
                import torch

                # torch converts to float16 about 50x faster than numpy's software conversion
                feats = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)).half().numpy()
            for i, (video_index, copy, row, _) in enumerate(pending):
                seq = feats[i * self.num_frames:(i + 1) * self.num_frames]
                if not np.isfinite(seq).all():
                    raise DataError(f"the backbone gave NaN/inf features (or values beyond float16) for "
                                    f"{self.videos[video_index]} (copy {copy}); check the video and data.backbone")
                todo[copy][1].write(row, seq)
                unmarked[copy].append(row)
                written += 1
            pending.clear()
            if time.perf_counter() - last_commit > commit_every_s:
                commit()

        try:
            with ThreadPoolExecutor(max_workers=max(1, decode_threads)) as pool:
                queue: deque[tuple[int, Future]] = deque()
                it = iter(order)
                for video_index in it:
                    queue.append((video_index, pool.submit(decode, video_index)))
                    if len(queue) >= 2 * max(1, decode_threads):
                        break
                while queue:
                    video_index, future = queue.popleft()
                    nxt = next(it, None)
                    if nxt is not None:
                        queue.append((nxt, pool.submit(decode, nxt)))
                    try:
                        frames = future.result()
                    except DataError as err:
                        bad[str(self.videos[video_index])] = str(err)
                        bar.update(1)
                        continue
                    for copy, row in needed[video_index]:
                        plan = todo[copy][0]
                        clip = frames
                        if plan.augment is not None:
                            # One seed per (video, copy): the same copy is the same however often it is rebuilt.
                            transform = transforms[copy]
                            transform.set_random_seed((self.aug_seed * 1_000_003 + video_index * 1009 + copy) % 2**31)
                            clip = transform(images=frames)["images"]
                        pending.append((video_index, copy, row, np.asarray(clip)))
                    if sum(len(p[3]) for p in pending) >= batch_frames:
                        flush()
                    bar.update(1)
                flush()
        finally:
            # rows written before an error or an interrupt are kept: the next run resumes after them
            commit()
            bar.close()
            for _, store in todo.values():
                store.close()

        report = ExtractionReport(time.perf_counter() - start, len(order) - len(bad), written, False, bad)
        if bad and not skip_bad_videos:
            listed = "\n  ".join(f"{path}: {msg}" for path, msg in list(bad.items())[:20])
            raise DataError(f"{len(bad)} video(s) could not be read (set data.skip_bad_videos=true to leave "
                            f"them out):\n  {listed}")
        return report

    def done_rows(self, plan: CopyPlan) -> np.ndarray:
        store = self._store(plan)
        if store.complete:
            return np.ones(len(plan.rows), bool)
        return np.load(store.done_path) if store.done_path.is_file() else np.zeros(len(plan.rows), bool)

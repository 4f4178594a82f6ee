"""Violence detection data (seed 001): videos -> cached per-frame features -> sequences.

Layouts read:
- ``root/<split>/<class>/*.mp4|avi`` with split folders train (required), val, test: a missing
  val or test split is held out of train (``val_fraction``/``test_fraction`` of its videos) by a
  seeded group split;
- ``root/<class>/*`` without split folders: a seeded train/val/test split that keeps every group
  (the ``group_column`` of ``labels_csv``, e.g. ``source_group``) on one side; videos the CSV does
  not list are their own group.
Both splits are :func:`datamodules.grouped_split.grouped_split`, stratified by class. Class folder
names map to ``violent`` / ``non_violent`` through ``class_map``.

Features: the frame encoder (``data.frame_encoder``, a
:class:`~lightning_modules.nets.violence.FrameEncoder` the config instantiates) runs once per video
in ``prepare_data`` (:meth:`ViolenceDataModule.prepare_caches`), on the first rank of a machine
under a file lock; the features stay in ``datamodules.feature_cache`` (float16 memory-mapped, under
``paths.cache_dir``), which every rank then reads. Training sees ``aug_multiplier`` copies of each
training video: the clean one plus ``aug_multiplier - 1`` augmented at extraction time (seed: 3x
optimal, 10x failed), and an online temporal jitter (a random window of ``clip_len`` of the
``num_frames`` cached frames). Validation and test see the centre window, plus ``tta_crops``
windows spread over the video for test-time augmentation.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import SuiteDataModule, check_class_counts, file_digest
from datamodules.feature_cache import AugmentSpec, CopyPlan, FeatureCache, MappedFeatures, local_rank
from datamodules.grouped_split import grouped_split
from datamodules.manifests import normalize_id, read_table
from datamodules.synthetic.common import SyntheticDataset
from datamodules.synthetic.violence import GENERATOR
from datamodules.video import VIDEO_EXTENSIONS, tta_positions
from lightning_modules.nets.violence import FrameEncoder
from suite.contracts import Head, InputSpec
from suite.errors import ConfigError, DataError
from suite.printing import warn_on_console

log = logging.getLogger(__name__)

CLASS_NAMES = ("non_violent", "violent")  # index 0, 1
HEAD = "class"
DEFAULT_CLASS_MAP = {
    "violent": ["violent", "violence", "fight", "fights", "Violence", "Fight"],
    "non_violent": ["non_violent", "nonviolent", "non_violence", "nonviolence", "NonViolence", "nofight",
                    "noFight", "no_fight", "normal"],
}
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
# Former data keys of the frame encoders -> their key in the encoder node (still read, with a warning).
LEGACY_ENCODER_KEYS = {"backbone": "backbone", "pretrained": "pretrained", "backbone_weights": "weights",
                       "frame_size": "frame_size", "feature_dim": "feature_dim"}
LEGACY_SYNTHETIC_KEYS = {"synthetic_backbone": "backbone", "synthetic_frame_size": "frame_size",
                         "feature_dim": "feature_dim"}


@dataclass(frozen=True)
class VideoItem:
    path: Path
    label: int
    group: str


def folder_to_label(class_map: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Folder name (case-insensitive) -> class index; unknown class names in the map are errors."""
    out: dict[str, int] = {}
    for cls, folders in class_map.items():
        if cls not in CLASS_NAMES:
            raise ConfigError(f"data.class_map: unknown class '{cls}' (use {', '.join(CLASS_NAMES)})")
        for name in folders:
            key = str(name).casefold()
            if key in out and out[key] != CLASS_NAMES.index(cls):
                raise ConfigError(f"data.class_map: folder '{name}' is listed under both classes")
            out[key] = CLASS_NAMES.index(cls)
    return out


def list_class_videos(folder: Path, mapping: dict[str, int]) -> list[tuple[Path, int]]:
    """``folder/<class>/*`` videos with their class index."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"no class folders in {folder} (expected e.g. {folder}/fight and {folder}/nofight)")
    out = []
    for d in class_dirs:
        label = mapping.get(d.name.casefold())
        if label is None:
            known = ", ".join(sorted(mapping))
            raise DataError(f"class folder '{d}' is not in data.class_map (known folder names: {known}); add it "
                            "under violent or non_violent")
        out += [(p, label) for p in sorted(d.rglob("*")) if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
    if not out:
        raise DataError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under the class folders of {folder}")
    return out


def read_groups(csv_path: Path, root: Path, path_column: str, group_column: str) -> dict[Path, str]:
    """Video path -> group from a labels CSV (paths relative to ``root``), read by the shared manifest reader."""
    table = read_table(csv_path, "labels file (data.labels_csv)")
    table.require({path_column: "data.path_column", group_column: "data.group_column"})
    groups: dict[Path, str] = {}
    for i, row in enumerate(table.rows):
        rel, group = row[path_column], normalize_id(row[group_column])
        if not rel or not group:
            raise DataError(f"{table.where(i)}: empty '{path_column}' or '{group_column}'")
        path = (root / rel).resolve()
        if not path.is_file():
            raise DataError(f"{table.where(i)}: video not found: {root / rel}")
        if groups.get(path, group) != group:
            raise DataError(f"{table.where(i)}: {rel} is listed again with another group ('{group}', before "
                            f"'{groups[path]}'); give each video one group")
        groups[path] = group
    return groups


class SequenceDataset(Dataset):
    """Items ``(copy, row, video)`` of the cached feature arrays; windows of ``clip_len`` frames.

    A read gives ``features [clip_len, D]``, ``label``, ``item_id`` (the video's path under ``root``)
    and ``group``. ``train``: one random window per read (temporal jitter). Otherwise the centre
    window, plus ``tta [tta_crops, clip_len, D]``: windows at evenly spread positions.
    """

    def __init__(self, arrays: Mapping[int, MappedFeatures], items: Sequence[tuple[int, int, VideoItem]],
                 clip_len: int, train: bool, tta_crops: int = 1, root: Path | None = None):
        self.arrays = dict(arrays)
        self.items = list(items)
        self.clip_len = clip_len
        self.train = train
        self.tta_crops = max(1, tta_crops)
        self.root = root

    def __len__(self) -> int:
        return len(self.items)

    def _name(self, video: VideoItem) -> str:
        if self.root is not None:
            try:
                return str(video.path.relative_to(self.root))
            except ValueError:
                pass
        return str(video.path)

    def __getitem__(self, index: int) -> dict[str, Any]:
        copy, row, video = self.items[index]
        array = self.arrays[copy]
        seq = array[row]
        if not np.isfinite(seq).all():
            raise DataError(f"NaN/inf features for {video.path} (copy {copy}) in {array.path}; delete that cache "
                            "folder to extract it again")
        seq_t = torch.from_numpy(seq.astype(np.float32))
        t = seq_t.shape[0]
        room = t - self.clip_len
        out: dict[str, Any] = {"label": video.label, "item_id": self._name(video), "group": video.group}
        if self.train:
            start = int(torch.randint(0, room + 1, (1,)).item())
            out["features"] = seq_t[start:start + self.clip_len]
            return out
        out["features"] = seq_t[room // 2: room // 2 + self.clip_len]
        starts = [int(round(p * room)) for p in tta_positions(self.tta_crops)]
        out["tta"] = torch.stack([seq_t[s:s + self.clip_len] for s in starts])
        return out


def class_counts(items: Sequence[VideoItem]) -> dict[str, int]:
    counts = Counter(it.label for it in items)
    return {name: counts.get(i, 0) for i, name in enumerate(CLASS_NAMES)}


def describe_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


class ViolenceDataModule(SuiteDataModule):
    """Videos -> cached features of ``frame_encoder`` -> windows of ``clip_len`` frames.

    ``frame_encoder`` makes the features of the user's videos (``data.root``);
    ``synthetic_frame_encoder`` those of the synthetic default (``data.root=null``): a tiny random
    backbone, so extraction takes seconds on a CPU. ``backbone``, ``pretrained``, ``backbone_weights``,
    ``frame_size``, ``feature_dim``, ``synthetic_backbone`` and ``synthetic_frame_size`` are the former
    keys of those settings: still applied to the encoders, with a warning naming the new key.
    """

    task = "violence"
    items_name = "videos"

    def __init__(
        self,
        root: str | None = None,
        labels_csv: str | None = "labels.csv",
        path_column: str = "path",
        group_column: str = "source_group",
        class_map: dict[str, list[str]] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        num_frames: int = 30,
        clip_len: int = 24,
        tta_crops: int = 5,
        frame_encoder: FrameEncoder | None = None,
        synthetic_frame_encoder: FrameEncoder | None = None,
        aug_multiplier: int = 3,
        aug_brightness: float = 0.12,
        aug_rotate_deg: float = 0.0,
        aug_noise_std: float = 0.008,
        cache_dir: str = ".cache",
        extract_device: str = "auto",
        extract_batch_frames: int = 256,
        decode_threads: int = 2,
        skip_bad_videos: bool = False,
        release_every: int = 256,
        synthetic_dir: str = "data/synthetic",
        synthetic_videos: dict[str, int] | None = None,
        synthetic_violent_fraction: float = 0.5,
        dev_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int | str = 0,
        pin_memory: bool | str = False,
        backbone: str | None = None,
        pretrained: bool | None = None,
        backbone_weights: str | None = None,
        frame_size: int | None = None,
        feature_dim: int | None = None,
        synthetic_backbone: str | None = None,
        synthetic_frame_size: int | None = None,
        allow_overlap: bool = False,
    ):
        super().__init__(root=root, synthetic_dir=synthetic_dir, dev_samples=dev_samples, seed=seed,
                         batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         allow_overlap=allow_overlap)
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1) (the best checkpoint is chosen on validation), "
                              f"got {val_fraction}")
        if not 0.0 <= test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError(f"data.val_fraction + data.test_fraction must be < 1, got {val_fraction + test_fraction}")
        if num_frames < 1 or not 1 <= clip_len <= num_frames:
            raise ConfigError(f"need 1 <= data.clip_len ({clip_len}) <= data.num_frames ({num_frames})")
        if aug_multiplier < 1:
            raise ConfigError(f"data.aug_multiplier must be >= 1 (1 = clean copy only), got {aug_multiplier}")
        self.labels_csv, self.path_column, self.group_column = labels_csv, path_column, group_column
        self.mapping = folder_to_label(class_map or DEFAULT_CLASS_MAP)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.num_frames, self.clip_len, self.tta_crops = num_frames, clip_len, tta_crops
        legacy = {"backbone": backbone, "pretrained": pretrained, "backbone_weights": backbone_weights,
                  "frame_size": frame_size, "feature_dim": feature_dim, "synthetic_backbone": synthetic_backbone,
                  "synthetic_frame_size": synthetic_frame_size}
        self.frame_encoder = self._with_legacy_keys(
            frame_encoder or FrameEncoder(seed=seed), "data.frame_encoder", LEGACY_ENCODER_KEYS, legacy)
        self.synthetic_frame_encoder = self._with_legacy_keys(
            synthetic_frame_encoder or FrameEncoder("test_efficientnet", pretrained=False, frame_size=32,
                                                    projection=True, seed=seed),
            "data.synthetic_frame_encoder", LEGACY_SYNTHETIC_KEYS, legacy)
        self.frame_encoder = self.resolve_encoder_precision(self.frame_encoder, extract_device)
        self.synthetic_frame_encoder = self.resolve_encoder_precision(self.synthetic_frame_encoder, extract_device)
        self.aug_multiplier = aug_multiplier
        self.augment = AugmentSpec(aug_brightness, aug_rotate_deg, aug_noise_std)
        self.cache_dir = cache_dir
        self.extract_device, self.extract_batch_frames = extract_device, extract_batch_frames
        self.decode_threads, self.skip_bad_videos = decode_threads, skip_bad_videos
        self.release_every = release_every
        self.synthetic_videos = {str(k): int(v) for k, v in (synthetic_videos or
                                                              {"train": 24, "val": 10, "test": 10}).items()}
        self.synthetic_violent_fraction = synthetic_violent_fraction
        self.extraction: Any = None  # the ExtractionReport of this process's prepare_data (first rank only)
        self.datasets: dict[str, SequenceDataset] = {}
        self._cache: tuple[FeatureCache, list[CopyPlan], dict[Path, int]] | None = None
        self._features: tuple[dict[int, MappedFeatures], dict[str, list[tuple[int, int, VideoItem]]]] | None = None

    def resolve_encoder_precision(self, encoder: FrameEncoder, extract_device: str) -> FrameEncoder:
        """``precision: auto``: bf16 in the debug modes (``data.dev_samples``) when the features are extracted
        on a CPU with native bf16 (VGG16 extraction 1.7x faster there, features within about 1 % of fp32's: a
        wiring check does not need fp32's last digits), fp32 otherwise. The cache key holds the precision,
        so bf16 features never stand in for a full run's fp32 ones."""
        if encoder.precision != "auto":
            return encoder
        import torch

        from suite.precision import cpu_has_native_bf16

        on_cpu = extract_device == "cpu" or (extract_device == "auto" and not torch.cuda.is_available())
        bf16 = bool(self.dev_samples) and on_cpu and cpu_has_native_bf16()
        return encoder.replace(precision="bf16" if bf16 else "fp32")

    @staticmethod
    def _with_legacy_keys(encoder: FrameEncoder, key: str, names: Mapping[str, str],
                          given: Mapping[str, Any]) -> FrameEncoder:
        changes = {}
        for old, new in names.items():
            if given.get(old) is not None:
                warn_on_console(log, f"data.{old} is deprecated: set {key}.{new} instead "
                                     f"(data.{old}={given[old]} is applied to {key}.{new})")
                changes[new] = given[old]
        return encoder.replace(config_key=key, **changes)

    @property
    def encoder(self) -> FrameEncoder:
        """The encoder of this run's videos: the synthetic one when ``data.root`` is unset."""
        return self.frame_encoder if self.root else self.synthetic_frame_encoder

    @property
    def feature_dim(self) -> int:
        return self.encoder.feature_dim

    # -- contract hooks ------------------------------------------------------------------------
    def synthetic(self) -> tuple[SyntheticDataset, dict[str, Any]]:
        return GENERATOR, {"videos": self.synthetic_videos, "violent_fraction": self.synthetic_violent_fraction}

    def build_splits(self, root: Path) -> dict[str, list[VideoItem]]:
        self.sources = []
        groups = self._groups(root)
        dirs = self._split_dirs(root)
        if dirs:
            if "train" not in dirs:
                raise DataError(f"{root} has split folders ({', '.join(p.name for p in dirs.values())}) but no "
                                "train folder")
            splits = {name: self._items(folder, root, groups) for name, folder in dirs.items()}
            self.sources += [(str(folder), len(splits[name])) for name, folder in dirs.items()]
            held = {name: fraction for name, fraction in (("val", self.val_fraction), ("test", self.test_fraction))
                    if name not in splits}
            if held:
                splits.update(self._group_split(splits["train"], held, f"the videos of {dirs['train']}"))
                shares = ", ".join(f"{name}_fraction={fraction}" for name, fraction in held.items())
                self.sources.append((f"{dirs['train']} (seeded group split, {shares} held out)",
                                     sum(len(splits[name]) for name in held)))
        else:
            items = self._items(root, root, groups)
            self.sources.insert(0, (str(root), len(items)))
            # a video copied under another name is one video, dropped before the split so that the
            # copies cannot land on two sides of it
            items = self.drop_duplicates({str(root): items})[str(root)]
            splits = self._group_split(items, {"val": self.val_fraction, "test": self.test_fraction},
                                       f"the videos of {root}")
        # shuffled (seeded) so that the data.dev_samples subset, the first items, mixes both classes
        rng = np.random.default_rng(self.seed)
        splits = {name: [splits[name][i] for i in rng.permutation(len(splits[name]))] for name in SPLIT_NAMES}
        counts = {name: class_counts(items) for name, items in splits.items()}
        self._check_classes(counts, str(root))
        log.info("videos per split: %s", "; ".join(f"{n}: {describe_counts(c)}" for n, c in counts.items()))
        return splits

    def item_id(self, item: VideoItem) -> str:
        root = self.data_root()
        return str(item.path.relative_to(root)) if item.path.is_relative_to(root) else str(item.path)

    def group_id(self, item: VideoItem) -> str:
        return item.group

    def content_id(self, item: VideoItem) -> str | None:
        return file_digest(item.path)

    def item_labels(self, item: VideoItem) -> dict[str, str | None]:
        return {HEAD: CLASS_NAMES[item.label]}

    def heads(self) -> tuple[Head, ...]:
        return (Head(HEAD, CLASS_NAMES, positive=CLASS_NAMES.index("violent")),)

    def input_spec(self) -> InputSpec:
        return InputSpec("features", (self.clip_len, self.feature_dim))

    def spec_extras(self) -> dict[str, Any]:
        # folder names as label_map.json always listed them; the encoder so that a checkpoint says
        # which features it was trained on
        folders = {name: CLASS_NAMES[label] for name, label in sorted(self.mapping.items())}
        # num_frames and tta_crops: how a predictor samples new videos as the features were made
        return {"folders": folders, "frame_encoder": self.encoder.describe(), "num_frames": self.num_frames,
                "tta_crops": self.tta_crops}

    def prepare_caches(self, root: Path) -> None:
        """Extract the features of every video of the splits (and the augmented copies of the training
        videos) on the first rank of this machine, under the cache's file locks; other ranks wait for it."""
        self.setup()
        if self._cache is not None and self._cache[0].ready(self._cache[1]) and self.extraction is not None:
            return  # this process has extracted them already (Lightning calls prepare_data again)
        cache, plans, _ = self._cache_plan(root)
        if local_rank() == 0:
            report = cache.extract(plans, device=self.extract_device, batch_frames=self.extract_batch_frames,
                                   decode_threads=self.decode_threads, skip_bad_videos=self.skip_bad_videos)
            self.extraction = report
            if report.skipped:
                print(f"features: cache hit for {len(plans)} cop{'y' if len(plans) == 1 else 'ies'} under "
                      f"{cache.folder} ({report.seconds:.2f} s, extraction skipped)")
            else:
                print(f"features: extracted {report.sequences_written} sequences from {report.videos_decoded} "
                      f"videos in {report.seconds:.1f} s "
                      f"({report.videos_decoded / max(report.seconds, 1e-9):.2f} videos/s)")
        else:
            cache.wait_until_ready(plans)
        for copy, path in cache.paths(plans).items():
            entry = (str(path), len(next(p for p in plans if p.copy == copy).rows))
            if entry not in self.sources:
                self.sources.append(entry)

    def dataset(self, split: str) -> SequenceDataset:
        if split not in self.datasets:
            arrays, entries = self._feature_entries()
            self.datasets[split] = SequenceDataset(arrays, entries[split], self.clip_len, train=split == "train",
                                                   tta_crops=self.tta_crops, root=self.data_root())
        return self.datasets[split]

    # -- splits --------------------------------------------------------------------------------
    def _split_dirs(self, root: Path) -> dict[str, Path]:
        found = {}
        for split, names in SPLIT_NAMES.items():
            for name in names:
                if (root / name).is_dir():
                    found[split] = root / name
                    break
        return found

    def _groups(self, root: Path) -> dict[Path, str]:
        csv_path = root / self.labels_csv if self.labels_csv else None
        if csv_path is None or not csv_path.is_file():
            return {}
        groups = read_groups(csv_path, root, self.path_column, self.group_column)
        self.sources.append((str(csv_path), len(groups)))
        return groups

    def _items(self, folder: Path, root: Path, groups: Mapping[Path, str]) -> list[VideoItem]:
        return [VideoItem(p.resolve(), label, groups.get(p.resolve(), f"video:{p.relative_to(root)}"))
                for p, label in list_class_videos(folder, self.mapping)]

    def _group_split(self, items: Sequence[VideoItem], fractions: Mapping[str, float],
                     what: str) -> dict[str, list[VideoItem]]:
        """Whole groups to each side (``source_group``: clips of one source video never straddle two
        splits), stratified by class."""
        for name, fraction in fractions.items():
            if fraction <= 0:
                raise ConfigError(f"data.{name}_fraction is {fraction}, but {what} must give a {name} split "
                                  f"(no {name} folder): set data.{name}_fraction in (0, 1)")
        parts = grouped_split(len(items), fractions, self.seed, labels=[it.label for it in items],
                              groups=[it.group for it in items], what="videos")
        return {name: [items[i] for i in indices] for name, indices in parts.items()}

    def _check_classes(self, counts: Mapping[str, Mapping[str, int]], where: str) -> None:
        """A class missing from training cannot be learned: refused (the base's check, which setup runs on the
        final train split too). Missing from val or test, the per-class figures of that split mean little:
        a warning."""
        for split, per_class in counts.items():
            if split == "train":
                check_class_counts({HEAD: per_class}, self.heads(), f"the train split of {where}", self.items_name)
                continue
            missing = [name for name, n in per_class.items() if n == 0]
            if not missing or not sum(per_class.values()):
                continue
            listed = f"videos per class: {describe_counts(per_class)}"
            warn_on_console(log, f"the {split} split of {where} has no {' or '.join(repr(m) for m in missing)} "
                                 f"videos ({listed}): its balanced accuracy and per-class accuracies mean little")

    # -- features ------------------------------------------------------------------------------
    def _cache_plan(self, root: Path) -> tuple[FeatureCache, list[CopyPlan], dict[Path, int]]:
        """The feature cache of the splits' videos: copy 0 holds every video, copies 1.. the augmented
        training videos (with ``data.dev_samples``, each training video in one copy: :meth:`_train_copies`)."""
        if self._cache is None:
            splits = {name: self.split(name) for name in SPLIT_NAMES}
            videos = sorted({it.path for items in splits.values() for it in items})
            index = {p: i for i, p in enumerate(videos)}
            copies = self._train_copies([index[it.path] for it in splits["train"]])
            held_out = {index[it.path] for name in ("val", "test") for it in splits[name]}
            plans = [CopyPlan(0, sorted(held_out | copies[0]), None)]
            plans += [CopyPlan(c, sorted(rows), self.augment) for c, rows in enumerate(copies) if c and rows]
            cache = FeatureCache(self.cache_dir, root, videos, self.num_frames, self.encoder, aug_seed=self.seed)
            self._cache = (cache, plans, index)
        return self._cache

    def _train_copies(self, train_rows: Sequence[int]) -> list[set[int]]:
        """Per copy, the training videos (rows of the video list) it holds. Every video in every copy; with
        ``data.dev_samples`` (debug modes) one copy per video, the clean one and the augmented ones in
        turn: the subset then costs one extracted sequence per video, and every copy is still exercised."""
        if not self.dev_samples:
            return [set(train_rows) for _ in range(self.aug_multiplier)]
        copies: list[set[int]] = [set() for _ in range(self.aug_multiplier)]
        for i, row in enumerate(train_rows):
            copies[i % self.aug_multiplier].add(row)
        return copies

    def _feature_entries(self) -> tuple[dict[int, MappedFeatures], dict[str, list[tuple[int, int, VideoItem]]]]:
        """The mapped copies and, per split, the ``(copy, row, video)`` entries whose features exist."""
        if self._features is not None:
            return self._features
        root = self.data_root()
        cache, plans, index = self._cache_plan(root)
        if not cache.ready(plans):
            raise DataError(f"the features of {root} are not extracted yet under {cache.folder}: call the "
                            "DataModule's prepare_data() before its datasets (train.py and Lightning do)")
        arrays = {c: MappedFeatures(p, self.release_every) for c, p in cache.paths(plans).items()}
        for arr in arrays.values():
            if arr.shape[2] != self.feature_dim:
                raise DataError(f"feature cache {arr.path} holds {arr.shape[2]}-d features, "
                                f"{self.encoder.config_key}.feature_dim is {self.feature_dim}")
        done = {p.copy: cache.done_rows(p) for p in plans}
        row_in_copy = {p.copy: {v: r for r, v in enumerate(p.rows)} for p in plans}
        # a video no copy could read (data.skip_bad_videos=true left it out)
        readable_rows = {v for c, rows in row_in_copy.items() for v, r in rows.items() if done[c][r]}
        unreadable = sorted(p for p, i in index.items() if i not in readable_rows)
        if unreadable:
            warn_on_console(log, f"leaving out {len(unreadable)} unreadable video(s) (data.skip_bad_videos=true): "
                                 + ", ".join(str(p) for p in unreadable[:5]))

        def entries(split: str, copies: Sequence[int]) -> list[tuple[int, int, VideoItem]]:
            out = []
            for c in copies:
                for it in self.split(split):
                    r = row_in_copy[c].get(index[it.path])  # None: not in this copy (debug modes)
                    if r is not None and done[c][r]:
                        out.append((c, r, it))
            return out

        per_split = {"train": entries("train", sorted(row_in_copy)), "val": entries("val", [0]),
                     "test": entries("test", [0])}
        for name, items in per_split.items():
            if not items:
                raise DataError(f"the {name} split has no readable videos")
        readable = {it.path: it for _, _, it in per_split["train"]}
        self._check_classes({"train": class_counts(list(readable.values()))}, f"{root} (readable videos)")
        self._features = (arrays, per_split)
        return self._features

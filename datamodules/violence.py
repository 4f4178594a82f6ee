"""Violence detection data (seed 001): videos -> cached per-frame features -> sequences.

Layouts read:
- ``root/<split>/<class>/*.mp4|avi`` with split folders train (required), val, test: a missing
  val is carved from train by a seeded group split, a missing test is the val split;
- ``root/<class>/*`` without split folders: a seeded split that keeps every group (the
  ``group_column`` of ``labels_csv``, e.g. ``source_group``) on one side; videos the CSV does not
  list are their own group.
Class folder names map to ``violent`` / ``non_violent`` through ``class_map``.

Features come from ``datamodules.feature_cache`` (float16 memory-mapped, under
``paths.cache_dir``). Training sees ``aug_multiplier`` copies of each training video: the clean
one plus ``aug_multiplier - 1`` augmented at extraction time (seed: 3x optimal, 10x failed), and
an online temporal jitter (a random window of ``clip_len`` of the ``num_frames`` cached frames).
Validation and test see the centre window, plus ``tta_crops`` windows spread over the video for
test-time augmentation.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import SuiteDataModule, existing_folder
from datamodules.feature_cache import AugmentSpec, CopyPlan, EncoderSpec, FeatureCache, MappedFeatures
from datamodules.synthetic import violence as synthetic
from datamodules.video import VIDEO_EXTENSIONS, tta_positions
from suite.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CLASS_NAMES = ("non_violent", "violent")  # index 0, 1
DEFAULT_CLASS_MAP = {
    "violent": ["violent", "violence", "fight", "fights", "Violence", "Fight"],
    "non_violent": ["non_violent", "nonviolent", "non_violence", "nonviolence", "NonViolence", "nofight",
                    "noFight", "no_fight", "normal"],
}
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


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
    """Video path -> group from a labels CSV (paths relative to ``root``)."""
    groups: dict[Path, str] = {}
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for col, key in ((path_column, "data.path_column"), (group_column, "data.group_column")):
            if col not in columns:
                raise DataError(f"{csv_path}: no column '{col}' ({key}); columns are {', '.join(columns)}")
        for line, row in enumerate(reader, start=2):
            rel = (row.get(path_column) or "").strip()
            group = (row.get(group_column) or "").strip()
            if not rel or not group:
                raise DataError(f"{csv_path}, row {line}: empty '{path_column}' or '{group_column}'")
            path = (root / rel).resolve()
            if not path.is_file():
                raise DataError(f"{csv_path}, row {line}: video not found: {root / rel}")
            groups[path] = group
    return groups


def group_split(items: Sequence[VideoItem], fractions: Mapping[str, float], seed: int,
                trials: int = 300) -> dict[str, list[VideoItem]]:
    """Seeded split keeping each group on one side, closest to ``fractions`` (e.g. {val: .2, test: .2};
    the rest is train) with both classes on every side when the groups allow it.

    Whole groups cannot hit a fraction exactly, so several seeded group orders are tried and the
    one with the smallest size and class-mix error (and every class present) wins; the same seed
    gives the same split.
    """
    by_group: dict[str, list[VideoItem]] = {}
    for item in items:
        by_group.setdefault(item.group, []).append(item)
    names = sorted(by_group)
    splits = [s for s in fractions if fractions[s] > 0]
    if len(names) < len(splits) + 1:
        raise DataError(f"need at least {len(splits) + 1} groups to split train/{'/'.join(splits)} without "
                        f"sharing a group, found {len(names)}")
    total = len(items)
    targets = {s: fractions[s] * total for s in splits}
    violent_share = sum(it.label for it in items) / max(1, total)
    rng = np.random.default_rng(seed)
    best: tuple[float, dict[str, list[str]]] | None = None
    for _ in range(trials):
        order = [names[i] for i in rng.permutation(len(names))]
        assign: dict[str, list[str]] = {s: [] for s in [*splits, "train"]}
        counts = dict.fromkeys(splits, 0)
        for name in order:
            open_splits = [s for s in splits if counts[s] < targets[s]]
            if open_splits:
                s = open_splits[0]
                assign[s].append(name)
                counts[s] += len(by_group[name])
            else:
                assign["train"].append(name)
        if any(not v for v in assign.values()):
            continue
        # size error plus class-mix error: a validation split of 19 calm clips and 1 fight says
        # little about the violent class
        score = 0.0
        for s in splits:
            violent = sum(it.label for g in assign[s] for it in by_group[g])
            score += abs(counts[s] - targets[s]) + abs(violent - counts[s] * violent_share)
        for groups in assign.values():
            labels = {it.label for g in groups for it in by_group[g]}
            score += 1000 * (len(CLASS_NAMES) - len(labels))
        if best is None or score < best[0]:
            best = (score, assign)
    if best is None:
        raise DataError("could not split the groups so that every split gets at least one group")
    return {s: [it for g in sorted(groups) for it in by_group[g]] for s, groups in best[1].items()}


class SequenceDataset(Dataset):
    """Items ``(array, row)`` of cached feature arrays; windows of ``clip_len`` frames.

    ``train``: one random window per read (temporal jitter). Otherwise the centre window plus
    ``tta_crops`` windows at evenly spread positions.
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
        out: dict[str, Any] = {"label": video.label, "video": self._name(video), "group": video.group}
        if self.train:
            start = int(torch.randint(0, room + 1, (1,)).item())
            out["features"] = seq_t[start:start + self.clip_len]
            return out
        out["features"] = seq_t[room // 2: room // 2 + self.clip_len]
        starts = [int(round(p * room)) for p in tta_positions(self.tta_crops)]
        out["tta"] = torch.stack([seq_t[s:s + self.clip_len] for s in starts])
        return out


class ViolenceDataModule(SuiteDataModule):
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
        backbone: str = "vgg16",
        pretrained: bool = False,
        backbone_weights: str | None = None,
        frame_size: int = 224,
        feature_dim: int = 4096,
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
        synthetic_backbone: str = "test_efficientnet",
        synthetic_frame_size: int = 32,
        dev_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"data.{key} must be in [0, 1), got {value}")
        if val_fraction <= 0:
            raise ConfigError("data.val_fraction must be > 0 (the best checkpoint is chosen on validation)")
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError(f"data.val_fraction + data.test_fraction must be < 1, got {val_fraction + test_fraction}")
        if num_frames < 1 or not 1 <= clip_len <= num_frames:
            raise ConfigError(f"need 1 <= data.clip_len ({clip_len}) <= data.num_frames ({num_frames})")
        if aug_multiplier < 1:
            raise ConfigError(f"data.aug_multiplier must be >= 1 (1 = clean copy only), got {aug_multiplier}")
        self.root = root
        self.labels_csv, self.path_column, self.group_column = labels_csv, path_column, group_column
        self.mapping = folder_to_label(class_map or DEFAULT_CLASS_MAP)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.num_frames, self.clip_len, self.tta_crops = num_frames, clip_len, tta_crops
        self.backbone, self.pretrained, self.backbone_weights = backbone, pretrained, backbone_weights
        self.frame_size, self.feature_dim = frame_size, feature_dim
        self.aug_multiplier = aug_multiplier
        self.augment = AugmentSpec(aug_brightness, aug_rotate_deg, aug_noise_std)
        self.cache_dir = cache_dir
        self.extract_device, self.extract_batch_frames = extract_device, extract_batch_frames
        self.decode_threads, self.skip_bad_videos = decode_threads, skip_bad_videos
        self.release_every = release_every
        self.synthetic_dir = synthetic_dir
        self.synthetic_videos = dict(synthetic_videos or {"train": 24, "val": 10, "test": 10})
        self.synthetic_violent_fraction = synthetic_violent_fraction
        self.synthetic_backbone, self.synthetic_frame_size = synthetic_backbone, synthetic_frame_size
        self.dev_samples = dev_samples
        self.seed = seed
        self.splits: dict[str, list[VideoItem]] = {}
        self.datasets: dict[str, SequenceDataset] = {}
        self.extraction: Any = None

    # -- data location -------------------------------------------------------------------
    def data_root(self) -> Path:
        if self.root:
            return existing_folder(self.root)
        return synthetic.default_dir(self.synthetic_dir, self.synthetic_videos, self.synthetic_violent_fraction,
                                     "split", self.seed).resolve()

    def encoder_spec(self) -> EncoderSpec:
        if self.root:
            return EncoderSpec(self.backbone, self.pretrained, self.backbone_weights, self.frame_size,
                               self.feature_dim)
        # Synthetic default: a tiny random backbone whose head outputs feature_dim values, so the preset
        # networks keep the seed's input size while extraction takes seconds on a CPU.
        return EncoderSpec(self.synthetic_backbone, False, None, self.synthetic_frame_size, self.feature_dim,
                           head_as_projection=True)

    def prepare_data(self) -> None:
        if not self.root:
            synthetic.generate(self.data_root(), self.synthetic_videos, self.synthetic_violent_fraction,
                               seed=self.seed)

    # -- splits --------------------------------------------------------------------------
    def _split_dirs(self, root: Path) -> dict[str, Path]:
        found = {}
        for split, names in SPLIT_NAMES.items():
            for name in names:
                if (root / name).is_dir():
                    found[split] = root / name
                    break
        return found

    def _items(self, folder: Path, root: Path) -> list[VideoItem]:
        videos = list_class_videos(folder, self.mapping)
        groups: dict[Path, str] = {}
        csv_path = root / self.labels_csv if self.labels_csv else None
        if csv_path is not None and csv_path.is_file():
            groups = read_groups(csv_path, root, self.path_column, self.group_column)
            if (str(csv_path), len(groups)) not in self.sources:
                self.sources.append((str(csv_path), len(groups)))
        return [VideoItem(p.resolve(), label, groups.get(p.resolve(), f"video:{p.relative_to(root)}"))
                for p, label in videos]

    def _split(self, root: Path) -> dict[str, list[VideoItem]]:
        self.sources = []
        dirs = self._split_dirs(root)
        if dirs:
            if "train" not in dirs:
                raise DataError(f"{root} has split folders ({', '.join(p.name for p in dirs.values())}) but no "
                                "train folder")
            splits = {name: self._items(folder, root) for name, folder in dirs.items()}
            for name, folder in dirs.items():
                self.sources.append((str(folder), len(splits[name])))
            if "val" not in splits:
                carved = group_split(splits["train"], {"val": self.val_fraction}, self.seed)
                splits["train"], splits["val"] = carved["train"], carved["val"]
            if "test" not in splits:
                log.warning("no test folder in %s: the evaluated split is the validation split", root)
                splits["test"] = splits["val"]
        else:
            items = self._items(root, root)
            self.sources.insert(0, (str(root), len(items)))
            splits = group_split(items, {"val": self.val_fraction, "test": self.test_fraction}, self.seed)
            if "test" not in splits:
                splits["test"] = splits["val"]
        if self.dev_samples:
            order = np.random.default_rng(self.seed).permutation(len(splits["train"]))
            splits["train"] = [splits["train"][i] for i in sorted(order[: self.dev_samples])]
        for name, items in splits.items():
            if not items:
                raise DataError(f"the {name} split of {root} is empty")
        return splits

    # -- features ------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        root = self.data_root()
        self.splits = self._split(root)
        videos = sorted({it.path for items in self.splits.values() for it in items})
        index = {p: i for i, p in enumerate(videos)}
        train_rows = sorted({index[it.path] for it in self.splits["train"]})
        plans = [CopyPlan(0, list(range(len(videos))), None)]
        plans += [CopyPlan(c, train_rows, self.augment) for c in range(1, self.aug_multiplier)]
        cache = FeatureCache(self.cache_dir, root, videos, self.num_frames, self.encoder_spec(), aug_seed=self.seed)
        report = cache.ensure(plans, device=self.extract_device, batch_frames=self.extract_batch_frames,
                              decode_threads=self.decode_threads, skip_bad_videos=self.skip_bad_videos)
        self.extraction = report
        if report.skipped:
            print(f"features: cache hit for {len(plans)} cop{'y' if len(plans) == 1 else 'ies'} under "
                  f"{cache.cache_root / 'violence'} ({report.seconds:.2f} s, extraction skipped)")
        else:
            print(f"features: extracted {report.sequences_written} sequences from {report.videos_decoded} videos in "
                  f"{report.seconds:.1f} s ({report.videos_decoded / max(report.seconds, 1e-9):.2f} videos/s)")
        paths = cache.paths(plans)
        arrays = {c: MappedFeatures(p, self.release_every) for c, p in paths.items()}
        for arr in arrays.values():
            if arr.shape[2] != self.feature_dim:
                raise DataError(f"feature cache {arr.path} holds {arr.shape[2]}-d features, data.feature_dim is "
                                f"{self.feature_dim}")
        done = {p.copy: cache.done_rows(p) for p in plans}
        bad = {videos[i] for i in range(len(videos)) if not done[0][i]}
        if bad:
            log.warning("leaving out %d unreadable video(s): %s", len(bad), ", ".join(str(p) for p in sorted(bad)[:5]))
        for c, p in paths.items():
            self.sources.append((str(p), len(arrays[c])))
        row_in_copy = {p.copy: {v: r for r, v in enumerate(p.rows)} for p in plans}

        def entries(items: list[VideoItem], copies: range) -> list[tuple[int, int, VideoItem]]:
            out = []
            for c in copies:
                for it in items:
                    r = row_in_copy[c][index[it.path]]
                    if done[c][r]:
                        out.append((c, r, it))
            return out

        train_entries = entries(self.splits["train"], range(self.aug_multiplier))
        self.datasets = {
            "train": SequenceDataset(arrays, train_entries, self.clip_len, train=True, root=root),
            "val": SequenceDataset(arrays, entries(self.splits["val"], range(1)), self.clip_len, train=False,
                                   tta_crops=self.tta_crops, root=root),
            "test": SequenceDataset(arrays, entries(self.splits["test"], range(1)), self.clip_len, train=False,
                                    tta_crops=self.tta_crops, root=root),
        }
        for name, ds in self.datasets.items():
            if len(ds) == 0:
                raise DataError(f"the {name} split has no readable videos")
        counts = {name: np.bincount([it.label for it in items], minlength=2).tolist()
                  for name, items in self.splits.items()}
        print("videos per split (non_violent, violent): "
              + ", ".join(f"{k} {v}" for k, v in counts.items())
              + f"; training sequences {len(train_entries)} ({self.aug_multiplier}x)")

    def label_map(self) -> dict[str, Any]:
        folders = {name: CLASS_NAMES[label] for name, label in sorted(self.mapping.items())}
        return {"class": {name: i for i, name in enumerate(CLASS_NAMES)}, "folders": folders}

    def train_dataloader(self):
        train = self.datasets["train"]
        return self.make_loader(train, shuffle=True, drop_last=len(train) > self.batch_size)

    def val_dataloader(self):
        return self.make_loader(self.datasets["val"])

    def test_dataloader(self):
        return self.make_loader(self.datasets["test"])

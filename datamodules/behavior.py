"""Event clips from videos for the behavior task (seed 003, cross-sucking).

Manifests are CSVs with ``video_path,video_id,start_s,end_s,label`` (+ optional ``event_id``):
one per split (``train_manifest``/``val_manifest``/``test_manifest``), or one ``manifest`` with a
``split`` column (train/val/test). Relative video paths are resolved against ``video_root`` or
else the manifest's folder. With no manifest at all the synthetic dataset is generated and the
split named by ``split`` (old | intravideo | boosted) is used, with its held-out-camera test set.

Training takes one random clip per event; validation and test take ``clips_per_event`` clips
spread over the event, decoded in one pass (TTA), and the module aggregates their probabilities.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from datamodules.base import SuiteDataModule, existing_folder
from datamodules.splits import REQUIRED_COLUMNS, add_event_ids
from datamodules.video import (
    DecodeStats,
    VideoInfo,
    clip_indices,
    event_frame_range,
    probe_video,
    read_clips,
    stride_for_fps,
    tta_positions,
)
from suite.errors import ConfigError, DataError
from suite.paths import confined_path

log = logging.getLogger(__name__)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
SYNTHETIC_SPLITS = ("old", "intravideo", "boosted")


@dataclass(frozen=True)
class Event:
    event_id: str
    video_id: str
    path: Path
    label: int
    start: int  # first frame of the event
    end: int  # one past its last frame
    stride: int


def _row_ref(manifest: str, row: int) -> str:
    # +2: the header is line 1 and rows count from 0, so this is the line a user sees in an editor
    return f"{manifest}, line {row + 2}"


def read_manifest(path: str | Path, class_names: list[str]) -> pd.DataFrame:
    """A manifest with its columns, labels and times checked; labels become class indices in ``label_idx``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    try:
        df = pd.read_csv(path, dtype={"video_id": str, "label": str, "video_path": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read manifest {path}: {err}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"manifest {path} lacks column(s) {missing}; it has {list(df.columns)} "
                        f"(required: {list(REQUIRED_COLUMNS)})")
    lookup = {name: i for i, name in enumerate(class_names)}
    lookup.update({str(i): i for i in range(len(class_names))})
    labels = []
    for i, value in enumerate(df["label"].astype(str).str.strip()):
        if value not in lookup:
            raise DataError(f"{_row_ref(str(path), i)}: unknown label '{value}' (known: {class_names} or 0..."
                            f"{len(class_names) - 1}; set data.class_names to your labels)")
        labels.append(lookup[value])
    df["label_idx"] = labels
    for column in ("start_s", "end_s"):
        values = pd.to_numeric(df[column], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if len(bad):
            value = df[column].iloc[bad[0]]
            raise DataError(f"{_row_ref(str(path), int(bad[0]))}: {column} is not a number ('{value}')")
        df[column] = values.astype(float)
    for i, (s, e) in enumerate(zip(df["start_s"], df["end_s"], strict=True)):
        if s < 0 or e <= s:
            raise DataError(f"{_row_ref(str(path), i)}: end_s ({e}) must be after start_s ({s}) and start_s >= 0")
    for column in ("video_path", "video_id"):
        empty = np.flatnonzero(df[column].isna().to_numpy())
        if len(empty):
            raise DataError(f"{_row_ref(str(path), int(empty[0]))}: empty {column}")
    return add_event_ids(df)


class ClipDataset(Dataset):
    """One item per event: a random training clip ``[T, 3, H, W]`` or the TTA clips ``[K, T, 3, H, W]``."""

    def __init__(
        self, events: list[Event], frames_per_clip: int, image_size: int, clips_per_event: int | None,
        augment: bool, stats: DecodeStats | None = None,
    ):
        self.events = events
        self.frames_per_clip = frames_per_clip
        self.size = (image_size, image_size)
        self.clips_per_event = clips_per_event
        self.augment = augment
        self.stats = stats
        self._augment_fn = None

    def __len__(self) -> int:
        return len(self.events)

    def labels(self) -> list[int]:
        return [e.label for e in self.events]

    def _augmenter(self):  # noqa: ANN202
        if self._augment_fn is None:
            from torchvision.transforms import TrivialAugmentWide

            # TrivialAugment draws one op and one magnitude per call: called on the stacked clip it
            # applies the same parameters to every frame, so motion is not corrupted by flicker.
            self._augment_fn = TrivialAugmentWide()
        return self._augment_fn

    def __getitem__(self, index: int) -> dict[str, Any]:
        event = self.events[index]
        if self.clips_per_event is None:
            position = float(torch.rand(()).item())
            clips = [clip_indices(event.start, event.end, self.frames_per_clip, event.stride, position)]
        else:
            clips = [clip_indices(event.start, event.end, self.frames_per_clip, event.stride, p)
                     for p in tta_positions(self.clips_per_event)]
        arrays = read_clips(event.path, clips, size=self.size, stats=self.stats)
        video = torch.from_numpy(np.stack(arrays)).permute(0, 1, 4, 2, 3)  # [K, T, 3, H, W] uint8
        if self.augment:
            video = self._augmenter()(video[0])[None]
            if torch.rand(()) < 0.5:
                video = video.flip(-1)
        video = (video.float() / 255.0 - MEAN) / STD
        item = {"label": event.label, "event_id": event.event_id, "video_id": event.video_id}
        item["video"] = video[0] if self.clips_per_event is None else video
        return item


class BehaviorDataModule(SuiteDataModule):
    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        manifest: str | None = None,
        manifest_dir: str | None = None,
        video_root: str | None = None,
        allow_outside_root: bool = False,
        split: str = "intravideo",
        synthetic_dir: str = "data/synthetic",
        synthetic: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        tail_class: str = "tail",
        frames_per_clip: int = 8,
        target_fps: float | None = None,
        image_size: int = 64,
        clips_per_event: int = 5,
        balanced_sampling: bool = True,
        augment: bool = True,
        skip_bad_videos: bool = False,
        dev_samples: int | None = None,
        seed: int = 42,
        batch_size: int = 4,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.class_names = list(class_names or ["normal", "tail"])
        if len(self.class_names) != 2 or tail_class not in self.class_names:
            raise ConfigError(f"data.class_names must be two names including data.tail_class='{tail_class}' "
                              f"(got {self.class_names})")
        if self.class_names.index(tail_class) != 1:
            self.class_names.reverse()  # the tail class is index 1: the positive class of every metric
        if split not in SYNTHETIC_SPLITS:
            raise ConfigError(f"data.split must be one of {SYNTHETIC_SPLITS}, got '{split}'")
        if clips_per_event < 1 or frames_per_clip < 1:
            raise ConfigError("data.clips_per_event and data.frames_per_clip must be >= 1")
        self.manifests = {"train": train_manifest, "val": val_manifest, "test": test_manifest}
        self.manifest = manifest
        self.manifest_dir = manifest_dir
        self.video_root = video_root
        self.allow_outside_root = allow_outside_root
        self.split = split
        self.synthetic_dir = synthetic_dir
        self.synthetic = dict(synthetic or {})
        self.tail_class = tail_class
        self.frames_per_clip = frames_per_clip
        self.target_fps = target_fps
        self.image_size = image_size
        self.clips_per_event = clips_per_event
        self.balanced_sampling = balanced_sampling
        self.augment = augment
        self.skip_bad_videos = skip_bad_videos
        self.dev_samples = dev_samples
        self.seed = seed
        self.events: dict[str, list[Event]] = {}
        self.skipped: list[str] = []
        self.stats = DecodeStats()
        self._ready = False

    def label_map(self) -> dict[str, Any]:
        return {"classes": {name: i for i, name in enumerate(self.class_names)}, "tail_class": self.tail_class}

    # -- reading -------------------------------------------------------------------------------------------
    def _manifest_paths(self) -> dict[str, Path]:
        if self.manifest is not None:
            return {"all": Path(self.manifest)}
        given = {k: v for k, v in self.manifests.items() if v}
        if given:
            missing = [k for k in ("train", "val", "test") if k not in given]
            if missing:
                raise ConfigError(f"data.{missing[0]}_manifest is not set (give all three, or data.manifest "
                                  "with a split column)")
            return {k: Path(v) for k, v in given.items()}
        if self.manifest_dir is not None:
            return self._split_files(Path(self.manifest_dir))
        from datamodules.synthetic.behavior import ensure_behavior_dataset

        return self._split_files(ensure_behavior_dataset(self.synthetic_dir, **self.synthetic))

    def _split_files(self, root: Path) -> dict[str, Path]:
        """``train_<split>[_<stamp>].csv``, ``val_...`` and ``test[_<stamp>].csv`` in a folder (newest stamp)."""
        root = existing_folder(root, "data.manifest_dir")
        out = {}
        for kind, stem in (("train", f"train_{self.split}"), ("val", f"val_{self.split}"), ("test", "test")):
            found = sorted(root.glob(f"{stem}.csv")) + sorted(root.glob(f"{stem}_[0-9]*.csv"))
            if not found:
                have = sorted(p.name for p in root.glob("*.csv"))
                raise DataError(f"data.manifest_dir={root}: no {stem}.csv or {stem}_<timestamp>.csv for "
                                f"data.split={self.split} (CSV files there: {have})")
            out[kind] = found[-1]
        return out

    def _frames(self, paths: dict[str, Path]) -> dict[str, pd.DataFrame]:
        if "all" not in paths:
            return {k: read_manifest(p, self.class_names).assign(manifest_file=str(p)) for k, p in paths.items()}
        df = read_manifest(paths["all"], self.class_names).assign(manifest_file=str(paths["all"]))
        if "split" not in df.columns:
            raise DataError(f"manifest {paths['all']} has no 'split' column (train/val/test); add one or give "
                            "data.train_manifest/val_manifest/test_manifest")
        bad = sorted(set(df["split"].astype(str)) - {"train", "val", "test"})
        if bad:
            raise DataError(f"manifest {paths['all']}: unknown split value(s) {bad} (use train/val/test)")
        return {k: df[df["split"].astype(str) == k] for k in ("train", "val", "test")}

    def _resolve(self, manifest: str, video_path: str, where: str) -> Path:
        """With ``video_root`` every path must lie under it; without, relative paths may not climb out of
        the manifest's folder (absolute paths, as tools.make_splits writes them, are taken as given)."""
        p = Path(video_path).expanduser()
        if self.video_root:
            return confined_path(self.video_root, p, self.allow_outside_root, where)
        if p.is_absolute():
            return p
        return confined_path(Path(manifest).parent, p, self.allow_outside_root, where)

    def _to_events(self, split: str, df: pd.DataFrame, infos: dict[Path, VideoInfo | DataError]) -> list[Event]:
        events = []
        for i, row in enumerate(df.itertuples(index=False)):
            where = f"{_row_ref(row.manifest_file, int(df.index[i]))} (event {row.event_id})"
            path = self._resolve(row.manifest_file, row.video_path, where)
            if path not in infos:
                try:
                    infos[path] = probe_video(path)
                except DataError as err:
                    infos[path] = err
            info = infos[path]
            problem = None
            if isinstance(info, DataError):
                problem = str(info)
            elif row.start_s >= info.duration_s:
                problem = f"event starts at {row.start_s:g} s but {path} lasts {info.duration_s:.2f} s"
            if problem is not None:
                if not self.skip_bad_videos:
                    raise DataError(f"{where}: {problem}. Fix the row, or set data.skip_bad_videos=true to skip it.")
                self.skipped.append(f"{split}: {where}: {problem}")
                continue
            start, end = event_frame_range(info, row.start_s, row.end_s)
            events.append(Event(str(row.event_id), str(row.video_id), path, int(row.label_idx), start, end,
                                stride_for_fps(info.fps, self.target_fps)))
        return events

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        paths = self._manifest_paths()
        frames = self._frames(paths)
        infos: dict[Path, VideoInfo | DataError] = {}
        for split in ("train", "val", "test"):
            df = frames[split].reset_index(drop=True) if "all" not in paths else frames[split]
            source = str(paths.get(split, paths.get("all")))
            if len(df) == 0:
                raise DataError(f"the {split} split is empty ({source}): every split needs at least one event")
            self.events[split] = self._to_events(split, df, infos)
            if not self.events[split]:
                raise DataError(f"the {split} split has no readable events left after skipping bad videos ({source})")
            self.sources.append((f"{split}: {source}", len(df)))
        if self.skipped:
            listing = "\n  ".join(self.skipped)
            message = (f"skipped {len(self.skipped)} event(s) with unreadable videos "
                       f"(data.skip_bad_videos=true):\n  {listing}")
            warnings.warn(message, stacklevel=1)
            log.warning(message)
        if not any(e.label == 1 for e in self.events["train"]):
            raise DataError(f"the train split has no '{self.tail_class}' events: "
                            "the classifier cannot learn the tail class")
        if self.dev_samples is not None:
            self.events["train"] = self.events["train"][: self.dev_samples]
        self._ready = True

    # -- loaders -------------------------------------------------------------------------------------------
    def dataset(self, split: str, augment: bool | None = None) -> ClipDataset:
        training = split == "train"
        return ClipDataset(self.events[split], self.frames_per_clip, self.image_size,
                           None if training else self.clips_per_event,
                           self.augment if augment is None else augment, self.stats)

    def train_dataloader(self):  # noqa: ANN201
        ds = self.dataset("train", augment=self.augment)
        sampler = None
        if self.balanced_sampling:
            labels = torch.tensor(ds.labels())
            counts = torch.bincount(labels, minlength=2).clamp(min=1).float()
            weights = (1.0 / counts)[labels]
            generator = torch.Generator().manual_seed(self.seed)
            sampler = WeightedRandomSampler(weights.double(), num_samples=len(ds), replacement=True,
                                            generator=generator)
        return self.make_loader(ds, shuffle=True, sampler=sampler, drop_last=len(ds) > self.batch_size)

    def val_dataloader(self):  # noqa: ANN201
        return self.make_loader(self.dataset("val", augment=False))

    def test_dataloader(self):  # noqa: ANN201
        return self.make_loader(self.dataset("test", augment=False))

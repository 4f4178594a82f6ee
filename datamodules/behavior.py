"""Event clips from videos for the behavior task (seed 003, cross-sucking).

``data.root`` is a folder of manifests: CSVs with ``video_path,video_id,start_s,end_s,label`` (+
optional ``event_id``; other columns are kept). In that folder, first match wins:

1. ``train_<split>[_<stamp>].csv``, ``val_<split>[_<stamp>].csv`` and ``test[_<stamp>].csv`` as
   ``tools.make_splits`` writes them (``data.split`` = old | intravideo | boosted picks the pair,
   newest stamp first), or plain ``train.csv``, ``val.csv`` and ``test.csv``: the splits as given;
2. one events table, ``manifest.csv`` or ``events.csv``: with a ``split`` column (train/val/test)
   its rows are the splits; without one, the test set is ``test.csv`` when present, otherwise whole
   ``data.test_by`` groups (videos) held out, and train/val are built from the rest with the
   strategy ``data.split`` (``datamodules/splits.py``).

``data.train_manifest``/``val_manifest``/``test_manifest`` (all three) or ``data.manifest`` (one
table) name the files explicitly instead. A test set alone, ``data.test_manifest`` without the other
two or a ``data.root`` holding only ``test[_<stamp>].csv``, is read as the test split only: evaluating a
trained run on new labelled events needs no train or val data. Relative video paths are resolved against
``video_root``, else the manifest's folder. With no data at all the synthetic camera dataset
(``datamodules/synthetic/behavior.py``, the same layout: ``events.csv`` + held-out-camera
``test.csv``) is generated. The test split is never used to select the checkpoint.

Training takes one random clip per event; validation and test take ``clips_per_event`` clips
spread over the event, decoded in one pass (TTA), and the module aggregates their probabilities.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from datamodules.base import SPLITS, SuiteDataModule, file_digest
from datamodules.manifests import normalize_id, read_table
from datamodules.splits import REQUIRED_COLUMNS, STRATEGIES, add_event_ids, build_split, hold_out_videos
from datamodules.synthetic.behavior import GENERATOR
from datamodules.synthetic.common import SyntheticDataset
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
from suite.backbones import IMAGENET_MEAN, IMAGENET_STD
from suite.contracts import Head, InputSpec
from suite.errors import ConfigError, DataError
from suite.paths import confined_path

log = logging.getLogger(__name__)

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
#: one events table in data.root, by the names looked for (first found)
EVENT_TABLES = ("manifest.csv", "events.csv")
# Real videos get the input the frame backbone was pretrained at (ImageNet, 224 px) and 16-frame
# clips, the usual clip length of video classifiers; the seed names neither. The synthetic set
# keeps its own small scale (data.synthetic.size, data.synthetic_frames_per_clip) so runs stay fast.
REAL_IMAGE_SIZE = 224
REAL_FRAMES_PER_CLIP = 16


def _deprecated(message: str) -> None:
    warnings.warn(message, FutureWarning, stacklevel=3)
    log.warning(message)


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
    """A manifest with its columns, labels and times checked; labels become class indices in ``label_idx``
    and ``manifest_file``/``manifest_row`` say where each row came from (for error messages)."""
    path = Path(path)
    table = read_table(path, "manifest")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.header]
    if missing:
        raise DataError(f"manifest {path} lacks column(s) {missing}; it has {table.header} "
                        f"(required: {list(REQUIRED_COLUMNS)})")
    # every cell as the text written (ids stay ids: '007' is not 7), ids that pandas wrote as floats normalised
    df = pd.DataFrame(table.rows, columns=table.header)
    for column in ("video_id", "label"):
        df[column] = [normalize_id(v) for v in df[column]]
    for column in ("video_path", "video_id", "event_id"):
        if column in df.columns:
            empty = np.flatnonzero((df[column] == "").to_numpy())
            if len(empty):
                raise DataError(f"{table.where(int(empty[0]))}: empty {column}")
    lookup = {name: i for i, name in enumerate(class_names)}
    lookup.update({str(i): i for i in range(len(class_names))})
    labels = []
    for i, value in enumerate(df["label"].astype(str).str.strip()):
        if value not in lookup:
            raise DataError(f"{table.where(i)}: unknown label '{value}' (known: {class_names} or 0..."
                            f"{len(class_names) - 1}; set data.class_names to your labels)")
        labels.append(lookup[value])
    df["label_idx"] = labels
    for column in ("start_s", "end_s"):
        values = pd.to_numeric(df[column], errors="coerce")
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)))  # empty, text, inf
        if len(bad):
            value = df[column].iloc[bad[0]]
            raise DataError(f"{table.where(int(bad[0]))}: {column} is not a finite number ('{value}')")
        df[column] = values.astype(float)
    for i, (s, e) in enumerate(zip(df["start_s"], df["end_s"], strict=True)):
        if s < 0 or e <= s:
            raise DataError(f"{table.where(i)}: end_s ({e}) must be after start_s ({s}) and start_s >= 0")
    # manifest_row: the row's index, which _row_ref turns into its line (blank lines are not rows)
    return add_event_ids(df).assign(manifest_file=str(path), manifest_row=[line - 2 for line in table.lines])


def newest_csv(root: Path, stem: str) -> Path | None:
    """``root/<stem>.csv`` or the newest ``root/<stem>_<stamp>.csv`` (stamps sort by time)."""
    found = sorted(root.glob(f"{stem}.csv")) + sorted(root.glob(f"{stem}_[0-9]*.csv"))
    return found[-1] if found else None


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
    """Events of long videos as TTA clips; the tail class is index 1 (the positive class of every metric)."""

    task = "behavior"
    items_name = "events"

    def __init__(
        self,
        root: str | None = None,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        manifest: str | None = None,
        manifest_dir: str | None = None,
        video_root: str | None = None,
        allow_outside_root: bool = False,
        split: str = "intravideo",
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        test_by: str = "video_id",
        boost_share: float = 0.3,
        synthetic_dir: str = "data/synthetic",
        synthetic: dict[str, Any] | None = None,
        synthetic_frames_per_clip: int = 8,
        class_names: list[str] | None = None,
        tail_class: str = "tail",
        frames_per_clip: int | None = None,
        target_fps: float | None = None,
        image_size: int | None = None,
        clips_per_event: int = 5,
        balanced_sampling: bool = True,
        augment: bool = True,
        skip_bad_videos: bool = False,
        dev_samples: int | None = None,
        seed: int = 42,
        batch_size: int = 4,
        num_workers: int | str = 0,
        pin_memory: bool | str = False,
        allow_overlap: bool = False,
    ):
        synthetic_params = dict(synthetic or {})
        val_fraction, boost_share = self._moved_synthetic_keys(synthetic_params, val_fraction, boost_share)
        root = self._root_from(root, manifest_dir, {"train_manifest": train_manifest, "val_manifest": val_manifest,
                                                    "test_manifest": test_manifest, "manifest": manifest})
        super().__init__(root=root, synthetic_dir=synthetic_dir, dev_samples=dev_samples, seed=seed,
                         batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         allow_overlap=allow_overlap)
        self.class_names = [str(c) for c in (class_names or ["normal", "tail"])]
        if len(self.class_names) != 2 or tail_class not in self.class_names:
            raise ConfigError(f"data.class_names must be two names including data.tail_class='{tail_class}' "
                              f"(got {self.class_names})")
        if self.class_names.index(tail_class) != 1:
            self.class_names.reverse()  # the tail class is index 1: the positive class of every metric
        if split not in STRATEGIES:
            raise ConfigError(f"data.split must be one of {STRATEGIES}, got '{split}'")
        for key, value in (("clips_per_event", clips_per_event), ("frames_per_clip", frames_per_clip),
                           ("image_size", image_size), ("synthetic_frames_per_clip", synthetic_frames_per_clip)):
            if value is not None and value < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {value}")
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction),
                           ("boost_share", boost_share)):
            if not 0.0 < value < 1.0:
                raise ConfigError(f"data.{key} must be in (0, 1), got {value}")
        GENERATOR.params(seed, **synthetic_params)  # unknown data.synthetic keys fail here, not after training
        self.manifests = {"train": train_manifest, "val": val_manifest, "test": test_manifest}
        self.manifest = manifest
        self.video_root = video_root
        self.allow_outside_root = allow_outside_root
        # ``split`` is the base's split accessor: the strategy keeps its config name as data.split
        self.strategy = split
        self.val_fraction, self.test_fraction, self.boost_share = val_fraction, test_fraction, boost_share
        self.test_by = test_by
        self.synthetic_params = synthetic_params
        self.synthetic_frames_per_clip = synthetic_frames_per_clip
        self.tail_class = tail_class
        self.frames_per_clip_cfg = frames_per_clip
        self.image_size_cfg = image_size
        self.target_fps = target_fps
        self.clips_per_event = clips_per_event
        self.balanced_sampling = balanced_sampling
        self.augment = augment
        self.skip_bad_videos = skip_bad_videos
        self.skipped: list[str] = []
        self.event_s: float | None = None
        self.stats = DecodeStats()

    # -- former config keys ----------------------------------------------------------------------------------
    @staticmethod
    def _moved_synthetic_keys(params: dict[str, Any], val_fraction: float, boost_share: float) -> tuple[float, float]:
        """``data.synthetic.{val_fraction, boost_share, seed}`` of earlier configs: the splits are built by the
        DataModule now, for any events table, and the synthetic videos follow ``data.seed``."""
        if "val_fraction" in params:
            val_fraction = float(params.pop("val_fraction"))
            _deprecated("data.synthetic.val_fraction is deprecated: use data.val_fraction (applied)")
        if "boost_share" in params:
            boost_share = float(params.pop("boost_share"))
            _deprecated("data.synthetic.boost_share is deprecated: use data.boost_share (applied)")
        if "seed" in params:
            params.pop("seed")
            _deprecated("data.synthetic.seed is deprecated and ignored: the synthetic videos are generated with "
                        "data.seed (the run's seed)")
        return val_fraction, boost_share

    @staticmethod
    def _root_from(root: str | None, manifest_dir: str | None, explicit: dict[str, str | None]) -> str | None:
        if manifest_dir is not None:
            _deprecated("data.manifest_dir is deprecated: use data.root (the folder of manifests)")
            if root is not None and os.path.realpath(os.path.expanduser(root)) != os.path.realpath(
                    os.path.expanduser(manifest_dir)):
                raise ConfigError(f"data.root={root} and data.manifest_dir={manifest_dir} name two folders: "
                                  "give data.root only")
            root = root or manifest_dir
        given = {key: value for key, value in explicit.items() if value}
        if root is None and given:
            # Explicit manifests are the user's data: their folder is the root, no synthetic set is made.
            key, value = next(iter(given.items()))
            path = Path(os.path.expanduser(value))
            if not path.is_file():
                raise DataError(f"data.{key}: manifest not found: {path.resolve()}")
            root = str(path.resolve().parent)
        return root

    # -- sizes -----------------------------------------------------------------------------------------------
    @property
    def is_synthetic(self) -> bool:
        return not self.root

    @property
    def image_size(self) -> int:
        """The configured size; unset: the synthetic videos' size, or the backbone's 224 px on real videos."""
        if self.image_size_cfg:
            return int(self.image_size_cfg)
        if self.is_synthetic:
            return int({**GENERATOR.defaults, **self.synthetic_params}["size"])
        return REAL_IMAGE_SIZE

    @property
    def frames_per_clip(self) -> int:
        """The configured length; unset: ``synthetic_frames_per_clip`` on the synthetic set, 16 on real videos."""
        if self.frames_per_clip_cfg:
            return int(self.frames_per_clip_cfg)
        return self.synthetic_frames_per_clip if self.is_synthetic else REAL_FRAMES_PER_CLIP

    # -- contract hooks --------------------------------------------------------------------------------------
    def synthetic(self) -> tuple[SyntheticDataset, dict[str, Any]]:
        return GENERATOR, dict(self.synthetic_params)

    def build_splits(self, root: Path) -> dict[str, list[Event]]:
        tables = self._split_tables(root)
        infos: dict[Path, VideoInfo | DataError] = {}
        self.skipped, self.sources = [], []
        splits: dict[str, list[Event]] = {}
        self.event_s = None
        for split in SPLITS:
            if split not in tables:
                continue  # a test set alone (evaluation on new data): no train or val to read
            df, source = tables[split]
            if split == "train" or self.event_s is None:
                # the typical event length: a predictor slides windows of it over long videos
                self.event_s = round(float((df["end_s"] - df["start_s"]).median()), 3) if len(df) else None
            if len(df) == 0:
                raise DataError(f"the {split} split is empty ({source}): every split needs at least one event")
            events = self._to_events(split, df, infos)
            if not events:
                raise DataError(f"the {split} split has no readable events left after skipping bad videos ({source})")
            # shuffled (seeded) so that a data.dev_samples subset keeps several videos and both classes
            order = np.random.default_rng(self.seed).permutation(len(events))
            splits[split] = [events[i] for i in order]
            self.sources.append((f"{split}: {source}", len(df)))
        if self.skipped:
            listing = "\n  ".join(self.skipped)
            message = (f"skipped {len(self.skipped)} event(s) with unreadable videos "
                       f"(data.skip_bad_videos=true):\n  {listing}")
            warnings.warn(message, stacklevel=1)
            log.warning(message)
        # a train split without the tail class is refused by the base's class check (item_labels)
        return splits

    def item_id(self, item: Event) -> str:
        return item.event_id

    def group_id(self, item: Event) -> str:
        return item.video_id

    def content_id(self, item: Event) -> str | None:
        # an event is its video's bytes and its frames; the boosted split's oversampled copies (#dupN) are
        # duplicates on purpose
        return None if "#dup" in item.event_id else f"{file_digest(item.path)}@{item.start}-{item.end}"

    def item_labels(self, item: Event) -> dict[str, str | None]:
        return {"label": self.class_names[item.label]}

    def groups_shared_by_design(self) -> tuple[tuple[str, str], ...]:
        # seed 003's intra-video (and boosted) split puts events of one video in train and val on purpose;
        # the test split never shares a video
        return (("train", "val"),) if self.strategy in ("intravideo", "boosted") else ()

    def heads(self) -> tuple[Head, ...]:
        return (Head("label", tuple(self.class_names), positive=1),)

    def input_spec(self) -> InputSpec:
        return InputSpec("clip", (self.frames_per_clip, 3, self.image_size, self.image_size), IMAGENET_MEAN,
                         IMAGENET_STD)

    def spec_extras(self) -> dict[str, Any]:
        # "classes" keeps label_map.json readable by scripts written for its earlier layout
        # event_s and target_fps: how a predictor cuts new videos into windows like the training events
        return {"classes": {name: i for i, name in enumerate(self.class_names)}, "tail_class": self.tail_class,
                "clips_per_event": self.clips_per_event, "skipped_events": len(self.skipped),
                "event_s": self.event_s, "target_fps": self.target_fps}

    # -- reading ---------------------------------------------------------------------------------------------
    def _given(self, key: str, value: str, root: Path) -> Path:
        """An explicit manifest: as given (``~`` expanded), or relative to ``data.root``."""
        path = Path(os.path.expanduser(value))
        if not path.is_absolute() and not path.is_file() and (root / path).is_file():
            path = root / path
        if not path.is_file():
            raise DataError(f"data.{key}: manifest not found: {path.resolve()}")
        return path.resolve()

    def _read(self, path: Path) -> pd.DataFrame:
        return read_manifest(path, self.class_names)

    def _split_tables(self, root: Path) -> dict[str, tuple[pd.DataFrame, str]]:
        """Each split's rows and where they came from, from the explicit keys or the layout of ``root``."""
        given = {k: v for k, v in self.manifests.items() if v}
        if set(given) == {"test"}:
            # data.test_manifest alone: a new labelled test set to evaluate a trained run on
            path = self._given("test_manifest", given["test"], root)
            return {"test": (self._read(path), str(path))}
        if given:
            missing = [k for k in SPLITS if k not in given]
            if missing:
                raise ConfigError(f"data.{missing[0]}_manifest is not set (give all three, or data.manifest "
                                  "with a split column)")
            paths = {k: self._given(f"{k}_manifest", v, root) for k, v in given.items()}
            return {k: (self._read(p), str(p)) for k, p in paths.items()}
        if self.manifest:
            return self._from_table(self._given("manifest", self.manifest, root), newest_csv(root, "test"))
        test = newest_csv(root, "test")
        train = newest_csv(root, f"train_{self.strategy}") or newest_csv(root, "train")
        val = newest_csv(root, f"val_{self.strategy}") or newest_csv(root, "val")
        if train is not None and val is not None:
            if test is None:
                raise DataError(f"data.root={root}: {train.name} and {val.name} but no test.csv (or "
                                "test_<stamp>.csv): the test split must be held out from train and val, as "
                                "tools.make_splits does")
            return {k: (self._read(p), str(p)) for k, p in (("train", train), ("val", val), ("test", test))}
        table = next((root / name for name in EVENT_TABLES if (root / name).is_file()), None)
        if table is not None:
            return self._from_table(table, test)
        if test is not None and not any(root.glob("train*.csv")) and not any(root.glob("val*.csv")):
            return {"test": (self._read(test), str(test))}  # a folder holding a test set only
        have = sorted(p.name for p in root.glob("*.csv"))
        raise DataError(
            f"data.root={root}: no manifests for data.split={self.strategy}. Expected train_{self.strategy}"
            f"[_<stamp>].csv + val_{self.strategy}[_<stamp>].csv + test[_<stamp>].csv (tools.make_splits), "
            f"train.csv + val.csv + test.csv, or one events table ({' or '.join(EVENT_TABLES)}). "
            f"CSV files there: {have}"
        )

    def _from_table(self, path: Path, test_path: Path | None) -> dict[str, tuple[pd.DataFrame, str]]:
        """One events table: its ``split`` column, or splits built here (test held out first)."""
        df = self._read(path)
        if "split" in df.columns:
            column = df["split"].astype(str).str.strip()
            bad = sorted(set(column) - set(SPLITS))
            if bad:
                raise DataError(f"manifest {path}: unknown split value(s) {bad} (use train/val/test)")
            out = {k: (df[column == k], f"{path} (split={k})") for k in SPLITS}
            if not len(out["test"][0]) and test_path is not None:
                out["test"] = (self._read(test_path), str(test_path))
            return out
        # labels as class names, so the split builders find the tail class whatever the manifest used (0/1)
        pool = df.assign(label=[self.class_names[i] for i in df["label_idx"]])
        if test_path is not None:
            test, test_source = self._read(test_path), str(test_path)
        else:
            if self.test_by not in pool.columns:
                raise DataError(f"data.test_by: manifest {path} has no column '{self.test_by}' "
                                f"(columns: {list(df.columns)})")
            pool, test = hold_out_videos(pool, self.test_fraction, self.tail_class, self.seed, self.test_by)
            test_source = (f"{path} (whole {self.test_by} groups held out: data.test_fraction={self.test_fraction}, "
                           f"seed {self.seed})")
        train, val = build_split(pool, self.strategy, self.val_fraction, self.tail_class, self.seed, self.boost_share)
        boost = f", data.boost_share={self.boost_share}" if self.strategy == "boosted" else ""
        built = f"data.split={self.strategy}, data.val_fraction={self.val_fraction}{boost}, seed {self.seed}"
        return {"train": (train, f"{path} ({built})"), "val": (val, f"{path} ({built})"), "test": (test, test_source)}

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
        for row in df.itertuples(index=False):
            where = f"{_row_ref(row.manifest_file, int(row.manifest_row))} (event {row.event_id})"
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

    # -- loaders ---------------------------------------------------------------------------------------------
    def dataset(self, split: str, augment: bool | None = None) -> ClipDataset:
        training = split == "train"
        return ClipDataset(self.split(split), self.frames_per_clip, self.image_size,
                           None if training else self.clips_per_event,
                           (self.augment and training) if augment is None else augment, self.stats)

    def train_dataloader(self):  # noqa: ANN201
        ds = self.dataset("train")
        sampler = None
        if self.balanced_sampling:
            labels = torch.tensor(ds.labels())
            counts = torch.bincount(labels, minlength=2).clamp(min=1).float()
            weights = (1.0 / counts)[labels]
            generator = torch.Generator().manual_seed(self.seed)
            sampler = WeightedRandomSampler(weights.double(), num_samples=len(ds), replacement=True,
                                            generator=generator)
        return self.make_loader(ds, shuffle=True, sampler=sampler, drop_last=len(ds) > self.batch_size)

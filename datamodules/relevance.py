"""Relevance task data: motion events ``root/<camera>/<event_id>/*.jpg`` (frames in name order).

A camera folder holding ``input/`` (a long CDnet-style sequence) is cut into events of
``event_frames`` frames; their motion masks use the background of the whole sequence (a few
frames do not tell a standing person from the background). ``cameras`` keeps only some cameras,
``max_sequences`` a seeded sample of events (null = all). :class:`RelevanceEventsBase` finds the
events and splits them (the same split for both phases: it depends only on the events and the
seed); one DataModule per phase reads them:

- :class:`RelevanceContrastiveDataModule` (phase 1): triplets (anchor frame, positive = another
  frame of the same event, negative = a frame of another event);
- :class:`RelevanceSegmentationDataModule` (phase 2): a frame and its motion mask (the
  pseudo-label), at ``image_size``. With ``labels_csv`` (``event_id,relevant``) and ``use_labels``
  the masks of events labelled 0 become empty, so the network learns that their motion is
  irrelevant (supervised fine-tuning). Test items are whole events (sampled frames, motion
  regions, and the ground truth written by the synthetic generator when present) for
  region-level and alert scoring.

:func:`preprocess_frame` is the one frame preprocessing of evaluation and serving
(``deploy/relevance.py``); training adds augmentation in front of the same steps. Without
``root`` the synthetic dataset is generated (datamodules/synthetic/relevance.py).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from datamodules.augment import seeded_call
from datamodules.base import SuiteDataModule, file_digest
from datamodules.grouped_split import grouped_split
from datamodules.images import image_size as header_size
from datamodules.images import list_images, read_image, read_mask
from datamodules.manifests import normalize_id, read_table
from datamodules.motion import MotionCache, MotionDetector, MotionResult, read_frames
from datamodules.synthetic.common import SyntheticDataset
from datamodules.synthetic.relevance import DEFAULT_OBJECT_SIZE, GENERATOR, object_size_range
from suite.backbones import IMAGENET_MEAN, IMAGENET_STD
from suite.contracts import Head, InputSpec
from suite.errors import ConfigError, DataError
from suite.printing import warn_on_console

log = logging.getLogger(__name__)

PHASES = ("contrastive", "segmentation")

REGION_TRUTH_OVERLAP = 0.3  # share of a region's pixels on a relevant object that makes it relevant


@dataclass
class Event:
    event_id: str
    camera: str
    frames: list[Path]
    sequence: str | None = None  # the long sequence an event was cut from
    relevant: int | None = None  # from labels.csv
    truth: Path | None = None  # synthetic ground truth mask of relevant pixels
    extra: dict[str, Any] = field(default_factory=dict)


def _skip(path: Path) -> bool:
    return path.name.startswith(("_", "."))


def discover_events(root: Path, event_frames: int) -> list[Event]:
    """Every event under ``root`` (see the module docstring), sorted by id."""
    if event_frames < 2:
        raise DataError(f"data.event_frames must be >= 2, got {event_frames}")
    cameras = [root] if (root / "input").is_dir() else sorted(
        p for p in root.iterdir() if p.is_dir() and not _skip(p))
    events: list[Event] = []
    for cam in cameras:
        if (cam / "input").is_dir():
            frames = list_images(cam / "input")
            if len(frames) < 2:
                raise DataError(f"sequence {cam / 'input'} has {len(frames)} frame(s); need at least 2")
            starts = list(range(0, len(frames), event_frames))
            if len(frames) - starts[-1] < 2 and len(starts) > 1:
                starts.pop()  # a trailing single frame joins the previous event
            for i, s in enumerate(starts):
                end = starts[i + 1] if i + 1 < len(starts) else len(frames)
                events.append(Event(f"{cam.name}/input@{s:06d}", cam.name, frames[s:end], sequence=str(cam)))
            continue
        for folder in sorted(p for p in cam.iterdir() if p.is_dir() and not _skip(p)):
            frames = list_images(folder)
            if len(frames) == 1:
                raise DataError(f"event folder {folder} has only one frame; an event needs at least 2 "
                                "(motion is a change between frames)")
            if frames:
                events.append(Event(f"{cam.name}/{folder.name}", cam.name, frames))
    if not events:
        raise DataError(f"no events under {root}: expected root/<camera>/<event_id>/*.jpg or root/<camera>/input/*")
    return events


def read_labels(path: Path) -> dict[str, int]:
    """``event_id,relevant`` (0 or 1) by the shared manifest reader; an event listed twice with two values is
    an error naming both lines."""
    if not path.is_file() and not path.is_dir():
        raise DataError(f"data.labels_csv: file not found: {path}")
    table = read_table(path, "labels file (data.labels_csv)")
    table.require({"event_id": "", "relevant": ""})
    labels: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for i, row in enumerate(table.rows):
        event, value = row["event_id"], normalize_id(row["relevant"])
        if not event:
            raise DataError(f"{table.where(i)}: empty event_id")
        if value not in ("0", "1"):
            raise DataError(f"{table.where(i)}: relevant must be 0 or 1, got {row['relevant']!r}")
        if labels.get(event, int(value)) != int(value):
            raise DataError(f"{table.where(i)}: event {event} is labelled {value} here and {labels[event]} on line "
                            f"{first_line[event]}; keep one row per event")
        labels[event] = int(value)
        first_line.setdefault(event, table.lines[i])
    return labels


def check_event_frames(event: Event) -> None:
    """Readable headers and one size per event, so bad frames fail before training."""
    sizes = {}
    for path in event.frames:
        sizes.setdefault(header_size(path), path)
    if len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise DataError(f"frames of event {event.event_id} differ in size: {p1} is {s1[0]}x{s1[1]}, "
                        f"{p2} is {s2[0]}x{s2[1]}")


# -- preprocessing: one definition for training, evaluation and serving ---------------------------
def frame_transform(size: int, augment: bool = False) -> A.Compose:
    """Resize to ``size`` x ``size``, (augmentation,) ImageNet normalisation, CHW tensor.

    Without ``augment`` this is exactly :func:`preprocess_frame`; training puts its random ops
    between the resize and the normalisation, so the network always sees the same value range.
    """
    ops: list[Any] = [A.Resize(height=size, width=size)]
    if augment:
        ops += [A.HorizontalFlip(p=0.5),
                A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5)]
    ops += [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
    return A.Compose(ops)


@lru_cache(maxsize=8)
def _eval_transform(size: int) -> A.Compose:
    return frame_transform(size, augment=False)


def preprocess_frame(image: np.ndarray, size: int) -> torch.Tensor:
    """One RGB uint8 frame ``[H, W, 3]`` -> the network's input ``[3, size, size]`` (float32)."""
    return _eval_transform(size)(image=image)["image"]


def preprocess_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """``[T, H, W, 3]`` RGB uint8 frames -> ``[T, 3, size, size]``, each by :func:`preprocess_frame`."""
    return torch.stack([preprocess_frame(frame, size) for frame in frames])


def sample_frames(count: int, wanted: int) -> np.ndarray:
    """Indices of the frames of an event that are scored: up to ``wanted`` spread evenly over ``count``,
    always with the middle one (its motion mask is the pixel-level target of the test)."""
    spread = np.linspace(0, count - 1, max(1, min(count, wanted))).round().astype(int)
    return np.unique(np.append(spread, count // 2))


# -- datasets -------------------------------------------------------------------------------
class TripletDataset(Dataset):
    """Item i: anchor and positive from event i, negative from any other event.

    Training draws fresh frames each time (torch RNG, seeded per worker by Lightning);
    validation uses a generator seeded by the index so its loss is comparable across epochs.
    """

    def __init__(self, events: list[Event], transform: A.Compose, fixed: bool = False, seed: int = 0):
        if len(events) < 2:
            raise DataError(f"contrastive training needs at least 2 events (negatives come from another event), "
                            f"got {len(events)}")
        self.events, self.transform, self.fixed, self.seed = events, transform, fixed, seed

    def __len__(self) -> int:
        return len(self.events)

    def sample(self, index: int) -> tuple[int, int, int, int]:
        """(anchor frame, positive frame, negative event, negative frame)."""
        gen = torch.Generator().manual_seed(self.seed * 100003 + index) if self.fixed else None
        n = len(self.events[index].frames)
        a, p = torch.randperm(n, generator=gen)[:2].tolist()
        neg = int(torch.randint(0, len(self.events) - 1, (1,), generator=gen))
        neg += neg >= index  # skip the anchor's own event
        nf = int(torch.randint(0, len(self.events[neg].frames), (1,), generator=gen))
        return a, p, neg, nf

    def __getitem__(self, index: int) -> dict[str, Any]:
        a, p, neg, nf = self.sample(index)
        event = self.events[index]

        def load(path: Path) -> torch.Tensor:
            return seeded_call(self.transform, image=read_image(path))["image"]

        return {"anchor": load(event.frames[a]), "positive": load(event.frames[p]),
                "negative": load(self.events[neg].frames[nf]), "event_id": event.event_id,
                "negative_event_id": self.events[neg].event_id, "camera": event.camera}


class MaskDataset(Dataset):
    """A frame and its motion mask; random frame in training, the middle one otherwise."""

    def __init__(self, events: list[Event], motion: list[MotionResult], transform: A.Compose, train: bool,
                 use_labels: bool):
        self.events, self.motion, self.transform = events, motion, transform
        self.train, self.use_labels = train, use_labels

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> dict[str, Any]:
        event, result = self.events[index], self.motion[index]
        n = len(event.frames)
        k = int(torch.randint(0, n, (1,))) if self.train else n // 2
        mask = result.frame_masks[k].astype(np.float32)
        if self.use_labels and event.relevant == 0:
            mask = np.zeros_like(mask)
        out = seeded_call(self.transform, image=read_image(event.frames[k]), mask=mask)
        return {"image": out["image"], "mask": out["mask"][None].float(), "event_id": event.event_id}


class EventDataset(Dataset):
    """A whole event for scoring: up to ``frames_per_event`` preprocessed frames, its motion regions
    with their label image at the frames' size, and the truth when the data has it."""

    def __init__(self, events: list[Event], motion: list[MotionResult], size: int, frames_per_event: int):
        self.events, self.motion, self.size = events, motion, size
        self.frames_per_event = frames_per_event

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> dict[str, Any]:
        event, result = self.events[index], self.motion[index]
        middle = len(event.frames) // 2
        picks = sample_frames(len(event.frames), self.frames_per_event)
        frames = preprocess_frames(read_frames([event.frames[k] for k in picks]), self.size)
        h, w = result.labels.shape
        sx, sy = self.size / w, self.size / h
        truth = read_mask(event.truth) > 127 if event.truth is not None and event.truth.is_file() else None
        regions = []
        for r in result.regions:
            x, y, bw, bh = r.box
            relevant = -1
            if truth is not None:
                relevant = int(truth[result.labels == r.id].mean() >= REGION_TRUTH_OVERLAP)
            # the box at the network's resolution, to draw on its input
            regions.append({"id": r.id, "box": (x * sx, y * sy, bw * sx, bh * sy), "area": r.area,
                            "relevant": relevant})
        mask = cv2.resize(result.frame_masks[middle].astype(np.uint8), (self.size, self.size),
                          interpolation=cv2.INTER_NEAREST)
        motion = cv2.resize(result.mask.astype(np.uint8), (self.size, self.size), interpolation=cv2.INTER_NEAREST)
        return {"event_id": event.event_id, "camera": event.camera, "frames": frames,
                "middle": int(np.flatnonzero(picks == middle)[0]),
                "mask": torch.from_numpy(mask)[None].float(), "motion": torch.from_numpy(motion),
                "labels": torch.from_numpy(result.labels.astype(np.int64)), "regions": regions,
                "event_relevant": -1 if event.relevant is None else event.relevant}


def _first(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return batch[0]


# -- DataModules ----------------------------------------------------------------------------
def _check_mode(mode: str | None, phase: str) -> None:
    """``data.mode`` chose the phase before each phase had its DataModule; it still may say this one."""
    if mode is None:
        return
    if mode not in PHASES:
        raise ConfigError(f"data.mode must be 'contrastive' or 'segmentation', got {mode!r} (and it is deprecated: "
                          "experiment=relevance_contrastive / relevance_segmentation choose the phase)")
    if mode != phase:
        raise ConfigError(f"data.mode={mode} but this is the {phase} phase's data (data=relevance_{phase}); "
                          f"data.mode is deprecated: use experiment=relevance_{mode} (or data=relevance_{mode})")
    warnings.warn(f"data.mode is deprecated and no longer needed: data=relevance_{phase} (set by "
                  f"experiment=relevance_{phase}) is the {phase} phase's data; drop data.mode", FutureWarning,
                  stacklevel=3)


class RelevanceEventsBase(SuiteDataModule):
    """The events, their labels and the train/val/test split, shared by both phases."""

    task = "relevance"
    items_name = "events"
    phase = ""

    def __init__(
        self,
        root: str | None = None,
        cameras: list[str] | None = None,
        max_sequences: int | None = None,
        event_frames: int = 16,
        labels_csv: str | None = None,
        image_size: int = 224,
        augment: bool = True,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        synthetic_dir: str = "data/synthetic",
        synthetic_cameras: int = 2,
        synthetic_events: int = 12,
        synthetic_frames: int = 8,
        synthetic_width: int = 160,
        synthetic_height: int = 120,
        synthetic_object_size: Sequence[float] = DEFAULT_OBJECT_SIZE,
        dev_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 4,
        num_workers: int | str = 0,
        pin_memory: bool | str = False,
        mode: str | None = None,
        allow_overlap: bool = False,
    ):
        super().__init__(root=root, synthetic_dir=synthetic_dir, dev_samples=dev_samples, seed=seed,
                         batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         allow_overlap=allow_overlap)
        _check_mode(mode, self.phase)
        if val_fraction <= 0 or test_fraction <= 0 or val_fraction + test_fraction >= 1:
            raise DataError(f"data.val_fraction and data.test_fraction must be > 0 and sum below 1, "
                            f"got {val_fraction} and {test_fraction}")
        if max_sequences is not None and max_sequences < 3:
            raise DataError(f"data.max_sequences must be >= 3 (train, val and test need one each) or null, "
                            f"got {max_sequences}")
        self.cameras = list(cameras) if cameras else None
        self.max_sequences, self.event_frames = max_sequences, event_frames
        self.labels_csv = labels_csv
        self.image_size, self.augment = image_size, augment
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.synthetic_params = {"cameras": synthetic_cameras, "events_per_camera": synthetic_events,
                                 "frames": synthetic_frames, "width": synthetic_width, "height": synthetic_height,
                                 # plain floats: the generator's parameters are its cache key (JSON)
                                 "object_size": [float(v) for v in object_size_range(synthetic_object_size)]}

    # -- contract hooks ------------------------------------------------------------------------
    def synthetic(self) -> tuple[SyntheticDataset, dict[str, Any]]:
        return GENERATOR, dict(self.synthetic_params)

    def build_splits(self, root: Path) -> dict[str, list[Event]]:
        events = self._events(root)
        if len(events) < 3:
            raise DataError(f"need at least 3 events (train, val, test) under {root}, found {len(events)}")
        for e in tqdm(events, desc="checking frames", disable=len(events) < 50, leave=False):
            check_event_frames(e)
        # an event folder copied under another name is one event, dropped before the split (reported)
        events = self.drop_duplicates({str(root): events})[str(root)]
        # Not stratified by labels.csv: phase 2 may read labels phase 1 did not, and both phases must
        # hold out the same events.
        parts = grouped_split(len(events), {"val": self.val_fraction, "test": self.test_fraction}, self.seed,
                              what="events")
        return {name: [events[i] for i in indices] for name, indices in parts.items()}

    def item_id(self, item: Event) -> str:
        return item.event_id

    def content_id(self, item: Event) -> str | None:
        # an event is its frames: an event folder copied under another name holds the same bytes
        sha = hashlib.sha1(usedforsecurity=False)
        for frame in item.frames:
            sha.update(file_digest(frame).encode())
        return f"{len(item.frames)}:{sha.hexdigest()}"

    def heads(self) -> tuple[Head, ...]:
        return (Head("mask", ("irrelevant", "relevant"), positive=1),)

    def input_spec(self) -> InputSpec:
        return InputSpec("image", (3, self.image_size, self.image_size), IMAGENET_MEAN, IMAGENET_STD)

    def spec_extras(self) -> dict[str, Any]:
        return {"mode": self.phase, "image_size": self.image_size, "event_frames": self.event_frames}

    # -- events ----------------------------------------------------------------------------------
    def _events(self, root: Path) -> list[Event]:
        events = discover_events(root, self.event_frames)
        if self.cameras:
            known = sorted({e.camera for e in events})
            unknown = [c for c in self.cameras if c not in known]
            if unknown:
                raise DataError(f"data.cameras: no camera {unknown} under {root} (cameras: {known})")
            events = [e for e in events if e.camera in self.cameras]
        labels_path = Path(self.labels_csv).expanduser() if self.labels_csv else root / "labels.csv"
        if self.labels_csv or labels_path.is_file():
            labels = read_labels(labels_path)
            for e in events:
                e.relevant = labels.get(e.event_id)
            unmatched = sorted(set(labels) - {e.event_id for e in events})
            if unmatched:
                warn_on_console(log, f"{labels_path}: {len(unmatched)} of {len(labels)} labelled event(s) are not "
                                     f"among the events read under {root}, e.g. {', '.join(unmatched[:3])} "
                                     f"(event ids look like {events[0].event_id}; data.cameras may leave some out)")
        self.check_labels(events, labels_path, root)
        for e in events:
            truth = root / "_truth" / f"{e.event_id}.png"
            e.truth = truth if truth.is_file() else None
        self.sources = [(str(root), len(events))] + ([(str(labels_path), len(events))] if labels_path.is_file()
                                                     else [])
        if self.max_sequences and len(events) > self.max_sequences:
            keep = np.random.default_rng(self.seed).permutation(len(events))[: self.max_sequences]
            events = [events[i] for i in sorted(keep)]
        return events

    def check_labels(self, events: list[Event], labels_path: Path, root: Path) -> None:
        """A phase that needs the labels refuses data without them."""


class RelevanceContrastiveDataModule(RelevanceEventsBase):
    """Phase 1: (anchor, positive, negative) frame triplets of every split."""

    phase = "contrastive"

    def dataset(self, split: str) -> TripletDataset:
        train = split == "train"
        return TripletDataset(self.split(split), frame_transform(self.image_size, augment=train and self.augment),
                              fixed=not train, seed=self.seed)


class RelevanceSegmentationDataModule(RelevanceEventsBase):
    """Phase 2: frames with their motion masks; whole events at test time.

    The motion masks (stage 1) are this DataModule's cache: computed once on rank zero before
    training (:meth:`prepare_caches`), kept per event under ``cache_dir``.
    """

    phase = "segmentation"

    def __init__(
        self,
        root: str | None = None,
        cameras: list[str] | None = None,
        max_sequences: int | None = None,
        event_frames: int = 16,
        labels_csv: str | None = None,
        use_labels: bool = False,
        image_size: int = 224,
        augment: bool = True,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        eval_frames: int = 4,
        motion: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        synthetic_dir: str = "data/synthetic",
        synthetic_cameras: int = 2,
        synthetic_events: int = 12,
        synthetic_frames: int = 8,
        synthetic_width: int = 160,
        synthetic_height: int = 120,
        synthetic_object_size: Sequence[float] = DEFAULT_OBJECT_SIZE,
        dev_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 4,
        num_workers: int | str = 0,
        pin_memory: bool | str = False,
        mode: str | None = None,
        allow_overlap: bool = False,
    ):
        super().__init__(root=root, cameras=cameras, max_sequences=max_sequences, event_frames=event_frames,
                         labels_csv=labels_csv, image_size=image_size, augment=augment, val_fraction=val_fraction,
                         test_fraction=test_fraction, synthetic_dir=synthetic_dir,
                         synthetic_cameras=synthetic_cameras, synthetic_events=synthetic_events,
                         synthetic_frames=synthetic_frames, synthetic_width=synthetic_width,
                         synthetic_height=synthetic_height, synthetic_object_size=synthetic_object_size,
                         dev_samples=dev_samples, seed=seed,
                         batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, mode=mode,
                         allow_overlap=allow_overlap)
        if eval_frames < 1:
            raise DataError(f"data.eval_frames must be >= 1, got {eval_frames}")
        self.use_labels, self.eval_frames = use_labels, eval_frames
        try:
            self.detector = MotionDetector(**(dict(motion) if motion else {}))
        except (TypeError, ValueError) as err:
            raise DataError(f"data.motion: {err}") from None
        self.cache_dir = cache_dir
        self.motion: dict[str, MotionResult] = {}

    def check_labels(self, events: list[Event], labels_path: Path, root: Path) -> None:
        if not self.use_labels:
            return
        if not labels_path.is_file():
            raise DataError(f"data.use_labels=true but there is no labels file ({labels_path}); "
                            "set data.labels_csv=<file with event_id,relevant>")
        if not any(e.relevant is not None for e in events):
            raise DataError(f"data.use_labels: no event id of {labels_path} matches an event under {root} "
                            f"(ids look like {events[0].event_id})")

    def item_labels(self, item: Event) -> dict[str, str | None]:
        # with data.use_labels the labels file teaches which motion is irrelevant: training needs both values
        if not self.use_labels:
            return {}
        return {"relevant (labels file)": None if item.relevant is None else str(item.relevant)}

    def spec_extras(self) -> dict[str, Any]:
        return {**super().spec_extras(), "eval_frames": self.eval_frames, "use_labels": self.use_labels,
                "motion": self.detector.settings()}

    # -- motion (stage 1) ----------------------------------------------------------------------
    def prepare_caches(self, root: Path) -> None:
        # after the split, so that a data.dev_samples subset computes only its own events
        self.setup()
        assert self.splits is not None
        self.compute_motion([e for items in self.splits.values() for e in items])

    def cache(self) -> MotionCache:
        return MotionCache(self.cache_dir, self.detector)

    def compute_motion(self, events: list[Event]) -> None:
        cache = self.cache()
        backgrounds: dict[str, np.ndarray] = {}

        def sequence_background(sequence: str) -> np.ndarray:
            if sequence not in backgrounds:
                backgrounds[sequence] = self.sequence_background(Path(sequence))
            return backgrounds[sequence]

        todo = [e for e in events if e.event_id not in self.motion]
        for e in tqdm(todo, desc="motion masks", leave=False, disable=len(todo) < 20):
            if e.sequence is None:
                self.motion[e.event_id] = cache.get(e.frames)
                continue
            frames = list_images(Path(e.sequence) / "input")
            context = f"sequence background: {e.sequence}, {len(frames)} frames, {frames[-1].stat().st_mtime_ns}"
            self.motion[e.event_id] = cache.get(e.frames, background=lambda s=e.sequence: sequence_background(s),
                                                context=context)

    def sequence_background(self, sequence: Path, max_frames: int = 200) -> np.ndarray:
        frames = list_images(sequence / "input")
        picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), max_frames)).round().astype(int))
        return self.detector.background(read_frames([frames[i] for i in picks]))

    def motion_for(self, events: list[Event]) -> list[MotionResult]:
        self.compute_motion(events)
        return [self.motion[e.event_id] for e in events]

    # -- datasets --------------------------------------------------------------------------------
    def dataset(self, split: str) -> MaskDataset:
        events = self.split(split)
        train = split == "train"
        return MaskDataset(events, self.motion_for(events), frame_transform(self.image_size, train and self.augment),
                           train=train, use_labels=self.use_labels)

    def event_dataset(self, split: str = "test") -> EventDataset:
        events = self.split(split)
        return EventDataset(events, self.motion_for(events), self.image_size, self.eval_frames)

    def test_dataloader(self) -> DataLoader:
        # whole events of varying region counts: one per batch
        return self.make_loader(self.event_dataset("test"), batch_size=1, collate_fn=_first)


_SEGMENTATION_ONLY = ("use_labels", "eval_frames", "motion", "cache_dir")


def RelevanceDataModule(mode: str | None = None, **kwargs: Any) -> RelevanceEventsBase:
    """The former single DataModule of both phases, chosen by ``data.mode`` (default: segmentation).

    Kept so that configs of earlier runs (``_target_: datamodules.relevance.RelevanceDataModule``)
    still build; new configs use ``data=relevance_contrastive`` / ``data=relevance_segmentation``.
    """
    phase = mode or "segmentation"
    if phase not in PHASES:
        raise ConfigError(f"data.mode must be 'contrastive' or 'segmentation', got {mode!r}")
    warnings.warn("datamodules.relevance.RelevanceDataModule and data.mode are deprecated: each phase has its "
                  f"DataModule (data=relevance_{phase}, set by experiment=relevance_{phase})", FutureWarning,
                  stacklevel=2)
    if phase == "contrastive":
        # the motion settings never applied to phase 1
        kwargs = {k: v for k, v in kwargs.items() if k not in _SEGMENTATION_ONLY}
        return RelevanceContrastiveDataModule(**kwargs)
    return RelevanceSegmentationDataModule(**kwargs)

"""Relevance task data: motion events ``root/<camera>/<event_id>/*.jpg`` (frames in name order).

A camera folder holding ``input/`` (a long CDnet-style sequence) is cut into events of
``event_frames`` frames; their motion masks use the background of the whole sequence (a few
frames do not tell a standing person from the background). ``cameras`` keeps only some cameras,
``max_sequences`` a seeded sample of events (null = all). Two modes:

- ``contrastive``: triplets (anchor frame, positive = another frame of the same event,
  negative = a frame of another event);
- ``segmentation``: a frame and its motion mask (the pseudo-label), at ``image_size``.
  With ``labels_csv`` (``event_id,relevant``) the masks of events labelled 0 become empty, so
  the network learns that their motion is irrelevant (supervised fine-tuning).

Test items are whole events (sampled frames, motion regions, and the ground truth written by the
synthetic generator when present) for region-level and alert scoring. Without ``root`` the
synthetic dataset is generated (datamodules/synthetic/relevance.py).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
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
from datamodules.base import SuiteDataModule, existing_folder
from datamodules.images import image_size as header_size
from datamodules.images import list_images, read_image, read_mask
from datamodules.motion import MotionCache, MotionDetector, MotionResult, read_frames
from datamodules.synthetic import relevance as synthetic
from suite.backbones import IMAGENET_MEAN, IMAGENET_STD
from suite.errors import DataError

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
    if not path.is_file():
        raise DataError(f"data.labels_csv: file not found: {path}")
    labels: dict[str, int] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"event_id", "relevant"} <= set(reader.fieldnames):
            raise DataError(f"{path}: needs the columns event_id,relevant (found {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            value = (row["relevant"] or "").strip()
            if value not in ("0", "1"):
                raise DataError(f"{path} row {line}: relevant must be 0 or 1, got {value!r}")
            labels[row["event_id"].strip()] = int(value)
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


def _transform(size: int, train: bool, augment: bool) -> A.Compose:
    ops: list[Any] = [A.Resize(height=size, width=size)]
    if train and augment:
        ops += [A.HorizontalFlip(p=0.5),
                A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5)]
    ops += [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
    return A.Compose(ops)


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
                "negative": load(self.events[neg].frames[nf]), "event": index, "negative_event": neg}


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
        return {"image": out["image"], "mask": out["mask"][None].float(), "index": index}


class EventDataset(Dataset):
    """A whole event for scoring: up to ``frames_per_event`` frames, regions and truth."""

    def __init__(self, events: list[Event], motion: list[MotionResult], size: int, frames_per_event: int):
        self.events, self.motion, self.size = events, motion, size
        self.frames_per_event = frames_per_event
        self.transform = _transform(size, train=False, augment=False)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> dict[str, Any]:
        event, result = self.events[index], self.motion[index]
        n = len(event.frames)
        middle = n // 2
        # the middle frame is always scored: its motion mask is the pixel-level target
        picks = np.unique(np.append(np.linspace(0, n - 1, min(n, self.frames_per_event)).round().astype(int), middle))
        frames = torch.stack([self.transform(image=read_image(event.frames[k]))["image"] for k in picks])
        h, w = result.labels.shape
        sx, sy = self.size / w, self.size / h
        labels = cv2.resize(result.labels.astype(np.int32).astype(np.float32), (self.size, self.size),
                            interpolation=cv2.INTER_NEAREST).astype(np.int64)
        truth = read_mask(event.truth) > 127 if event.truth is not None and event.truth.is_file() else None
        regions = []
        for r in result.regions:
            x, y, bw, bh = r.box
            relevant = -1
            if truth is not None:
                relevant = int(truth[result.labels == r.id].mean() >= REGION_TRUTH_OVERLAP)
            regions.append({"id": r.id, "box": (x * sx, y * sy, bw * sx, bh * sy), "area": r.area,
                            "relevant": relevant})
        mask = cv2.resize(result.frame_masks[middle].astype(np.uint8), (self.size, self.size),
                          interpolation=cv2.INTER_NEAREST)
        motion = cv2.resize(result.mask.astype(np.uint8), (self.size, self.size), interpolation=cv2.INTER_NEAREST)
        return {"event_id": event.event_id, "frames": frames, "middle": int(np.flatnonzero(picks == middle)[0]),
                "mask": torch.from_numpy(mask)[None].float(), "motion": torch.from_numpy(motion),
                "labels": torch.from_numpy(labels), "regions": regions,
                "event_relevant": -1 if event.relevant is None else event.relevant}


def _first(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return batch[0]


class RelevanceDataModule(SuiteDataModule):
    def __init__(
        self,
        mode: str = "segmentation",
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
        dev_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 4,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        if mode not in ("contrastive", "segmentation"):
            raise DataError(f"data.mode must be 'contrastive' or 'segmentation', got {mode!r}")
        if val_fraction <= 0 or test_fraction <= 0 or val_fraction + test_fraction >= 1:
            raise DataError(f"data.val_fraction and data.test_fraction must be > 0 and sum below 1, "
                            f"got {val_fraction} and {test_fraction}")
        if max_sequences is not None and max_sequences < 3:
            raise DataError(f"data.max_sequences must be >= 3 (train, val and test need one each) or null, "
                            f"got {max_sequences}")
        self.mode, self.root = mode, root
        self.cameras = list(cameras) if cameras else None
        self.max_sequences, self.event_frames = max_sequences, event_frames
        self.labels_csv, self.use_labels = labels_csv, use_labels
        self.image_size, self.augment = image_size, augment
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.eval_frames = eval_frames
        try:
            self.detector = MotionDetector(**(dict(motion) if motion else {}))
        except (TypeError, ValueError) as err:
            raise DataError(f"data.motion: {err}") from None
        self.cache_dir = cache_dir
        self.synthetic = {"cameras": synthetic_cameras, "events_per_camera": synthetic_events,
                          "frames": synthetic_frames, "width": synthetic_width, "height": synthetic_height}
        self.synthetic_dir = synthetic_dir
        self.dev_samples, self.seed = dev_samples, seed
        self.splits: dict[str, list[Event]] = {}
        self.motion: dict[str, MotionResult] = {}

    # -- data location -------------------------------------------------------------------
    def data_root(self) -> Path:
        if self.root:
            return existing_folder(self.root)
        return synthetic.default_dir(self.synthetic_dir, seed=self.seed, **self.synthetic)

    def prepare_data(self) -> None:
        if not self.root:
            synthetic.generate(self.data_root(), seed=self.seed, **self.synthetic)

    # -- events and splits ---------------------------------------------------------------
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
            if self.use_labels and not any(e.relevant is not None for e in events):
                raise DataError(f"data.use_labels: no event id of {labels_path} matches an event under {root} "
                                f"(ids look like {events[0].event_id})")
        elif self.use_labels:
            raise DataError(f"data.use_labels=true but there is no labels file ({labels_path}); "
                            "set data.labels_csv=<file with event_id,relevant>")
        for e in events:
            truth = root / "_truth" / f"{e.event_id}.png"
            e.truth = truth if truth.is_file() else None
        self.sources = [(str(root), len(events))] + ([(str(labels_path), len(events))] if labels_path.is_file()
                                                     else [])
        if self.max_sequences and len(events) > self.max_sequences:
            keep = np.random.default_rng(self.seed).permutation(len(events))[: self.max_sequences]
            events = [events[i] for i in sorted(keep)]
        return events

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        root = self.data_root()
        events = self._events(root)
        if len(events) < 3:
            raise DataError(f"need at least 3 events (train, val, test) under {root}, found {len(events)}")
        for e in tqdm(events, desc="checking frames", disable=len(events) < 50, leave=False):
            check_event_frames(e)
        order = np.random.default_rng(self.seed).permutation(len(events))
        n_test = max(1, round(len(events) * self.test_fraction))
        n_val = max(1, round(len(events) * self.val_fraction))
        pick = lambda idx: [events[i] for i in sorted(idx)]  # noqa: E731
        self.splits = {"test": pick(order[:n_test]), "val": pick(order[n_test:n_test + n_val]),
                       "train": pick(order[n_test + n_val:])}
        if self.dev_samples:
            self.splits["train"] = self.splits["train"][: self.dev_samples]
        for name, items in self.splits.items():
            if not items:
                raise DataError(f"the {name} split of {root} is empty ({len(events)} events)")
        if self.mode == "segmentation" or stage == "test":
            self.compute_motion([e for split in self.splits.values() for e in split])

    # -- motion (stage 1) ----------------------------------------------------------------
    def cache(self) -> MotionCache:
        return MotionCache(self.cache_dir, self.detector)

    def compute_motion(self, events: list[Event]) -> None:
        cache = self.cache()
        backgrounds: dict[str, np.ndarray] = {}

        def sequence_background(sequence: str) -> np.ndarray:
            if sequence not in backgrounds:
                backgrounds[sequence] = self.sequence_background(Path(sequence))
            return backgrounds[sequence]

        for e in tqdm(events, desc="motion masks", leave=False, disable=len(events) < 20):
            if e.event_id in self.motion:
                continue
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

    # -- datasets ------------------------------------------------------------------------
    def label_map(self) -> dict[str, Any]:
        return {"mask": {"irrelevant": 0, "relevant": 1}, "mode": self.mode}

    def dataset(self, split: str) -> Dataset:
        self.setup()
        events = self.splits[split]
        train = split == "train"
        transform = _transform(self.image_size, train=train, augment=self.augment)
        if self.mode == "contrastive":
            return TripletDataset(events, transform, fixed=not train, seed=self.seed)
        return MaskDataset(events, self.motion_for(events), transform, train=train, use_labels=self.use_labels)

    def event_dataset(self, split: str = "test") -> EventDataset:
        self.setup()
        events = self.splits[split]
        return EventDataset(events, self.motion_for(events), self.image_size, self.eval_frames)

    def train_dataloader(self):
        train = self.dataset("train")
        return self.make_loader(train, shuffle=True, drop_last=len(train) > self.batch_size)

    def val_dataloader(self):
        return self.make_loader(self.dataset("val"))

    def test_dataloader(self):
        if self.mode == "contrastive":
            return self.make_loader(self.dataset("test"))
        # whole events of varying region counts: one per batch
        return DataLoader(self.event_dataset("test"), batch_size=1, collate_fn=_first, num_workers=self.num_workers)

"""Relevance predictor: motion events -> motion regions, relevant/irrelevant per region, the alert.

    python predict.py <relevance_segmentation run | its bundle> <inputs ...> [key=value ...]

Inputs (the training layout, or parts of it):

- ``root/<camera>/<event_id>/*.jpg``: one event per folder (ids ``<camera>/<event_id>``, as in training);
  ``root/labels.csv`` (``event_id,relevant``), when present, fills the ``label`` column;
- one event folder (a folder of frames, in name order);
- a long sequence: ``<camera>/input/*`` (CDnet layout), or any folder of frames with ``sequence=true``,
  cut into events of ``event_frames`` frames (default: the run's ``data.event_frames``); their motion
  uses the background of the whole sequence, as training does;
- a ``.zip`` of an event's frames, or a short video of one event (mp4, avi, ...).

Per event: stage 1 (``datamodules.motion.MotionDetector`` with the run's settings, OpenCV, outside
the graph) gives the motion regions; the graph gives the relevance of up to ``frames`` sampled frames
(max over them); each region's score is its mean relevance, relevant above ``region_threshold``;
the event alerts when a region is relevant (``deploy/relevance_rule.py``, the rule of the run's test).
``predictions.csv``: ``pred`` relevant (alert) / irrelevant, ``score_relevant`` = the highest region
score, extras ``camera``, ``frames``, ``num_regions``, ``num_relevant``, ``alert``, ``region_scores``,
``region_boxes``, ``motion_fraction``; ``pictures/<event>.png``: motion detection | relevance.

Imports numpy, OpenCV and PyAV only (no torch): it runs an ONNX bundle on a Raspberry Pi.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datamodules.images import IMAGE_EXTENSIONS, list_images
from datamodules.motion import MotionDetector, MotionResult, read_frames
from datamodules.video import VIDEO_EXTENSIONS
from deploy.predictors.base import ItemResult, Predictor
from deploy.relevance_pictures import motion_panel, relevance_panel, scaled_boxes, titled_grid
from deploy.relevance_rule import RegionDecision, decide_regions, sample_frames
from suite.contracts import PredictionRow
from suite.errors import ConfigError, DataError

CLASSES = ("irrelevant", "relevant")
GRAPH = "model"
#: the longer side of the pictures (frames are drawn smaller when larger)
PICTURE_SIDE = 480


@dataclass
class Event:
    """One event to decide on: its frames (files), or an archive/video holding them."""

    event_id: str
    camera: str
    frames: list[Path] = field(default_factory=list)
    archive: Path | None = None  # a .zip of frames or a video
    sequence: tuple[Path, ...] | None = None  # all frames of the sequence it was cut from
    label: int | None = None


@dataclass
class EventResult:
    """The decision on one event (the seed's ``relevance_result``): regions with their score and flag,
    ``num_regions``, ``num_relevant``, ``alert``; ``relevance`` is the map at the network's size."""

    regions: list[dict[str, Any]]
    decision: RegionDecision
    relevance: np.ndarray
    motion_fraction: float = 0.0

    @property
    def num_regions(self) -> int:
        return len(self.regions)

    @property
    def num_relevant(self) -> int:
        return int(sum(self.decision.relevant))

    @property
    def alert(self) -> bool:
        return self.decision.alert

    @property
    def event_score(self) -> float:
        return self.decision.event_score

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: everything but the relevance map."""
        return {"regions": self.regions, "num_regions": self.num_regions, "num_relevant": self.num_relevant,
                "alert": self.alert, "event_score": round(self.event_score, 6),
                "motion_fraction": round(self.motion_fraction, 6)}


def _skip(path: Path) -> bool:
    return path.name.startswith(("_", "."))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _skip(p))


def read_labels(path: Path) -> dict[str, int]:
    """``event_id -> 0/1`` of a ``labels.csv`` beside the events (rows that are not 0/1 are ignored:
    the labels only fill the ``label`` column, they never stop a prediction)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"event_id", "relevant"} <= set(reader.fieldnames):
            return {}
        return {row["event_id"].strip(): int(row["relevant"]) for row in reader
                if (row.get("relevant") or "").strip() in ("0", "1")}


def cut_sequence(frames: list[Path], event_frames: int, prefix: str, camera: str) -> list[Event]:
    """A long sequence as events of ``event_frames`` frames, named ``<prefix>@<first frame index>``;
    a trailing single frame joins the previous event (the training's cut)."""
    starts = list(range(0, len(frames), event_frames))
    if len(frames) - starts[-1] < 2 and len(starts) > 1:
        starts.pop()
    whole = tuple(frames)
    return [Event(f"{prefix}@{s:06d}", camera, frames[s:(starts[i + 1] if i + 1 < len(starts) else len(frames))],
                  sequence=whole) for i, s in enumerate(starts)]


def frames_from_zip(data: bytes, source: str) -> np.ndarray:
    """``[T, H, W, 3]`` RGB frames of the images in a zip archive, in name order."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DataError(f"{source}: not a zip archive") from None
    names = sorted(n for n in archive.namelist()
                   if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not _skip(Path(n)) and "/." not in n)
    frames = []
    for name in names:
        image = cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"{source}: {name} is not a readable image")
        if frames and image.shape != frames[0].shape:
            raise DataError(f"{source}: frames differ in size ({names[0]} and {name})")
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if len(frames) < 2:
        raise DataError(f"{source}: {len(frames)} image(s) in the archive; an event needs at least 2 frames")
    return np.stack(frames)


def frames_from_video(data: bytes | Path, source: str, max_frames: int) -> np.ndarray:
    """``[T, H, W, 3]`` RGB frames of a video (PyAV), evenly thinned to at most ``max_frames``."""
    import av

    try:
        with av.open(io.BytesIO(data) if isinstance(data, bytes) else str(data)) as container:
            if not container.streams.video:
                raise DataError(f"{source}: no video stream")
            stream = container.streams.video[0]
            # with a frame count in the header only the kept frames are converted and held
            count = int(stream.frames or 0)
            keep = set(_spread(count, max_frames).tolist()) if count else None
            frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(stream))
                      if keep is None or i in keep]
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise DataError(f"{source}: cannot decode the video ({err})") from None
    if len(frames) < 2:
        raise DataError(f"{source}: {len(frames)} frame(s); an event needs at least 2")
    return np.stack([frames[i] for i in _spread(len(frames), max_frames)])


def _spread(count: int, wanted: int) -> np.ndarray:
    return np.unique(np.linspace(0, count - 1, min(count, wanted)).round().astype(int))


class RelevancePredictor(Predictor):
    """Alert decisions on motion events with a relevance_segmentation run or its bundle.

    The seed's use, in three lines (``docs/relevance.md``)::

        motion = predictor.detector.detect(frames)      # stage 1 (MotionDetector)
        result = predictor.predict(frames, motion)      # -> EventResult
        if result.num_relevant > 0: ...                 # send the alert
    """

    task = "relevance"
    defaults = {
        "frames": 0,  # frames per event the network sees (0 = the run's data.eval_frames)
        "region_threshold": -1.0,  # a region is relevant above it (< 0 = the run's model.region_threshold)
        "sequence": False,  # a folder of frames is a long sequence, cut into events
        "event_frames": 0,  # frames per event of a cut sequence (0 = the run's data.event_frames)
        "max_frames": 64,  # frames kept from a video (evenly spread)
        "pictures": True,  # pictures/<event>.png: motion detection | relevance
    }

    def __init__(self, backend: Any, options: dict[str, Any] | None = None):
        super().__init__(backend, options)  # booleans (sequence, pictures) are read by their words there
        run = self.meta.get("options", {})
        self.image_size = int(run["image_size"])
        self.frames = int(self.options["frames"]) or int(run.get("eval_frames", 4))
        self.region_threshold = (float(self.options["region_threshold"]) if self.options["region_threshold"] >= 0
                                 else float(run.get("region_threshold", 0.5)))
        self.event_frames = int(self.options["event_frames"]) or int(run.get("event_frames", 16))
        self.background_frames = int(run.get("sequence_background_frames", 200))
        if self.frames < 1 or self.event_frames < 2 or int(self.options["max_frames"]) < 2:
            raise ConfigError(f"predict options: frames must be >= 1, event_frames >= 2 and max_frames >= 2 "
                              f"(got {self.frames}, {self.event_frames}, {self.options['max_frames']})")
        try:
            self.detector = MotionDetector(**dict(run.get("motion") or {}))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"the bundle's motion settings: {err}") from None
        self._backgrounds: dict[tuple[Path, ...], np.ndarray] = {}

    # -- the model: frames -> relevance -> decision ----------------------------------------------
    def network_input(self, frames: np.ndarray) -> np.ndarray:
        """The graph's input for an event: its sampled frames resized to the network's square, raw RGB
        0-255 ``[T, 3, S, S]`` float32 (the training's resize; normalisation is inside the graph)."""
        frames = frames[None] if frames.ndim == 3 else frames
        size = (self.image_size, self.image_size)
        picks = sample_frames(len(frames), self.frames)
        resized = [cv2.resize(frames[i], size, interpolation=cv2.INTER_LINEAR) for i in picks]
        return np.ascontiguousarray(np.stack(resized).transpose(0, 3, 1, 2), dtype=np.float32)

    def relevance(self, frames: np.ndarray) -> np.ndarray:
        """``[S, S]`` relevance in [0, 1] of an event: the max over its sampled frames."""
        out = self.backend.run(GRAPH, self.network_input(frames))
        return np.asarray(next(iter(out.values())), np.float32).max(axis=0)[0]

    def decide(self, relevance: np.ndarray, motion: MotionResult, motion_fraction: float | None = None) -> EventResult:
        """Region scores, relevant flags and the alert from a relevance map and a motion result."""
        decision = decide_regions(relevance, motion.labels, [r.id for r in motion.regions], self.region_threshold)
        regions = [{**r.to_dict(), "score": round(score, 6), "relevant": bool(relevant)}
                   for r, score, relevant in zip(motion.regions, decision.scores, decision.relevant, strict=True)]
        fraction = motion.motion_fraction if motion_fraction is None else motion_fraction
        return EventResult(regions=regions, decision=decision, relevance=relevance, motion_fraction=fraction)

    def predict(self, frames: np.ndarray, motion: MotionResult) -> EventResult:
        """The decision on one event: ``frames`` ``[T, H, W, 3]`` RGB uint8, ``motion`` its stage-1 result."""
        return self.decide(self.relevance(frames), motion)

    def motion(self, frames: np.ndarray, sequence: tuple[Path, ...] | None = None) -> MotionResult:
        """Stage 1 on an event; a cut sequence's events use the background of the whole sequence."""
        if sequence is None:
            return self.detector.detect(frames)
        if sequence not in self._backgrounds:
            picks = np.unique(np.linspace(0, len(sequence) - 1, min(len(sequence), self.background_frames))
                              .round().astype(int))
            self._backgrounds[sequence] = self.detector.background(read_frames([sequence[i] for i in picks]))
        masks = self.detector.frame_masks(frames, background=self._backgrounds[sequence])
        labels, regions = self.detector.regions(masks.any(axis=0))
        return MotionResult(frame_masks=masks, mask=labels > 0, labels=labels, regions=regions)

    # -- inputs ----------------------------------------------------------------------------------
    def discover(self, paths: Sequence[Path]) -> list[Event]:
        events: list[Event] = []
        for path in paths:
            found = self._discover_file(path) if path.is_file() else self._discover_folder(path)
            if not found:
                raise DataError(f"no events under {path}: expected <camera>/<event_id>/ folders of frames, one "
                                "event folder, a <camera>/input/ sequence, a .zip of frames or a video")
            events.extend(found)
        ids = [e.event_id for e in events]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise DataError(f"event ids repeat across the inputs: {repeated[:5]}; give each root once")
        return events

    def _discover_file(self, path: Path) -> list[Event]:
        suffix = path.suffix.lower()
        if suffix == ".zip" or suffix in VIDEO_EXTENSIONS:
            return [Event(path.stem, path.parent.name, archive=path)]
        if suffix in IMAGE_EXTENSIONS:
            raise DataError(f"{path}: one image is not an event (motion is a change between frames): give the "
                            "event's folder, a .zip of its frames or a video")
        raise DataError(f"{path}: not an event (expected a folder of frames, a .zip or a video)")

    def _events_in(self, folder: Path, camera: str, event_id: str) -> list[Event]:
        """A folder of frames: one event, or with ``sequence=true`` a sequence cut into events."""
        frames = list_images(folder)
        if not frames:
            return []
        if self.options["sequence"]:
            return cut_sequence(frames, self.event_frames, event_id, camera)
        if len(frames) < 2:
            raise DataError(f"event folder {folder} has one frame; an event needs at least 2")
        return [Event(event_id, camera, frames)]

    def _discover_folder(self, root: Path) -> list[Event]:
        if (root / "input").is_dir():  # a camera folder holding a CDnet-style sequence
            return cut_sequence(list_images(root / "input"), self.event_frames, f"{root.name}/input", root.name)
        own = self._events_in(root, root.parent.name, f"{root.parent.name}/{root.name}")
        if own:
            return own
        events: list[Event] = []
        for cam in _subdirs(root):
            if (cam / "input").is_dir():
                events += cut_sequence(list_images(cam / "input"), self.event_frames, f"{cam.name}/input", cam.name)
                continue
            # a folder of frames under the root: the root is a camera folder and this one of its events
            found = self._events_in(cam, root.name, f"{root.name}/{cam.name}")
            if not found:
                for folder in _subdirs(cam):
                    found += self._events_in(folder, cam.name, f"{cam.name}/{folder.name}")
            events += found
        # the events root's labels.csv, or the one above when a camera folder was given
        found_labels = [f for f in (root / "labels.csv", root.parent / "labels.csv") if f.is_file()]
        labels = read_labels(found_labels[0]) if found_labels else {}
        for event in events:
            event.label = labels.get(event.event_id)
        return events

    def read_event(self, event: Event) -> np.ndarray:
        if event.archive is None:
            return read_frames(event.frames)
        if event.archive.suffix.lower() == ".zip":
            return frames_from_zip(event.archive.read_bytes(), str(event.archive))
        return frames_from_video(event.archive, str(event.archive), int(self.options["max_frames"]))

    # -- outputs ---------------------------------------------------------------------------------
    def predict_item(self, item: Event) -> ItemResult:
        frames = self.read_event(item)
        motion = self.motion(frames, item.sequence)
        result = self.predict(frames, motion)
        row = PredictionRow(
            item_id=item.event_id, group=item.camera,
            label=CLASSES[item.label] if item.label is not None else None,
            pred=CLASSES[int(result.alert)],
            # the event alerts exactly when its highest region score is above region_threshold
            scores={CLASSES[0]: 1.0 - result.event_score, CLASSES[1]: result.event_score},
            extras={"camera": item.camera, "frames": len(frames), "num_regions": result.num_regions,
                    "num_relevant": result.num_relevant, "alert": int(result.alert),
                    "region_scores": ";".join(f"{r['score']:.3f}" for r in result.regions),
                    "region_boxes": ";".join(" ".join(str(v) for v in r["box"]) for r in result.regions),
                    "motion_fraction": round(result.motion_fraction, 6)},
        )
        pictures = {}
        if self.options["pictures"]:
            name = item.event_id.replace("/", "__").replace("@", "_") + ".png"
            pictures[name] = self.picture(frames, motion.mask, result)
        return ItemResult(rows=[row], pictures=pictures)

    def picture(self, frames: np.ndarray, motion_mask: np.ndarray, result: EventResult) -> np.ndarray:
        """The event's middle frame: motion detection | relevance (green relevant, red irrelevant)."""
        frame = frames[len(frames) // 2]
        scale = min(1.0, PICTURE_SIDE / max(frame.shape[:2]))
        moving = motion_mask.astype(np.uint8)
        if scale < 1.0:
            size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            moving = cv2.resize(moving, size, interpolation=cv2.INTER_NEAREST)
        boxes = scaled_boxes(result.regions, scale)
        panels = [motion_panel(frame, moving, boxes), relevance_panel(frame, result.relevance, boxes, result.decision)]
        return titled_grid([panels], ("motion detection", "relevance"))

    def summary(self, rows: list[PredictionRow]) -> dict[str, Any]:
        alerts = sum(int(r.extras["alert"]) for r in rows)
        out: dict[str, Any] = {"events": len(rows), "alerts": alerts,
                               "alert_fraction": round(alerts / len(rows), 4) if rows else 0.0,
                               "regions": sum(int(r.extras["num_regions"]) for r in rows),
                               "relevant_regions": sum(int(r.extras["num_relevant"]) for r in rows),
                               "region_threshold": self.region_threshold, "frames_per_event": self.frames}
        labelled = [r for r in rows if r.label is not None]
        if labelled:
            out["labelled_events"] = len(labelled)
            out["alert_accuracy"] = round(sum(r.label == r.pred for r in labelled) / len(labelled), 4)
        return out

    def predict_bytes(self, data: bytes, filename: str) -> dict[str, Any]:
        """One event uploaded as a ``.zip`` of its frames (name order) or a short video; a single image
        is refused (motion needs at least two frames)."""
        suffix = Path(filename or "").suffix.lower()
        if not data:
            raise DataError(f"{filename or 'upload'}: empty upload")
        if suffix in IMAGE_EXTENSIONS:
            raise DataError(f"{filename}: one image is not an event; upload a .zip of the event's frames or a video")
        if suffix == ".zip" or data[:4] == b"PK\x03\x04":
            frames = frames_from_zip(data, filename or "upload")
        else:
            frames = frames_from_video(data, filename or "upload", int(self.options["max_frames"]))
        result = self.predict(frames, self.detector.detect(frames))
        return {"event": filename, "frames": len(frames), "pred": CLASSES[int(result.alert)], **result.to_dict(),
                "region_threshold": self.region_threshold}


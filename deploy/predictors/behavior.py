"""Behavior predictor: tail events found in long videos of any length.

A video is cut into windows of the run's typical event length (``window_s``, default the training
events' median length) every ``stride_s`` seconds. Each window is scored as the run scores an event:
``clips_per_event`` TTA clips of ``frames_per_clip`` frames spread over it (``datamodules.video``'s
``clip_indices``/``tta_positions``), their tail probabilities aggregated (``aggregation``: mean | max |
vote). Windows at or above ``threshold`` are merged into events, joined when less than ``min_gap_s``
apart: one row per event (``start_s``, ``end_s``, ``score`` = the peak window score), or one ``none``
row for a video without any, plus a timeline picture per video; ``summary.json`` keeps every window's
score (``window_scores``).

The video is decoded once, front to back, with PyAV. A frame is kept only while a window that is still
open needs it and a window is scored as soon as its last frame is decoded, so the frames held at any
time are those of the few overlapping windows (``window_s / stride_s`` of them): memory does not grow
with the video's length (``frames_held_max`` in the results says how many were held).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datamodules.video import (
    VideoInfo,
    clip_indices,
    event_frame_range,
    probe_video,
    stride_for_fps,
    tta_positions,
)
from deploy.predictors.base import ItemResult, Predictor, find_videos, uploaded_video
from suite.contracts import PredictionRow
from suite.errors import ConfigError, DataError

AGGREGATIONS = ("mean", "max", "vote")


def aggregate_views(probs: np.ndarray, aggregation: str = "mean", threshold: float = 0.5) -> np.ndarray:
    """``lightning_modules.tta.aggregate_tta`` for ``[N, K]`` positive-class probabilities, in numpy: the
    ONNX path runs without torch (tests/deploy/predictors check that both agree)."""
    if aggregation == "mean":
        return probs.mean(axis=1)
    if aggregation == "max":
        return probs.max(axis=1)
    if aggregation == "vote":
        return (probs >= threshold).astype(np.float32).mean(axis=1)
    raise ConfigError(f"aggregation must be one of {AGGREGATIONS}, got '{aggregation}'")


@dataclass
class Window:
    """One scoring window: seconds, the frame indices of its TTA clips, and its score once scored."""

    start_s: float
    end_s: float
    clips: list[list[int]]
    score: float | None = None

    @property
    def first(self) -> int:
        return min(i for clip in self.clips for i in clip)

    @property
    def last(self) -> int:
        return max(i for clip in self.clips for i in clip)


@dataclass
class Timeline:
    """What a video gave: its windows' scores over time and the events merged from them."""

    video: Path
    info: VideoInfo
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    events: list[dict[str, float]] = field(default_factory=list)
    frames_decoded: int = 0
    frames_held_max: int = 0


def window_starts(duration_s: float, window_s: float, stride_s: float) -> Iterator[float]:
    """Window starts every ``stride_s`` while a whole window fits, then one window ending at the video's end
    so that its tail is covered; a video shorter than a window is one window."""
    if duration_s <= window_s:
        yield 0.0
        return
    count = int(math.floor((duration_s - window_s) / stride_s + 1e-9)) + 1
    for i in range(count):
        yield round(i * stride_s, 6)
    last = (count - 1) * stride_s
    if last + window_s < duration_s - 1e-6:
        yield round(duration_s - window_s, 6)


def merge_events(starts: Sequence[float], ends: Sequence[float], scores: Sequence[float], threshold: float,
                 min_gap_s: float) -> list[dict[str, float]]:
    """Runs of consecutive windows (in time order) at or above ``threshold`` become events spanning their
    windows; a run is joined to the previous event when it starts less than ``min_gap_s`` after that event's
    end (overlapping windows count as a negative gap). A window below the threshold ends a run, so two runs
    split by one low window stay two events unless ``min_gap_s`` joins them. Each event: start_s, end_s,
    score (peak window), mean_score, windows."""
    events: list[dict[str, Any]] = []
    previous_high = False
    for start, end, score in zip(starts, ends, scores, strict=True):
        high = score >= threshold
        if high and events and (previous_high or start - events[-1]["end_s"] < min_gap_s):
            events[-1]["end_s"] = max(events[-1]["end_s"], end)
            events[-1]["_scores"].append(score)
        elif high:
            events.append({"start_s": start, "end_s": end, "_scores": [score]})
        previous_high = high
    out = []
    for event in events:
        values = event.pop("_scores")
        out.append({"start_s": round(event["start_s"], 3), "end_s": round(event["end_s"], 3),
                    "score": round(max(values), 6), "mean_score": round(float(np.mean(values)), 6),
                    "windows": len(values)})
    return out


class BehaviorPredictor(Predictor):
    """Sliding TTA windows over long videos -> tail events with a timeline per video (module docstring)."""

    task = "behavior"
    #: None = the run's value (``window_s``: its event length, ``stride_s``: half of it, ``threshold``: its own)
    defaults: ClassVar[dict[str, Any]] = {"window_s": None, "stride_s": None, "threshold": None, "min_gap_s": 0.0}

    def __init__(self, backend: Any, options: dict[str, Any] | None = None):
        super().__init__(backend, options)
        run = dict(self.meta.get("options") or {})
        self.aggregation = str(run.get("aggregation", "mean"))
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"the bundle's aggregation '{self.aggregation}' is not one of {AGGREGATIONS}")
        self.clips_per_event = int(run.get("clips_per_event") or 5)
        shape = self.meta["graphs"]["model"]["input_shape"]  # [N, T, 3, H, W]
        self.frames_per_clip = int(run.get("frames_per_clip") or shape[1])
        self.image_size = int(run.get("image_size") or shape[3])
        self.target_fps = run.get("target_fps")
        self.positive = int(run.get("positive", 1))
        opts = self.options
        opts["window_s"] = self._seconds("window_s", opts["window_s"], run.get("event_s"))
        opts["stride_s"] = self._seconds("stride_s", opts["stride_s"], run.get("stride_s") or opts["window_s"] / 2)
        opts["threshold"] = self._number("threshold", opts["threshold"], run.get("threshold", 0.5))
        opts["min_gap_s"] = self._number("min_gap_s", opts["min_gap_s"], 0.0)
        if not 0.0 <= opts["threshold"] <= 1.0 or opts["min_gap_s"] < 0:
            raise ConfigError(f"threshold must be in [0, 1] and min_gap_s >= 0 (got threshold={opts['threshold']}, "
                              f"min_gap_s={opts['min_gap_s']})")
        self._picture_names: set[str] = set()
        self.last_timeline: Timeline | None = None
        # every video's window scores for summary.json (a few floats per window: small for any length)
        self._windows: dict[str, dict[str, list[float]]] = {}

    @staticmethod
    def _number(key: str, value: Any, fallback: Any) -> float:
        chosen = fallback if value is None or value == "" else value
        try:
            return float(chosen)
        except (TypeError, ValueError):
            raise ConfigError(f"predict option {key}={value!r}: expected a number") from None

    def _seconds(self, key: str, value: Any, fallback: Any) -> float:
        if (value is None or value == "") and fallback is None:
            raise ConfigError(f"the bundle does not record the run's event length: give {key}=<seconds>")
        seconds = self._number(key, value, fallback)
        if seconds <= 0:
            raise ConfigError(f"predict option {key} must be > 0 seconds, got {seconds}")
        return seconds

    # -- inputs ----------------------------------------------------------------------------------------------
    def discover(self, paths: Sequence[Path]) -> list[Path]:
        return find_videos(paths)

    # -- windows ---------------------------------------------------------------------------------------------
    def windows(self, info: VideoInfo) -> Iterator[Window]:
        """The video's windows in order of start, each with the frame indices of its TTA clips."""
        stride = stride_for_fps(info.fps, self.target_fps)
        window_s, stride_s = self.options["window_s"], self.options["stride_s"]
        for start_s in window_starts(info.duration_s, window_s, stride_s):
            end_s = min(start_s + window_s, info.duration_s)
            first, end = event_frame_range(info, start_s, end_s)
            clips = [clip_indices(first, end, self.frames_per_clip, stride, p)
                     for p in tta_positions(self.clips_per_event)]
            yield Window(start_s, end_s, clips)

    def score_windows(self, path: Path) -> Timeline:
        """Decode ``path`` once and score every window as soon as its frames are in (module docstring)."""
        info = probe_video(path)
        timeline = Timeline(path, info)
        pending = self.windows(info)
        upcoming = next(pending, None)
        open_windows: list[Window] = []
        held: dict[int, np.ndarray] = {}
        needed: dict[int, int] = {}  # frame index -> open windows needing it

        def open_until(index: int) -> None:
            nonlocal upcoming
            while upcoming is not None and upcoming.first <= index:
                open_windows.append(upcoming)
                for i in {i for clip in upcoming.clips for i in clip}:
                    needed[i] = needed.get(i, 0) + 1
                upcoming = next(pending, None)

        def close(window: Window, frames: dict[int, np.ndarray], last: np.ndarray | None = None) -> None:
            self._score(window, frames, last)
            timeline.starts.append(window.start_s)
            timeline.ends.append(window.end_s)
            timeline.scores.append(float(window.score))
            for i in {i for clip in window.clips for i in clip}:
                needed[i] -= 1
                if not needed[i]:
                    del needed[i]
                    held.pop(i, None)

        last_index, previous = -1, None
        for index, frame in _decode(path):
            timeline.frames_decoded += 1
            if index <= last_index:
                continue  # a repeated timestamp: the first frame shown at that index is kept
            open_until(index)
            for skipped in range(last_index + 1, index):  # timestamps that skip: the frame shown meanwhile
                if skipped in needed and previous is not None:
                    held[skipped] = self._rgb(previous)
            if index in needed:
                held[index] = self._rgb(frame)
            last_index, previous = index, frame
            timeline.frames_held_max = max(timeline.frames_held_max, len(held))
            while open_windows and open_windows[0].last <= last_index:
                close(open_windows.pop(0), held)
            if upcoming is None and not open_windows:
                break
        if previous is None:
            raise DataError(f"no frames could be decoded from {path}")
        # a header that promised more frames than decode: the last frame stands in for the missing ones
        open_until(info.num_frames)
        last = self._rgb(previous) if open_windows else None
        for window in open_windows:
            close(window, held, last)
        return timeline

    def _rgb(self, frame: Any) -> np.ndarray:
        # the same swscale call as datamodules.video.read_frames(size=...): the frames the run was tested on
        return frame.reformat(width=self.image_size, height=self.image_size, format="rgb24").to_ndarray()

    def _score(self, window: Window, held: dict[int, np.ndarray], last: np.ndarray | None) -> None:
        """Score one window; ``last`` (the video's last frame) stands in for frames past the decoded end."""
        def frame(i: int) -> np.ndarray:
            if i in held:
                return held[i]
            earlier = [k for k in held if k <= i]
            if earlier:
                return held[max(earlier)]
            if last is None:
                raise DataError(f"frame {i} of a window was never decoded")
            return last

        clips = np.stack([np.stack([frame(i) for i in clip]) for clip in window.clips])  # [K, T, H, W, 3]
        batch = clips.transpose(0, 1, 4, 2, 3).astype(np.float32)  # [K, T, 3, H, W], RGB 0-255
        probs = self.backend.run("model", batch)["scores"][:, self.positive]
        window.score = float(aggregate_views(probs[None], self.aggregation, self.options["threshold"])[0])

    # -- outputs ---------------------------------------------------------------------------------------------
    def predict_item(self, item: Path) -> ItemResult:
        timeline = self.score_windows(item)
        timeline.events = merge_events(timeline.starts, timeline.ends, timeline.scores, self.options["threshold"],
                                       self.options["min_gap_s"])
        self.last_timeline = timeline
        self._windows[str(item)] = {"start_s": timeline.starts, "score": [round(p, 6) for p in timeline.scores]}
        rows = self._rows(timeline, str(item))
        return ItemResult(rows, {self._picture_name(item): draw_timeline(timeline, self.options["threshold"])})

    def _picture_name(self, item: Path) -> str:
        name, n = f"{item.stem}_timeline.png", 1
        while name in self._picture_names:
            n += 1
            name = f"{item.stem}_{n}_timeline.png"
        self._picture_names.add(name)
        return name

    def _rows(self, timeline: Timeline, video: str) -> list[PredictionRow]:
        classes = self.class_names()
        tail, normal = classes[self.positive], classes[1 - self.positive]
        duration = round(timeline.info.duration_s, 3)
        name = Path(video).name
        if not timeline.events:  # one row all the same, so every video is in predictions.csv
            peak = max(timeline.scores)
            return [PredictionRow(item_id=f"{name}#none", group=video, pred=normal, scores={normal: 1.0 - peak,
                                                                                            tail: peak},
                                  extras={"event": "", "start_s": 0.0, "end_s": duration, "score": round(peak, 6),
                                          "mean_score": round(float(np.mean(timeline.scores)), 6),
                                          "windows": len(timeline.scores), "duration_s": duration})]
        return [PredictionRow(item_id=f"{name}#{k}", group=video, pred=tail,
                              scores={normal: 1.0 - event["score"], tail: event["score"]},
                              extras={"event": k, **event, "duration_s": duration})
                for k, event in enumerate(timeline.events)]

    def summary(self, rows: list[PredictionRow]) -> dict[str, Any]:
        events = [{"video": r.group, "start_s": r.extras["start_s"], "end_s": r.extras["end_s"],
                   "score": r.extras["score"]} for r in rows if r.extras.get("event") != ""]
        return {"events": len(events), "event_seconds": round(sum(e["end_s"] - e["start_s"] for e in events), 3),
                "event_list": events, "window_scores": {video: self._windows[video] for video in
                                                        dict.fromkeys(r.group for r in rows) if video in self._windows}}

    def predict_bytes(self, data: bytes, filename: str) -> dict[str, Any]:
        """One uploaded video: its events and window scores (the service enforces size limits)."""
        with uploaded_video(data, filename) as path:
            timeline = self.score_windows(path)
        events = merge_events(timeline.starts, timeline.ends, timeline.scores, self.options["threshold"],
                              self.options["min_gap_s"])
        return {"task": self.task, "filename": filename, "duration_s": round(timeline.info.duration_s, 3),
                "events": events,
                "windows": [{"start_s": s, "end_s": round(e, 3), "score": round(p, 6)}
                            for s, e, p in zip(timeline.starts, timeline.ends, timeline.scores, strict=True)],
                "options": dict(self.options)}


def _decode(path: Path) -> Iterator[tuple[int, Any]]:
    """``(frame index, av.VideoFrame)`` front to back; the index from the timestamp as
    ``datamodules.video.read_frames`` numbers frames (decode order when a stream has no timestamps)."""
    import av

    from datamodules.video import _open  # its DataErrors name the file

    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        start_pts = stream.start_time or 0
        decoded = 0
        for frame in container.decode(stream):
            if frame.pts is None or not fps:
                index = decoded
            else:
                index = int(round(float((frame.pts - start_pts) * stream.time_base) * fps))
            decoded += 1
            yield index, frame
    except av.error.FFmpegError as err:
        raise DataError(f"cannot decode video (corrupt): {path} ({err})") from None
    finally:
        container.close()


def draw_timeline(timeline: Timeline, threshold: float, width: int = 900, height: int = 220) -> np.ndarray:
    """Score over time (window centres), the threshold, detected events shaded: RGB uint8, drawn with OpenCV
    (no plotting library on the device)."""
    import cv2

    left, right, top, bottom = 48, 12, 24, 30
    img = np.full((height, width, 3), 255, np.uint8)
    duration = max(timeline.info.duration_s, 1e-6)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> int:
        return left + int(round(t / duration * plot_w))

    def y(p: float) -> int:
        return top + int(round((1.0 - p) * plot_h))

    for event in timeline.events:  # filled, with a border so that events that touch stay two
        cv2.rectangle(img, (x(event["start_s"]), top), (x(event["end_s"]), top + plot_h), (255, 205, 160), -1)
        cv2.rectangle(img, (x(event["start_s"]), top), (x(event["end_s"]), top + plot_h), (230, 140, 60), 1)
    cv2.rectangle(img, (left, top), (left + plot_w, top + plot_h), (0, 0, 0), 1)
    cv2.line(img, (left, y(threshold)), (left + plot_w, y(threshold)), (200, 0, 0), 1, cv2.LINE_AA)
    centres = [(s + e) / 2 for s, e in zip(timeline.starts, timeline.ends, strict=True)]
    points = np.array([[x(t), y(p)] for t, p in zip(centres, timeline.scores, strict=True)], np.int32)
    if len(points) > 1:
        cv2.polylines(img, [points], False, (30, 30, 160), 2, cv2.LINE_AA)
    for px, py in points:
        cv2.circle(img, (int(px), int(py)), 2, (30, 30, 160), -1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for p in (0.0, 0.5, 1.0):
        cv2.putText(img, f"{p:.1f}", (8, y(p) + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    ticks = max(1, int(duration // 8) or 1)
    for t in range(0, int(duration) + 1, ticks):
        cv2.line(img, (x(t), top + plot_h), (x(t), top + plot_h + 4), (0, 0, 0), 1)
        cv2.putText(img, f"{t}s", (x(t) - 8, height - 10), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    title = f"{timeline.video.name}: tail score per window, {len(timeline.events)} event(s) (threshold {threshold:g})"
    cv2.putText(img, title, (left, 16), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img

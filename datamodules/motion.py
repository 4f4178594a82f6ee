"""Stage 1 of the relevance task: the frames of one event -> motion masks and motion regions.

The background is the per-pixel median of the *least active* frames of the event (activity =
box-filtered absolute frame difference). A plain temporal median fails when an object stands
still for more than half of the frames (it becomes background, see SBI2015 ``CaVignal``);
picking, per block, the frames in which nothing moves there keeps such an object out. Frames are
then compared with the background after a global brightness compensation (so a light switched
on is not motion), thresholded on the largest colour-channel difference, cleaned with morphology
and split into connected components (regions).

All work runs at ``max_side`` resolution with OpenCV per frame (single-pass C loops) and numpy
along the time axis; the masks are scaled back to the frames' size. Results are
cached per event (:class:`MotionCache`), keyed by the frame files and the detector's settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datamodules.images import read_image
from suite.errors import DataError


@dataclass
class Region:
    """One connected motion region, in the frames' pixel coordinates."""

    id: int
    box: tuple[int, int, int, int]  # x, y, width, height
    area: int
    centroid: tuple[float, float]  # x, y

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MotionResult:
    """``frame_masks`` [T, H, W] bool; ``mask`` their union; ``labels`` [H, W] region ids (0 = none)."""

    frame_masks: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    regions: list[Region] = field(default_factory=list)

    @property
    def motion_fraction(self) -> float:
        return float(self.mask.mean())

    def to_dict(self) -> dict[str, Any]:
        return {"motion_fraction": self.motion_fraction, "regions": [r.to_dict() for r in self.regions]}


def _odd(k: int) -> int:
    return k if k % 2 == 1 else k + 1


class MotionDetector:
    """Background subtraction against the event's own low-activity background.

    ``threshold``: largest colour-channel difference (0-255) that counts as motion.
    ``blur``: Gaussian kernel applied to frames and background before differencing (0 = none).
    ``open_kernel``/``close_kernel``: morphology that removes specks / fills holes (0 = none).
    ``activity_kernel``/``activity_gap``: box size and frame gap of the activity measure.
    ``background_fraction``: share of the least active frames whose median is the background.
    ``min_area_fraction``: regions smaller than this share of the frame are dropped.
    ``max_frame_coverage``: a frame whose mask covers more than this is a global change
    (camera gain, lights), not motion, and is cleared.
    ``max_side``: frames are processed with their longer side scaled down to this (null = as is).
    """

    def __init__(
        self,
        threshold: int = 30,
        blur: int = 5,
        open_kernel: int = 3,
        close_kernel: int = 7,
        activity_kernel: int = 15,
        activity_gap: int = 2,
        background_fraction: float = 0.3,
        min_area_fraction: float = 0.0005,
        max_frame_coverage: float = 0.7,
        compensate_brightness: bool = True,
        max_side: int | None = 320,
    ):
        if not 0 < threshold < 255:
            raise ValueError(f"motion.threshold must be in (0, 255), got {threshold}")
        if not 0.0 < background_fraction <= 1.0:
            raise ValueError(f"motion.background_fraction must be in (0, 1], got {background_fraction}")
        self.threshold = threshold
        self.blur = blur
        self.open_kernel = open_kernel
        self.close_kernel = close_kernel
        self.activity_kernel = activity_kernel
        self.activity_gap = activity_gap
        self.background_fraction = background_fraction
        self.min_area_fraction = min_area_fraction
        self.max_frame_coverage = max_frame_coverage
        self.compensate_brightness = compensate_brightness
        self.max_side = max_side

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    # -- stack helpers -------------------------------------------------------------------
    def _work_size(self, height: int, width: int) -> tuple[int, int]:
        if not self.max_side or max(height, width) <= self.max_side:
            return height, width
        scale = self.max_side / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    @staticmethod
    def _as_stack(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            stack = frames
        else:
            frames = list(frames)
            if not frames:
                raise DataError("motion detection needs at least 2 frames, got none")
            shapes = {f.shape for f in frames}
            if len(shapes) > 1:
                raise DataError(f"frames of one event differ in size: {sorted(shapes)}")
            stack = np.stack(frames)
        if stack.ndim != 4 or stack.shape[-1] != 3:
            raise DataError(f"expected RGB frames [T, H, W, 3], got shape {stack.shape}")
        if len(stack) < 2:
            raise DataError(f"motion detection needs at least 2 frames, got {len(stack)}")
        return np.ascontiguousarray(stack, dtype=np.uint8)

    @staticmethod
    def _resize_stack(stack: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
        """[T, H, W, C] -> [T, height, width, C]; one call per frame (area resizing takes <= 4 channels)."""
        if stack.shape[1:3] == (height, width):
            return stack
        out = [cv2.resize(frame, (width, height), interpolation=interpolation) for frame in stack]
        return np.stack([o[:, :, None] if o.ndim == 2 else o for o in out])

    # -- background ----------------------------------------------------------------------
    def background(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Per-pixel median of the least active frames, [H, W, 3] uint8 at the frames' size."""
        stack = self._as_stack(frames)
        height, width = stack.shape[1:3]
        work = self._resize_stack(stack, *self._work_size(height, width), cv2.INTER_AREA)
        return self._resize_stack(self._background(work)[None], height, width, cv2.INTER_LINEAR)[0]

    def _background(self, work: np.ndarray) -> np.ndarray:
        t, h, w, _ = work.shape
        gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in work])
        gap = max(1, min(self.activity_gap, t - 1))
        step = cv2.absdiff(gray[gap:].reshape(-1, w), gray[:-gap].reshape(-1, w)).reshape(t - gap, h, w)
        # a frame is active where it differs from the frame before *or* after it
        activity = np.zeros_like(gray)
        activity[gap:] = step
        activity[:-gap] = np.maximum(activity[:-gap], step)
        k = _odd(max(1, self.activity_kernel))
        # per-block choice on a 4x coarser grid: the box filter already pools that far
        coarse = np.stack([cv2.blur(a, (k, k))[::4, ::4] for a in activity])
        n = max(1, int(round(t * self.background_fraction)))
        if n < t:
            kth = np.partition(coarse, n - 1, axis=0)[n - 1]
            chosen = (coarse <= kth[None]).astype(np.uint8)
        else:
            chosen = np.ones_like(coarse)
        # mean of the chosen frames: they are the still ones, so mean and median agree, and a
        # weighted mean needs no per-pixel sort
        total = np.zeros((h, w, 3), np.float32)
        count = np.zeros((h, w), np.float32)
        for frame, pick in zip(work, chosen, strict=True):
            full = pick.repeat(4, axis=0).repeat(4, axis=1)[:h, :w]
            cv2.accumulate(frame, total, mask=full)
            count += full
        return cv2.convertScaleAbs(total / np.maximum(count, 1.0)[..., None])

    # -- detection -----------------------------------------------------------------------
    def frame_masks(
        self, frames: np.ndarray | Sequence[np.ndarray], background: np.ndarray | None = None
    ) -> np.ndarray:
        """[T, H, W] bool motion masks; ``background`` (from :meth:`background`) defaults to the event's own."""
        stack = self._as_stack(frames)
        t, height, width = stack.shape[:3]
        wh, ww = self._work_size(height, width)
        work = self._resize_stack(stack, wh, ww, cv2.INTER_AREA)
        if background is None:
            bg = self._background(work)
        else:
            if background.shape != stack.shape[1:]:
                raise DataError(f"background {background.shape} does not match the frames {stack.shape[1:]}")
            bg = self._resize_stack(background[None], wh, ww, cv2.INTER_AREA)[0]
        if self.compensate_brightness:
            # robust global shift per frame and channel (median over a sparse grid of pixels),
            # applied to the background so the frames stay uint8
            grid = work[:, ::8, ::8].reshape(t, -1, 3).astype(np.int16) - bg[::8, ::8].reshape(1, -1, 3)
            shifts = np.median(grid, axis=1).round()
        kb = _odd(self.blur) if self.blur else 0
        open_k = np.ones((self.open_kernel, self.open_kernel), np.uint8) if self.open_kernel else None
        close_k = np.ones((self.close_kernel, self.close_kernel), np.uint8) if self.close_kernel else None
        limit = self.max_frame_coverage * wh * ww
        masks = np.zeros((t, height, width), bool)
        for i, frame in enumerate(work):
            ref = cv2.add(bg, tuple(float(v) for v in shifts[i]) + (0.0,)) if self.compensate_brightness else bg
            diff = cv2.absdiff(frame, ref)
            diff = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])
            if kb:
                # blurring the difference (one channel) instead of frame and background (three each)
                diff = cv2.GaussianBlur(diff, (kb, kb), 0)
            mask = cv2.threshold(diff, self.threshold, 1, cv2.THRESH_BINARY)[1]
            if open_k is not None:
                mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, open_k)
            if close_k is not None:
                mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, close_k)
            if cv2.countNonZero(mask) > limit:
                continue  # a global change (lights, camera gain), not motion
            if (wh, ww) != (height, width):
                mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
            masks[i] = mask.view(bool)
        return masks

    def regions(self, mask: np.ndarray) -> tuple[np.ndarray, list[Region]]:
        """Connected components of ``mask`` above the minimum area -> (label image, regions)."""
        count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        min_area = self.min_area_fraction * mask.size
        keep = np.zeros(count, np.int32)
        regions: list[Region] = []
        for i in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area < min_area:
                continue
            keep[i] = len(regions) + 1
            regions.append(Region(id=len(regions) + 1, box=(x, y, w, h), area=area,
                                  centroid=(float(centroids[i][0]), float(centroids[i][1]))))
        return keep[labels], regions

    def detect(self, frames: np.ndarray | Sequence[np.ndarray]) -> MotionResult:
        frame_masks = self.frame_masks(frames)
        union = frame_masks.any(axis=0)
        labels, regions = self.regions(union)
        return MotionResult(frame_masks=frame_masks, mask=labels > 0, labels=labels, regions=regions)


def read_frames(paths: Sequence[str | Path]) -> np.ndarray:
    """[T, H, W, 3] RGB uint8; frames of different sizes are an error naming both files."""
    frames = []
    for path in paths:
        frame = read_image(path)
        if frames and frame.shape != frames[0].shape:
            raise DataError(
                f"frames of one event differ in size: {paths[0]} is {frames[0].shape[1]}x{frames[0].shape[0]}, "
                f"{path} is {frame.shape[1]}x{frame.shape[0]}"
            )
        frames.append(frame)
    if len(frames) < 2:
        where = Path(paths[0]).parent if paths else "an event"
        raise DataError(f"event {where} has {len(frames)} frame(s); motion detection needs at least 2")
    return np.stack(frames)


class MotionCache:
    """Motion results on disk, one ``.npz`` per event and detector setting.

    The key covers the frame files (path, size, mtime) and the detector's settings, so a changed
    frame or threshold recomputes; writes are atomic (temp file + rename).
    """

    def __init__(self, cache_dir: str | Path | None, detector: MotionDetector):
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.detector = detector

    def key(self, paths: Sequence[str | Path], context: str = "") -> str:
        items = []
        for p in paths:
            st = Path(p).stat()
            items.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
        blob = json.dumps({"frames": items, "detector": self.detector.settings(), "context": context, "v": 1},
                          sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()

    def get(self, paths: Sequence[str | Path], frames: np.ndarray | None = None,
            background: Callable[[], np.ndarray] | None = None, context: str = "") -> MotionResult:
        """The event's result from the cache, or computed and stored.

        ``background`` (called only on a miss) gives a background from outside the event, e.g. of
        the whole sequence an event was cut from; ``context`` must then identify it in the key.
        """
        path = self.cache_dir / f"{self.key(paths, context)}.npz" if self.cache_dir else None
        if path is not None and path.is_file():
            try:
                with np.load(path) as data:
                    t, h, w = (int(v) for v in data["shape"])
                    masks = np.unpackbits(data["masks"], count=t * h * w).reshape(t, h, w).astype(bool)
                    regions = [Region(id=int(r[0]), box=tuple(int(v) for v in r[1:5]), area=int(r[5]),
                                      centroid=(float(r[6]), float(r[7]))) for r in data["regions"]]
                    return MotionResult(frame_masks=masks, mask=data["labels"] > 0, labels=data["labels"],
                                        regions=regions)
            except (OSError, KeyError, ValueError):
                path.unlink(missing_ok=True)  # a damaged entry is recomputed
        frames = read_frames(paths) if frames is None else frames
        if background is None:
            result = self.detector.detect(frames)
        else:
            masks = self.detector.frame_masks(frames, background=background())
            labels, regions = self.detector.regions(masks.any(axis=0))
            result = MotionResult(frame_masks=masks, mask=labels > 0, labels=labels, regions=regions)
        if path is not None:
            self._write(path, result)
        return result

    @staticmethod
    def _write(path: Path, result: MotionResult) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        regions = np.array([[r.id, *r.box, r.area, *r.centroid] for r in result.regions], np.float64).reshape(-1, 8)
        tmp = path.with_name(path.name + f".{np.random.randint(1 << 30)}.tmp.npz")
        np.savez_compressed(tmp, shape=np.array(result.frame_masks.shape), masks=np.packbits(result.frame_masks),
                            labels=result.labels.astype(np.int32), regions=regions)
        tmp.replace(path)

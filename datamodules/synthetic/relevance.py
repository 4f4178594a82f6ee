"""Synthetic motion events in the relevance task's user layout ``root/<camera>/<event_id>/*.jpg``.

Each camera is fixed and looks at its own textured scene. A *relevant* event has an object (a
patterned blob, by default 25-40 % of the frame's shorter side; ``object_size=[low, high]`` sets that
range, e.g. ``[0.06, 0.1]`` for small far-away objects) crossing the scene, sometimes with a
distractor; an *irrelevant* event holds only distractors: a global illumination change, a flickering
lamp patch, swaying foliage-like texture or strong sensor noise. Ground truth is written beside the
frames so decisions can be scored:

- ``root/labels.csv``: ``event_id,relevant`` (event_id = ``<camera>/<event>``), the layout of the
  optional supervised labels;
- ``root/_truth/<camera>/<event>.png``: 255 where a relevant object passed during the event.
  Folders starting with ``_`` are not cameras.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from datamodules.synthetic.common import SyntheticDataset
from suite.errors import ConfigError
from suite.io import atomic_write_csv

DISTRACTORS = ("illumination", "flicker", "sway", "noise")


def _scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    low = rng.normal(0, 1, (height // 12 + 2, width // 12 + 2, 3)).astype(np.float32)
    low = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    scene = rng.uniform(80, 150, 3).astype(np.float32) + 20 * low
    for _ in range(int(rng.integers(2, 5))):  # fixed structures: walls, doors, windows
        x, y = int(rng.integers(0, width - 10)), int(rng.integers(0, height - 10))
        w, h = int(rng.integers(8, width // 3)), int(rng.integers(8, height // 3))
        cv2.rectangle(scene, (x, y), (x + w, y + h), tuple(float(v) for v in rng.uniform(40, 210, 3)), -1)
    return scene


def _object_sprite(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A person/vehicle-like blob with a stripe texture: (colour [s, s, 3], mask [s, s] bool)."""
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (size // 2, size // 2), (size // 2 - 1, int(size * rng.uniform(0.25, 0.48))),
                float(rng.uniform(0, 180)), 0, 360, 1, -1)
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = np.sin((xx + yy * rng.uniform(-1, 1)) * 2 * np.pi / rng.uniform(3, 6))
    dark = rng.random() < 0.5
    color = rng.uniform(10, 60, 3) if dark else rng.uniform(190, 250, 3)
    sprite = color[None, None, :] + 35 * stripes[..., None]
    return sprite.astype(np.float32), mask.astype(bool)


DEFAULT_OBJECT_SIZE = (0.25, 0.4)
# the smallest object drawn (pixels): the sprite's ellipse and stripes need a few pixels
MIN_OBJECT_PX = 6


def object_size_range(object_size: Sequence[float]) -> tuple[float, float]:
    """``[low, high]`` as a checked pair of fractions of the frame's shorter side (0 < low <= high <= 1)."""
    try:
        low, high = (float(v) for v in object_size)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not 0.0 < low <= high <= 1.0:
        shown = list(object_size) if isinstance(object_size, Sequence) else object_size
        raise ConfigError(f"synthetic relevance data: object_size={shown!r}: expected [low, high], fractions of "
                          "the frame's shorter side with 0 < low <= high <= 1, e.g. [0.06, 0.1] for small objects")
    return low, high


def make_event(
    rng: np.random.Generator, scene: np.ndarray, n_frames: int, relevant: bool,
    object_size: Sequence[float] = DEFAULT_OBJECT_SIZE,
) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """(frames uint8 RGB, truth mask uint8 {0,255}, what happened); a relevant event's object is
    ``object_size`` (a range, fractions of the frame's shorter side) wide."""
    height, width = scene.shape[:2]
    frames = [scene.copy() for _ in range(n_frames)]
    truth = np.zeros((height, width), bool)
    kinds: list[str] = []
    if relevant:
        low, high = object_size_range(object_size)
        size = max(MIN_OBJECT_PX, int(min(height, width) * rng.uniform(low, high)))
        sprite, smask = _object_sprite(rng, size)
        y0 = rng.uniform(0, height - size)
        y1 = np.clip(y0 + rng.uniform(-0.3, 0.3) * height, 0, height - size)
        start_left = rng.random() < 0.5
        x0, x1 = (0.0, width - size) if start_left else (width - size, 0.0)
        # the object crosses about half to all of the frame during the event
        span = rng.uniform(0.5, 1.0)
        x1 = x0 + (x1 - x0) * span
        for t, frame in enumerate(frames):
            a = t / max(1, n_frames - 1)
            x, y = int(x0 + a * (x1 - x0)), int(y0 + a * (y1 - y0))
            region = frame[y:y + size, x:x + size]
            region[smask] = sprite[smask]
            truth[y:y + size, x:x + size] |= smask
        kinds.append("object")
    n_distractors = int(rng.integers(0, 2)) if relevant else int(rng.integers(1, 3))
    for kind in rng.choice(DISTRACTORS, size=n_distractors, replace=False):
        kinds.append(str(kind))
        if kind == "illumination":
            gains = np.linspace(1.0, rng.uniform(0.6, 1.4), n_frames)
            frames = [f * g for f, g in zip(frames, gains, strict=True)]
        elif kind == "flicker":
            w, h = int(width * rng.uniform(0.1, 0.25)), int(height * rng.uniform(0.1, 0.25))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            for t, frame in enumerate(frames):
                frame[y:y + h, x:x + w] += (60 if t % 2 else -40) * rng.uniform(0.6, 1.0)
        elif kind == "sway":
            w, h = int(width * rng.uniform(0.15, 0.3)), int(height * rng.uniform(0.2, 0.35))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            leaves = rng.uniform(20, 90, (h // 3 + 2, w // 3 + 2, 3)).astype(np.float32)
            leaves[..., 1] += 60
            leaves = cv2.resize(leaves, (w + 8, h), interpolation=cv2.INTER_NEAREST)
            phase = rng.uniform(0, 2 * np.pi)
            for t, frame in enumerate(frames):
                dx = int(round(3 + 3 * np.sin(phase + t * 1.3)))
                frame[y:y + h, x:x + w] = leaves[:, dx:dx + w]
        else:  # sensor noise
            sigma = rng.uniform(10, 18)
            frames = [f + rng.normal(0, sigma, f.shape).astype(np.float32) for f in frames]
    frames = [np.clip(f + rng.normal(0, 2.0, f.shape), 0, 255).astype(np.uint8) for f in frames]
    return frames, (truth * 255).astype(np.uint8), kinds


def write(folder: Path, seed: int, cameras: int, events_per_camera: int, frames: int, width: int,
          height: int, object_size: Sequence[float] = DEFAULT_OBJECT_SIZE) -> None:
    """Fill ``folder`` with the events, ``labels.csv`` and ``_truth/``; half of each camera's events are relevant."""
    object_size_range(object_size)  # a bad range fails before any file is written
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(cameras):
        camera = f"cam{c:02d}"
        scene = _scene(rng, height, width)
        flags = np.arange(events_per_camera) % 2 == 0
        rng.shuffle(flags)
        for e, relevant in enumerate(flags):
            event = f"event{e:04d}"
            event_frames, truth, kinds = make_event(rng, scene, frames, bool(relevant), object_size)
            event_dir = folder / camera / event
            event_dir.mkdir(parents=True)
            for t, frame in enumerate(event_frames):
                cv2.imwrite(str(event_dir / f"frame{t:03d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
            (folder / "_truth" / camera).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / "_truth" / camera / f"{event}.png"), truth)
            rows.append({"event_id": f"{camera}/{event}", "relevant": int(relevant), "content": "+".join(kinds)})
    atomic_write_csv(folder / "labels.csv", rows, fieldnames=["event_id", "relevant", "content"])


GENERATOR = SyntheticDataset(
    "relevance", write,
    defaults={"cameras": 2, "events_per_camera": 12, "frames": 8, "width": 160, "height": 120,
              "object_size": list(DEFAULT_OBJECT_SIZE)}, version=1,
    description="fixed cameras with motion events (objects crossing, or only distractors): "
                "<camera>/<event>/*.jpg + labels.csv + _truth/",
)

"""Synthetic violence videos in the user layouts the violence DataModule reads.

Two classes that differ only in motion (and in the motion blur it leaves in a frame, as a real
camera's exposure does):
- violent: two or three blobs moving fast and erratically (random kicks every frame) and pulled
  towards each other, so they collide and bounce;
- non-violent: one to three blobs drifting slowly along smooth, nearly straight paths.
Blob sizes, colours and backgrounds follow the same distributions in both classes.

Layouts:
- ``split``: ``root/<split>/<class>/*.mp4`` for the splits in ``videos`` (e.g. train/val/test);
- ``flat``: ``root/<class>/*.mp4`` plus ``labels.csv`` (``path,label,source_group``), where a
  group is one simulated camera (same background) — the layout of the real surveillance clips.

``python -m datamodules.synthetic violence OUT [layout=flat] ['videos={train: 8}'] [--seed N]``
writes one; the DataModule uses :data:`GENERATOR` for its default data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from datamodules.synthetic.common import SyntheticDataset
from datamodules.video import write_mp4
from suite.io import atomic_write_csv

VIOLENT_FOLDER = "Violence"
NONVIOLENT_FOLDER = "NonViolence"


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    low = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1, 3)).astype(np.float32)
    low = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    return rng.uniform(60, 150, 3).astype(np.float32) + 20 * low


def _trajectories(rng: np.random.Generator, violent: bool, n_frames: int, size: int) -> list[np.ndarray]:
    """Blob centres per frame: ``[n_frames, 2]`` for each blob."""
    n_blobs = int(rng.integers(2, 4)) if violent else int(rng.integers(1, 4))
    pos = rng.uniform(0.3 * size, 0.7 * size, (n_blobs, 2))
    if violent:
        vel = rng.normal(0, 1, (n_blobs, 2)) * size * 0.06
    else:
        angle = rng.uniform(0, 2 * np.pi, n_blobs)
        speed = rng.uniform(0.004, 0.015, n_blobs) * size
        vel = np.stack([np.cos(angle), np.sin(angle)], 1) * speed[:, None]
    out = np.zeros((n_frames, n_blobs, 2))
    for t in range(n_frames):
        if violent:
            centre = pos.mean(0, keepdims=True)
            vel += rng.normal(0, 1, vel.shape) * size * 0.04 + (centre - pos) * 0.15
            vel = np.clip(vel, -0.12 * size, 0.12 * size)
        else:
            vel = vel * 0.98 + rng.normal(0, 1, vel.shape) * size * 0.0008
        pos = pos + vel
        for axis in range(2):  # bounce off the borders
            low, high = pos[:, axis] < 4, pos[:, axis] > size - 4
            vel[low | high, axis] *= -1
            pos[:, axis] = np.clip(pos[:, axis], 4, size - 4)
        out[t] = pos
    return [out[:, i] for i in range(n_blobs)]


# Sub-positions integrated over the shutter time of one frame.
EXPOSURE_STEPS = 6
# Share of the frame interval the shutter is open (a 1/30 s exposure at 15 fps).
SHUTTER = 0.5


def _exposure(previous: np.ndarray, current: np.ndarray, radius: float, size: int) -> np.ndarray:
    """A blob's coverage (0-1) over one exposure: it moves during the shutter time, so fast blobs
    smear along their path (motion blur) and slow ones stay sharp, as with a real camera."""
    coverage = np.zeros((size, size), np.float32)
    start = current - SHUTTER * (current - previous)
    for k in range(EXPOSURE_STEPS):
        x, y = start + (current - start) * k / max(EXPOSURE_STEPS - 1, 1)
        mask = np.zeros((size, size), np.float32)
        cv2.circle(mask, (int(round(x)), int(round(y))), int(radius), 1.0, -1, lineType=cv2.LINE_AA)
        coverage += mask
    return coverage / EXPOSURE_STEPS


def make_video(rng: np.random.Generator, violent: bool, n_frames: int, size: int,
               background: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB ``[n_frames, size, size, 3]``."""
    base = _background(rng, size) if background is None else background
    paths = _trajectories(rng, violent, n_frames, size)
    colors = rng.uniform(150, 255, (len(paths), 3))
    radii = rng.uniform(0.07, 0.12, len(paths)) * size
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for t in range(n_frames):
        frame = base.copy()
        for path, color, radius in zip(paths, colors, radii, strict=True):
            coverage = _exposure(path[max(t - 1, 0)], path[t], radius, size)
            frame = frame * (1.0 - coverage[..., None]) + color[None, None, :] * coverage[..., None]
        frame += rng.normal(0, 4, frame.shape).astype(np.float32)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def _labels(rng: np.random.Generator, count: int, violent_fraction: float) -> list[bool]:
    n_violent = int(round(count * violent_fraction))
    labels = [True] * n_violent + [False] * (count - n_violent)
    rng.shuffle(labels)
    return labels


def write(
    folder: Path,
    seed: int,
    videos: Mapping[str, int],
    violent_fraction: float,
    n_frames: int,
    size: int,
    fps: int,
    layout: str,
    group_size: int,
) -> None:
    """Fill ``folder``. ``videos`` maps split name to count; the flat layout writes the sum of the
    counts without split folders."""
    from suite.errors import ConfigError

    if layout not in ("split", "flat"):
        raise ConfigError(f"synthetic violence data: layout must be 'split' or 'flat', got {layout!r}")
    if not 0.0 <= violent_fraction <= 1.0:
        raise ConfigError(f"synthetic violence data: violent_fraction must be in [0, 1], got {violent_fraction}")
    rng = np.random.default_rng(seed)
    if layout == "split":
        for split, count in videos.items():
            for i, violent in enumerate(_labels(rng, int(count), violent_fraction)):
                target = folder / split / (VIOLENT_FOLDER if violent else NONVIOLENT_FOLDER)
                target.mkdir(parents=True, exist_ok=True)
                write_mp4(target / f"{split}_{i:04d}.mp4", make_video(rng, violent, n_frames, size), fps)
        return
    rows = []
    background = None
    for i, violent in enumerate(_labels(rng, sum(int(c) for c in videos.values()), violent_fraction)):
        if i % group_size == 0:
            background = _background(rng, size)  # one simulated camera per group
        folder_name = VIOLENT_FOLDER if violent else NONVIOLENT_FOLDER
        (folder / folder_name).mkdir(exist_ok=True)
        rel = f"{folder_name}/clip_{i:04d}.mp4"
        write_mp4(folder / rel, make_video(rng, violent, n_frames, size, background), fps)
        rows.append({"path": rel, "label": folder_name, "source_group": f"cam{i // group_size:02d}"})
    atomic_write_csv(folder / "labels.csv", rows, fieldnames=["path", "label", "source_group"])


GENERATOR = SyntheticDataset(
    "violence", write,
    defaults={"videos": {"train": 32, "val": 12, "test": 12}, "violent_fraction": 0.5, "n_frames": 32,
              "size": 64, "fps": 15, "layout": "split", "group_size": 4},
    version=2,
    description="clips of fast colliding blobs (violent) or slowly drifting ones (non-violent): "
                "<split>/<class>/*.mp4, or with layout=flat <class>/*.mp4 + labels.csv (source_group = camera)",
)

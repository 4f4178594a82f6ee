"""Synthetic binary segmentation data in the user layout ``root/images`` + ``root/masks``.

Foreground objects are striped blobs (ellipses and polygons) on a textured, noisy background;
distractors of similar brightness but without the stripe texture are not foreground, so the
network must learn texture and shape rather than a brightness threshold. Foreground covers
roughly 5-20 % of each image by default, like real masks; ``foreground=[low, high]`` sets that range,
e.g. ``[0.01, 0.02]`` for sparse masks of a few small objects, on which a plain pixel-wise BCE can be
minimised by predicting background everywhere (seed 002's collapse).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from datamodules.synthetic.common import SyntheticDataset
from suite.errors import ConfigError


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    low = rng.normal(0, 1, (size // 16 + 1, size // 16 + 1, 3)).astype(np.float32)
    low = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    base = rng.uniform(70, 150, 3).astype(np.float32)
    return base + 18 * low + rng.normal(0, 6, (size, size, 3)).astype(np.float32)


def _random_shape_mask(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cx, cy = rng.uniform(radius, size - radius, 2)
    if rng.random() < 0.5:
        axes = (int(radius * rng.uniform(0.6, 1.0)), int(radius * rng.uniform(0.4, 1.0)))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        n = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.5, 1.0, n)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    return mask.astype(bool)


DEFAULT_FOREGROUND = (0.05, 0.20)
# objects are never drawn smaller than this radius (pixels): a sparse mask is a few small objects, not noise
MIN_RADIUS = 3.0


def foreground_range(foreground: Sequence[float]) -> tuple[float, float]:
    """``[low, high]`` as a checked pair of fractions (0 < low <= high < 1)."""
    try:
        low, high = (float(v) for v in foreground)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not 0.0 < low <= high < 1.0:
        shown = list(foreground) if isinstance(foreground, Sequence) else foreground
        raise ConfigError(f"synthetic segmentation data: foreground={shown!r}: expected [low, high], fractions of "
                          "the image with 0 < low <= high < 1, e.g. [0.01, 0.02]")
    return low, high


def make_pair(rng: np.random.Generator, size: int,
              foreground: Sequence[float] = DEFAULT_FOREGROUND) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 HxWx3, mask uint8 HxW in {0,255}) pair whose foreground covers a fraction of the
    image drawn from ``foreground`` (about: whole objects are added until it is reached)."""
    low, high = foreground_range(foreground)
    # objects shrink with the area to cover (their radius with its square root), so a sparse mask still
    # holds a few objects; the default range keeps the scale (and the images) of earlier versions
    scale = min(1.0, (high / DEFAULT_FOREGROUND[1]) ** 0.5)
    image = _background(rng, size)
    target = np.zeros((size, size), bool)
    fg_goal = rng.uniform(low, high)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(int(rng.integers(1, 4))):  # distractors: smooth blobs, not foreground
        shape = _random_shape_mask(rng, size, size * rng.uniform(0.08, 0.18))
        image[shape] = image[shape] * 0.5 + rng.uniform(120, 200, 3) * 0.5
    tries = 0
    while target.mean() < fg_goal and tries < 12:
        tries += 1
        radius = size * rng.uniform(0.07, 0.16) * scale
        shape = _random_shape_mask(rng, size, max(radius, MIN_RADIUS) if scale < 1.0 else radius)
        if (target | shape).mean() > high * 1.1:
            continue
        period = rng.uniform(3.0, 6.0)
        theta = rng.uniform(0, np.pi)
        stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
        color = rng.uniform(120, 200, 3)
        texture = color[None, None, :] + 45 * stripes[..., None]
        image[shape] = texture[shape]
        target |= shape
    image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.3, 1.0))
    image += rng.normal(0, rng.uniform(4, 12), image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, (target * 255).astype(np.uint8)


def write(folder: Path, seed: int, n_images: int, size: int,
          foreground: Sequence[float] = DEFAULT_FOREGROUND) -> None:
    """``n_images`` pairs under ``folder/images`` and ``folder/masks`` (mask 255 = foreground), each
    mask covering a fraction of its image in the ``foreground`` range."""
    foreground_range(foreground)  # a bad range fails before any file is written
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        image, mask = make_pair(rng, size, foreground)
        cv2.imwrite(str(folder / "images" / f"{i:05d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / "masks" / f"{i:05d}.png"), mask)


GENERATOR = SyntheticDataset(
    "segmentation", write, defaults={"n_images": 200, "size": 128, "foreground": list(DEFAULT_FOREGROUND)},
    version=1,
    description="striped foreground blobs on textured noisy backgrounds: images/*.png + masks/*.png",
)

"""Shared augmentation, and the image tasks' transforms on images of any size, shape and orientation.

LEGO and relevance resize to a square before any turn, so non-square, mixed-size and EXIF-rotated
images must stack into batches there too; segmentation's own cases are in test_segmentation.py.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from datamodules.augment import flips_and_turns, seeded_call
from datamodules.images import read_image
from datamodules.lego import build_transform
from datamodules.relevance import frame_transform, preprocess_frame

SIZES = [(480, 640), (640, 480), (37, 101), (256, 256), (1, 9)]


def photo_files(folder: Path) -> list[Path]:
    """Photos of the sizes above, plus a landscape JPEG shown portrait by its EXIF orientation."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(SIZES):
        paths.append(folder / f"p{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    exif = Image.Exif()
    exif[0x0112] = 6
    paths.append(folder / "turned.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(paths[-1], exif=exif.tobytes())
    return paths


def test_quarter_turns_only_for_squares() -> None:
    assert any(isinstance(op, A.RandomRotate90) for op in flips_and_turns(square=True))
    assert not any(isinstance(op, A.RandomRotate90) for op in flips_and_turns(square=False))
    pipeline = A.Compose(flips_and_turns(square=False))
    torch.manual_seed(0)
    shapes = {seeded_call(pipeline, image=np.zeros((48, 64, 3), np.uint8))["image"].shape for _ in range(20)}
    assert shapes == {(48, 64, 3)}


def test_the_exif_photo_is_read_as_shown(tmp_path: Path) -> None:
    assert read_image(photo_files(tmp_path)[-1]).shape == (50, 30, 3)


@pytest.mark.parametrize("augment", ["none", "light", "strong"])
def test_lego_transforms_stack_images_of_any_size(tmp_path: Path, augment: str) -> None:
    transform = build_transform(24, augment)
    torch.manual_seed(0)
    batch = default_collate([{"image": seeded_call(transform, image=read_image(p))["image"]}
                             for p in photo_files(tmp_path)])
    assert batch["image"].shape == (len(SIZES) + 1, 3, 24, 24)


@pytest.mark.parametrize("augment", [False, True])
def test_relevance_transforms_stack_frames_and_masks_of_any_size(tmp_path: Path, augment: bool) -> None:
    transform = frame_transform(32, augment)
    items = []
    for path in photo_files(tmp_path):
        image = read_image(path)
        mask = (image[..., 0] > 127).astype(np.float32)
        out = seeded_call(transform, image=image, mask=mask)
        items.append({"image": out["image"], "mask": out["mask"][None]})
        assert preprocess_frame(image, 32).shape == (3, 32, 32)
    batch = default_collate(items)
    assert batch["image"].shape == (len(SIZES) + 1, 3, 32, 32) and batch["mask"].shape == (len(SIZES) + 1, 1, 32, 32)

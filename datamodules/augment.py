"""Augmentation pieces shared by the image tasks.

albumentations 2.x ``Compose`` draws from its own generator, seeded randomly unless told
otherwise, so ``seed_everything`` alone does not make augmentation repeatable. :func:`seeded_call`
reseeds it from torch's RNG, which Lightning seeds per run and per DataLoader worker: the same
``seed`` gives the same augmentations, and a resumed run (with its RNG state restored) continues
the sequence it would have had.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import torch


def seeded_call(transform: A.BaseCompose, **data: Any) -> dict[str, Any]:
    transform.set_random_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))
    return transform(**data)


def flips_and_turns(square: bool) -> list[A.BasicTransform]:
    """Random flips, and random quarter turns only for square inputs: a quarter turn makes an HxW image
    WxH, and the samples of one batch must share a shape (a 640x480 dataset would fail to stack)."""
    ops: list[A.BasicTransform] = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if square:
        ops.append(A.RandomRotate90(p=0.5))
    return ops

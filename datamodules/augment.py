"""Reproducible albumentations calls.

albumentations 2.x ``Compose`` draws from its own generator, seeded randomly unless told
otherwise, so ``seed_everything`` alone does not make augmentation repeatable. Each call here
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

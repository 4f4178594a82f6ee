"""Glyph data: ``root/<class>/*.png`` (one folder per class), and its synthetic generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import SuiteDataModule
from datamodules.grouped_split import grouped_split
from datamodules.synthetic.common import SyntheticDataset
from suite.contracts import Head, InputSpec
from suite.errors import DataError

SIZE = 32


def write_glyphs(folder: Path, seed: int, per_class: int, classes: str) -> None:
    """``per_class`` noisy renders of each character of ``classes``, at random offsets and scales."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir()
        for i in range(per_class):
            image = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
            scale = rng.uniform(0.7, 1.0)
            origin = (int(rng.integers(2, 10)), int(rng.integers(22, 30)))
            cv2.putText(image, name, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (230, 230, 230), 2)
            cv2.imwrite(str(folder / name / f"{i:04d}.png"), image)


GENERATOR = SyntheticDataset("glyphs", write_glyphs, defaults={"per_class": 24, "classes": "0123"}, version=1,
                             description="digits drawn on noise, one folder per class")


class GlyphDataset(Dataset):
    def __init__(self, items: list[tuple[Path, int]], ids: list[str]):
        self.items, self.ids = items, ids

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.items[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"cannot read image {path}")
        tensor = torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1).float() / 255.0
        return {"image": tensor, "label": torch.tensor(label), "id": self.ids[index]}


class GlyphDataModule(SuiteDataModule):
    task = "glyphs"

    def __init__(self, per_class: int = 24, val_fraction: float = 0.25, test_fraction: float = 0.25,
                 **common: Any):
        super().__init__(**common)
        self.per_class = per_class
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.classes: tuple[str, ...] = ()

    def synthetic(self) -> tuple[SyntheticDataset, dict[str, Any]]:
        return GENERATOR, {"per_class": self.per_class}

    def build_splits(self, root: Path) -> dict[str, list[tuple[Path, int]]]:
        self.classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
        if len(self.classes) < 2:
            raise DataError(f"{root}: need at least two class folders, found {list(self.classes)}")
        items = [(path, i) for i, name in enumerate(self.classes) for path in sorted((root / name).glob("*.png"))]
        self.sources = [(str(root), len(items))]
        parts = grouped_split(len(items), {"val": self.val_fraction, "test": self.test_fraction}, self.seed,
                              labels=[label for _, label in items])
        return {name: [items[i] for i in indices] for name, indices in parts.items()}

    def item_id(self, item: tuple[Path, int]) -> str:
        return f"{item[0].parent.name}/{item[0].name}"

    def heads(self) -> tuple[Head, ...]:
        return (Head("digit", self.classes),)

    def input_spec(self) -> InputSpec:
        return InputSpec("image", (3, SIZE, SIZE), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def dataset(self, split: str) -> GlyphDataset:
        items = self.split(split)
        return GlyphDataset(items, [self.item_id(item) for item in items])

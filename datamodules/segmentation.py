"""Binary segmentation data: ``root/images/*`` and ``root/masks/*`` paired by file stem.

With ``root/train``, ``root/val`` and ``root/test`` (each with images/ and masks/) those folders are
the splits; with only ``train`` and ``val``, a seeded ``test_fraction`` of ``train`` is held out as
the test split; otherwise a seeded three-way split of ``val_fraction`` and ``test_fraction``. The
test split is never used to select the checkpoint. When ``root`` is unset a synthetic dataset in
the same layout is generated under ``synthetic_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
from albumentations.pytorch import ToTensorV2
from torch.utils.data import Dataset

from datamodules.augment import seeded_call
from datamodules.base import SuiteDataModule
from datamodules.grouped_split import grouped_split
from datamodules.images import image_size, list_images, read_image, read_mask
from datamodules.synthetic.common import SyntheticDataset
from datamodules.synthetic.segmentation import GENERATOR
from suite.backbones import IMAGENET_MEAN, IMAGENET_STD
from suite.contracts import Head, InputSpec
from suite.errors import DataError


def pair_images_and_masks(root: str | Path) -> list[tuple[Path, Path]]:
    """Pairs of (image, mask) matched by stem; unpaired files or size mismatches are errors."""
    root = Path(root)
    images = list_images(root / "images")
    masks = list_images(root / "masks")
    if not images:
        raise DataError(f"no images (png/jpg/tif/bmp) in {root / 'images'}")
    by_stem = {}
    for mask in masks:
        if mask.stem in by_stem:
            raise DataError(f"two masks for stem '{mask.stem}': {by_stem[mask.stem]} and {mask}")
        by_stem[mask.stem] = mask
    pairs, missing = [], []
    for img in images:
        mask = by_stem.pop(img.stem, None)
        if mask is None:
            missing.append(img)
        else:
            pairs.append((img, mask))
    if missing:
        listed = ", ".join(str(p) for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(f"{len(missing)} image(s) without a mask in {root / 'masks'}: {listed}")
    if by_stem:
        listed = ", ".join(str(p) for p in list(by_stem.values())[:5])
        raise DataError(f"{len(by_stem)} mask(s) without an image in {root / 'images'}: {listed}")
    for img, mask in pairs:
        if image_size(img) != image_size(mask):
            raise DataError(
                f"mask size {image_size(mask)} differs from image size {image_size(img)}: {mask} vs {img}"
            )
    return pairs


def binarize(mask: np.ndarray, foreground_value: int | None) -> np.ndarray:
    """{0,1} float mask: ``mask == foreground_value``, or any non-zero value when it is None."""
    fg = mask != 0 if foreground_value is None else mask == foreground_value
    return fg.astype(np.float32)


class SegmentationDataset(Dataset):
    """Image/mask pairs; ``ids`` name the items in predictions (default: the image file name)."""

    def __init__(self, pairs: list[tuple[Path, Path]], transform: A.Compose, foreground_value: int | None,
                 ids: list[str] | None = None):
        self.pairs = pairs
        self.transform = transform
        self.foreground_value = foreground_value
        self.ids = ids if ids is not None else [image.name for image, _ in pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path)
        mask = binarize(read_mask(mask_path), self.foreground_value)
        if mask.shape != image.shape[:2]:
            raise DataError(f"mask size {mask.shape[::-1]} differs from image size "
                            f"{image.shape[1::-1]}: {mask_path} vs {image_path}")
        out = seeded_call(self.transform, image=image, mask=mask)
        return {"image": out["image"], "mask": out["mask"][None].float(), "name": self.ids[index]}


class SegmentationDataModule(SuiteDataModule):
    task = "segmentation"

    def __init__(
        self,
        root: str | None = None,
        synthetic_dir: str = "data/synthetic",
        synthetic_images: int = 200,
        synthetic_size: int = 128,
        foreground_value: int | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        image_size: int | None = None,
        crop_size: int | None = None,
        augment: bool = True,
        dev_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(root=root, synthetic_dir=synthetic_dir, dev_samples=dev_samples, seed=seed,
                         batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < value < 1.0:
                raise DataError(f"data.{key} must be in (0, 1), got {value}")
        self.synthetic_images, self.synthetic_size = synthetic_images, synthetic_size
        self.foreground_value = foreground_value
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.image_size, self.crop_size = image_size, crop_size
        self.augment = augment

    # -- contract hooks ------------------------------------------------------------------------
    def synthetic(self) -> tuple[SyntheticDataset, dict[str, Any]]:
        return GENERATOR, {"n_images": self.synthetic_images, "size": self.synthetic_size}

    def build_splits(self, root: Path) -> dict[str, list[tuple[Path, Path]]]:
        given = [name for name in ("train", "val", "test") if (root / name).is_dir()]
        if {"train", "val"} <= set(given):
            splits = {name: pair_images_and_masks(root / name) for name in given}
            self.sources = [(str(root / name), len(splits[name])) for name in given]
            if "test" not in splits:
                train = splits["train"]
                parts = grouped_split(len(train), {"test": self.test_fraction}, self.seed, what="training images")
                splits["train"] = [train[i] for i in parts["train"]]
                splits["test"] = [train[i] for i in parts["test"]]
                self.sources.append((f"{root / 'train'} (seeded test_fraction={self.test_fraction} held out as "
                                     "the test split)", len(splits["test"])))
            return splits
        pairs = pair_images_and_masks(root)
        self.sources = [(str(root), len(pairs))]
        if len(pairs) < 3:
            raise DataError(f"need at least 3 image/mask pairs to split train/val/test, found {len(pairs)} in {root}")
        parts = grouped_split(len(pairs), {"val": self.val_fraction, "test": self.test_fraction}, self.seed,
                              what="image/mask pairs")
        return {name: [pairs[i] for i in indices] for name, indices in parts.items()}

    def item_id(self, item: tuple[Path, Path]) -> str:
        root = self.data_root()
        image = item[0]
        return str(image.relative_to(root)) if image.is_relative_to(root) else str(image)

    def heads(self) -> tuple[Head, ...]:
        return (Head("mask", ("background", "foreground"), positive=1),)

    def input_spec(self) -> InputSpec:
        size = self.image_size or self.crop_size
        return InputSpec("image", (3, size, size), IMAGENET_MEAN, IMAGENET_STD)

    def spec_extras(self) -> dict[str, Any]:
        return {"foreground_value": self.foreground_value}

    # -- transforms ----------------------------------------------------------------------
    def _transform(self, train: bool) -> A.Compose:
        ops: list[Any] = []
        if self.image_size:
            ops.append(A.Resize(height=self.image_size, width=self.image_size))
        if train and self.crop_size:
            ops.append(A.RandomCrop(height=self.crop_size, width=self.crop_size, pad_if_needed=True))
        if train and self.augment:
            ops += [
                A.HorizontalFlip(p=0.5),
                A.VerticalFlip(p=0.5),
                A.RandomRotate90(p=0.5),
                A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
                A.GaussNoise(std_range=(0.01, 0.04), p=0.3),
            ]
        ops += [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
        return A.Compose(ops)

    def dataset(self, split: str) -> SegmentationDataset:
        items = self.split(split)
        return SegmentationDataset(items, self._transform(train=split == "train"), self.foreground_value,
                                   ids=[self.item_id(item) for item in items])

    def _eval_batch_size(self) -> int | None:
        # Whole images of different sizes cannot be stacked when training used crops.
        return 1 if self.crop_size and not self.image_size else None

    def val_dataloader(self):
        return self.make_loader(self.dataset("val"), batch_size=self._eval_batch_size())

    def test_dataloader(self):
        return self.make_loader(self.dataset("test"), batch_size=self._eval_batch_size())

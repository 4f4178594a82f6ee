"""Binary segmentation data: ``root/images/*`` and ``root/masks/*`` paired by file stem.

With ``root/train`` and ``root/val`` (each with images/ and masks/) those folders are the split;
otherwise a seeded split of ``val_fraction``. When ``root`` is unset a synthetic dataset in the
same layout is generated under ``synthetic_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
from albumentations.pytorch import ToTensorV2
from torch.utils.data import Dataset

from datamodules.augment import seeded_call
from datamodules.base import SuiteDataModule, existing_folder
from datamodules.images import image_size, list_images, read_image, read_mask
from datamodules.synthetic import segmentation as synthetic
from suite.backbones import IMAGENET_MEAN, IMAGENET_STD
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
    def __init__(self, pairs: list[tuple[Path, Path]], transform: A.Compose, foreground_value: int | None):
        self.pairs = pairs
        self.transform = transform
        self.foreground_value = foreground_value

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
        return {"image": out["image"], "mask": out["mask"][None].float(), "name": image_path.name}


class SegmentationDataModule(SuiteDataModule):
    def __init__(
        self,
        root: str | None = None,
        synthetic_dir: str = "data/synthetic",
        synthetic_images: int = 200,
        synthetic_size: int = 128,
        foreground_value: int | None = None,
        val_fraction: float = 0.2,
        image_size: int | None = None,
        crop_size: int | None = None,
        augment: bool = True,
        dev_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        self.root = root
        self.synthetic_dir = synthetic_dir
        self.synthetic_images, self.synthetic_size = synthetic_images, synthetic_size
        self.foreground_value = foreground_value
        self.val_fraction = val_fraction
        self.image_size, self.crop_size = image_size, crop_size
        self.augment = augment
        self.dev_samples = dev_samples
        self.seed = seed
        self.splits: dict[str, list[tuple[Path, Path]]] = {}

    # -- data location -------------------------------------------------------------------
    def data_root(self) -> Path:
        if self.root:
            return existing_folder(self.root)
        return synthetic.default_dir(self.synthetic_dir, self.synthetic_images, self.synthetic_size, self.seed)

    def prepare_data(self) -> None:
        if not self.root:
            synthetic.generate(self.data_root(), self.synthetic_images, self.synthetic_size, self.seed)

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

    # -- splits --------------------------------------------------------------------------
    def _split(self, root: Path) -> dict[str, list[tuple[Path, Path]]]:
        if (root / "train").is_dir() and (root / "val").is_dir():
            splits = {"train": pair_images_and_masks(root / "train"), "val": pair_images_and_masks(root / "val")}
            self.sources = [(str(root / "train"), len(splits["train"])), (str(root / "val"), len(splits["val"]))]
        else:
            pairs = pair_images_and_masks(root)
            self.sources = [(str(root), len(pairs))]
            if self.dev_samples and self.dev_samples < len(pairs):
                self.sources = [(f"{root} (first {self.dev_samples} of {len(pairs)}: data.dev_samples)",
                                 self.dev_samples)]
                pairs = pairs[: self.dev_samples]
            if len(pairs) < 2:
                raise DataError(f"need at least 2 image/mask pairs to split train/val, found {len(pairs)} in {root}")
            order = np.random.default_rng(self.seed).permutation(len(pairs))
            n_val = min(len(pairs) - 1, max(1, round(len(pairs) * self.val_fraction)))
            splits = {"val": [pairs[i] for i in sorted(order[:n_val])],
                      "train": [pairs[i] for i in sorted(order[n_val:])]}
        if self.dev_samples and (root / "train").is_dir():
            splits = {k: v[: self.dev_samples] for k, v in splits.items()}
        for name, items in splits.items():
            if not items:
                raise DataError(f"the {name} split of {root} is empty")
        return splits

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.splits = self._split(self.data_root())

    def label_map(self) -> dict[str, Any]:
        return {"mask": {"background": 0, "foreground": 1}, "foreground_value": self.foreground_value}

    def dataset(self, split: str) -> SegmentationDataset:
        self.setup()
        return SegmentationDataset(self.splits[split], self._transform(train=split == "train"), self.foreground_value)

    def train_dataloader(self):
        train = self.dataset("train")
        return self.make_loader(train, shuffle=True, drop_last=len(train) > self.batch_size)

    def val_dataloader(self):
        return self.make_loader(self.dataset("val"), batch_size=1 if self.crop_size and not self.image_size else None)

    def test_dataloader(self):
        # The evaluated split is the validation split (the seed has no separate test set).
        return self.val_dataloader()

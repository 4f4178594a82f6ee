"""Binary segmentation data: ``root/images/*`` and ``root/masks/*`` paired by file stem.

With ``root/train``, ``root/val`` and ``root/test`` (each with images/ and masks/) those folders are
the splits; with only ``train`` and ``val``, a seeded ``test_fraction`` of ``train`` is held out as
the test split; otherwise a seeded three-way split of ``val_fraction`` and ``test_fraction``. The
test split is never used to select the checkpoint. When ``root`` is unset a synthetic dataset in
the same layout is generated under ``synthetic_dir``.

Images and masks are read by :mod:`datamodules.images` (masks as stored, EXIF orientation applied
to both as their sizes say); at setup every header is read and the masks' values are checked
(:mod:`datamodules.masks`), so data that would be read wrong is refused before training, naming the
files and what they hold. How images of other sizes are batched: see the transforms section below.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
from albumentations.pytorch import ToTensorV2
from torch.utils.data import Dataset

from datamodules.augment import flips_and_turns, seeded_call
from datamodules.base import SuiteDataModule
from datamodules.grouped_split import grouped_split
from datamodules.images import list_images, pair_layout, read_pair
from datamodules.masks import check_masks, mask_values
from datamodules.synthetic.common import SyntheticDataset
from datamodules.synthetic.segmentation import DEFAULT_FOREGROUND, GENERATOR, foreground_range
from suite.backbones import IMAGENET_MEAN, IMAGENET_STD
from suite.contracts import Head, InputSpec
from suite.errors import DataError

log = logging.getLogger(__name__)

#: data.crop_size default: random crops of data.auto_crop_size when the training images are larger
AUTO = "auto"

Size = tuple[int, int]  # (height, width) as read, EXIF orientation applied


def _say(message: str) -> None:
    """A choice the user should see: on the console (train.py's log goes to the run's train.log only) and in
    the log."""
    print(message, flush=True)
    log.info(message)


def _examples(paths: list[Path], limit: int = 5) -> str:
    return ", ".join(str(p) for p in paths[:limit]) + (f" ... ({len(paths) - limit} more)" if len(paths) > limit
                                                        else "")


def read_pairs(root: str | Path) -> tuple[list[tuple[Path, Path]], dict[Path, Size]]:
    """Pairs of (image, mask) matched by stem, and the size of each image as read.

    Every header is read here, so unpaired files, empty, truncated or non-image files, sizes that
    differ and ambiguous EXIF orientations fail before training, all of them in one message.
    """
    root = Path(root)
    images = list_images(root / "images")
    masks = list_images(root / "masks")
    if not images:
        raise DataError(f"no images (png/jpg/tif/bmp) in {root / 'images'}")
    for folder, files, what in ((root / "images", images, "images"), (root / "masks", masks, "masks")):
        stems = Counter(p.stem for p in files)
        twice = sorted(p for p in files if stems[p.stem] > 1)
        if twice:
            raise DataError(f"two {what} for one stem in {folder}: {_examples(twice)}; images and masks are paired "
                            "by file stem, so each stem must be there once")
    by_stem = {mask.stem: mask for mask in masks}
    pairs = [(img, by_stem.pop(img.stem)) for img in images if img.stem in by_stem]
    paired = {img.stem for img, _ in pairs}
    lonely = [img for img in images if img.stem not in paired]
    orphans = sorted(by_stem.values())
    if lonely or orphans:
        parts = []
        if lonely:
            parts.append(f"{len(lonely)} image(s) without a mask in {root / 'masks'}: {_examples(lonely)}")
        if orphans:
            parts.append(f"{len(orphans)} mask(s) without an image in {root / 'images'}: {_examples(orphans)}")
        raise DataError(" and ".join(parts) + f" ({len(pairs)} paired); an image images/<name>.<ext> is paired "
                        "with masks/<name>.<ext> (same name, any of png/jpg/tif/bmp)")
    sizes: dict[Path, Size] = {}
    problems: list[tuple[Path, str]] = []
    for img, mask in pairs:
        try:
            header = pair_layout(img, mask)[0]
            sizes[img] = header.size[::-1]
        except DataError as err:
            problems.append((img, str(err)))
    if problems:
        # the first reason in full, the other pairs by image name (their reasons are mostly the same)
        also = f". Also: {_examples([img for img, _ in problems[1:]])}" if len(problems) > 1 else ""
        raise DataError(f"{len(problems)} of {len(pairs)} image/mask pairs in {root} cannot be read: "
                        f"{problems[0][1]}{also}")
    return pairs, sizes


def pair_images_and_masks(root: str | Path) -> list[tuple[Path, Path]]:
    """Pairs of (image, mask) matched by stem; unpaired, unreadable or mismatched files are errors."""
    return read_pairs(root)[0]


def binarize(mask: np.ndarray, foreground_value: float | None) -> np.ndarray:
    """{0,1} float mask: ``mask == foreground_value``, or any non-zero value when it is None."""
    fg = mask != 0 if foreground_value is None else mask == foreground_value
    return fg.astype(np.float32)


class SegmentationDataset(Dataset):
    """Image/mask pairs; ``ids`` name the items in predictions (default: the image file name)."""

    def __init__(self, pairs: list[tuple[Path, Path]], transform: A.Compose, foreground_value: float | None,
                 ids: list[str] | None = None):
        self.pairs = pairs
        self.transform = transform
        self.foreground_value = foreground_value
        self.ids = ids if ids is not None else [image.name for image, _ in pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, mask_path = self.pairs[index]
        image, values = read_pair(image_path, mask_path)
        if mask_path.suffix.lower() in (".jpg", ".jpeg"):  # setup checks a sample; every JPEG mask is checked here
            found = mask_values(values, mask_path)
            if found.distinct > 2:
                raise DataError(f"JPEG mask {mask_path} holds {found.distinct} values ({found.off_binary()} pixels "
                                "are neither of its two main values): JPEG compression changes mask values at "
                                "every edge; save the masks as PNG")
        mask = binarize(values, self.foreground_value)
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
        synthetic_foreground: Sequence[float] = DEFAULT_FOREGROUND,
        foreground_value: int | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        image_size: int | None = None,
        crop_size: int | str | None = AUTO,
        auto_crop_size: int = 256,
        crop_batch_size: int | None = 4,
        augment: bool = True,
        dev_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 8,
        num_workers: int | str = 0,
        pin_memory: bool | str = False,
        allow_overlap: bool = False,
    ):
        super().__init__(root=root, synthetic_dir=synthetic_dir, dev_samples=dev_samples, seed=seed,
                         batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         allow_overlap=allow_overlap)
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < value < 1.0:
                raise DataError(f"data.{key} must be in (0, 1), got {value}")
        self.synthetic_images, self.synthetic_size = synthetic_images, synthetic_size
        # a plain list of floats: the generator's parameters are its cache key (JSON)
        self.synthetic_foreground = [float(v) for v in foreground_range(synthetic_foreground)]
        self.foreground_value = foreground_value
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        if isinstance(crop_size, str) and crop_size != AUTO:
            raise DataError(f"data.crop_size={crop_size!r}: expected a side in pixels, null (whole images) or "
                            f"{AUTO!r} (crops of data.auto_crop_size when the images are larger)")
        if auto_crop_size < 32:
            raise DataError(f"data.auto_crop_size={auto_crop_size}: expected at least 32 pixels (the U-Net's stride)")
        self.image_size, self.crop_size, self.auto_crop_size = image_size, crop_size, auto_crop_size
        self.crop_batch_size = crop_batch_size
        self.augment = augment
        self.sizes: dict[Path, Size] = {}
        self._crop: tuple[int | None] | None = None  # train_crop(), resolved once
        self._auto_crops = False  # crop_size=auto chose crops of auto_crop_size (batched by crop_batch_size)

    # -- contract hooks ------------------------------------------------------------------------
    def synthetic(self) -> tuple[SyntheticDataset, dict[str, Any]]:
        return GENERATOR, {"n_images": self.synthetic_images, "size": self.synthetic_size,
                           "foreground": self.synthetic_foreground}

    def build_splits(self, root: Path) -> dict[str, list[tuple[Path, Path]]]:
        splits = self._split_pairs(root)
        # the masks of the whole dataset, before any dev subset: a wrong reading fails here, not as F1 0
        check = check_masks(sorted(mask for items in splits.values() for _, mask in items), str(root))
        check.raise_errors(self.foreground_value)
        for warning in check.warnings(self.foreground_value):
            log.warning(warning)
        return splits

    def _read_pairs(self, root: Path) -> list[tuple[Path, Path]]:
        pairs, sizes = read_pairs(root)
        self.sizes.update(sizes)
        return pairs

    def _split_pairs(self, root: Path) -> dict[str, list[tuple[Path, Path]]]:
        given = [name for name in ("train", "val", "test") if (root / name).is_dir()]
        if {"train", "val"} <= set(given):
            splits = {name: self._read_pairs(root / name) for name in given}
            self.sources = [(str(root / name), len(splits[name])) for name in given]
            if "test" not in splits:
                train = splits["train"]
                parts = grouped_split(len(train), {"test": self.test_fraction}, self.seed, what="training images")
                splits["train"] = [train[i] for i in parts["train"]]
                splits["test"] = [train[i] for i in parts["test"]]
                self.sources.append((f"{root / 'train'} (seeded test_fraction={self.test_fraction} held out as "
                                     "the test split)", len(splits["test"])))
            return splits
        pairs = self._read_pairs(root)
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
        size = self.image_size or self.train_crop()
        return InputSpec("image", (3, size, size), IMAGENET_MEAN, IMAGENET_STD)

    def spec_extras(self) -> dict[str, Any]:
        # how the run saw its images: a predictor resizes (not tiles) large images for a run trained on resized ones
        return {"foreground_value": self.foreground_value, "resized_to": self.image_size}

    # -- transforms ----------------------------------------------------------------------
    # Samples of one batch must share a size. data.image_size resizes every image to a square;
    # data.crop_size trains on random square crops: a side, or "auto" (default): crops of
    # data.auto_crop_size when every training image is larger than that (whole large images cost
    # about four times the time per epoch and, measured on 512 px membranes, select a worse
    # checkpoint), whole images otherwise. Images of several sizes train on random square crops
    # of the smallest side (at most data.auto_crop_size with "auto"), at their own scale, as
    # evaluation sees them. Evaluation reads whole images: in batches when the split has one size
    # (or data.image_size is set), one at a time otherwise, so no pixel is resized or padded away;
    # the module pads and tiles them for the net (SegmentationModule.whole_image_logits).
    def split_sizes(self, split: str) -> set[Size]:
        """The (height, width) sizes of the split's images as read (from the headers read at setup)."""
        for image, mask in self.split(split):
            if image not in self.sizes:
                self.sizes[image] = pair_layout(image, mask)[0].size[::-1]
        return {self.sizes[image] for image, _ in self.split(split)}

    def train_crop(self) -> int | None:
        """The side of the random training crops (None: whole images), resolved once and logged once."""
        if self._crop is None:
            self._crop = (self._resolve_crop(),)
        return self._crop[0]

    def _resolve_crop(self) -> int | None:
        if self.image_size or isinstance(self.crop_size, int):
            return None if self.crop_size == AUTO else self.crop_size
        sizes = self.split_sizes("train")
        smallest = min(min(size) for size in sizes)
        shown = ", ".join(f"{w}x{h}" for h, w in sorted(sizes)[:3]) + (" ..." if len(sizes) > 3 else "")
        if self.crop_size == AUTO and smallest > self.auto_crop_size:
            side, self._auto_crops = self.auto_crop_size, True
            _say(f"segmentation: data.crop_size=auto: the training images ({shown}) are larger than {side} px, so "
                 f"training uses random {side}x{side} crops in batches of {self.crop_batch_size or self.batch_size} "
                 "(data.crop_batch_size) and validation and test score whole images (data.crop_size=null trains on "
                 "whole images)")
            return side
        if len(sizes) < 2:
            return None
        side = min(smallest, self.auto_crop_size) if self.crop_size == AUTO else smallest
        _say(f"segmentation: the training images have {len(sizes)} sizes ({shown}); training on random "
             f"{side}x{side} crops and evaluating whole images one at a time (set data.image_size or data.crop_size "
             "to choose)")
        return side

    def _transform(self, train: bool) -> A.Compose:
        ops: list[Any] = []
        if self.image_size:
            ops.append(A.Resize(height=self.image_size, width=self.image_size))
        crop = self.train_crop() if train else None
        if crop:
            ops.append(A.RandomCrop(height=crop, width=crop, pad_if_needed=True))
        if train and self.augment:
            square = bool(self.image_size or crop) or all(h == w for h, w in self.split_sizes("train"))
            ops += [
                *flips_and_turns(square),
                A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
                A.GaussNoise(std_range=(0.01, 0.04), p=0.3),
            ]
        ops += [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
        return A.Compose(ops)

    def train_batch_size(self) -> int:
        """``data.crop_batch_size`` when ``data.crop_size=auto`` chose crops, else ``data.batch_size``.

        Why not keep the pixels per batch (a 256 px crop holds a quarter of a 512 px image): on small datasets
        that batch outgrows the training set, and the 13 training membranes at batch 8 already gave one step
        per epoch (the last partial batch is dropped), which collapsed one seed in two; crops in batches of 4
        scored test F1 0.85-0.91 where batch 8 scored 0.03-0.84 (docs/segmentation.md, "crops by default").
        """
        self.train_crop()
        return self.crop_batch_size if self._auto_crops and self.crop_batch_size else self.batch_size

    def train_dataloader(self):
        train = self.dataset("train")
        batch = self.train_batch_size()
        return self.make_loader(train, shuffle=True, drop_last=len(train) > batch, batch_size=batch)

    def dataset(self, split: str) -> SegmentationDataset:
        items = self.split(split)
        return SegmentationDataset(items, self._transform(train=split == "train"), self.foreground_value,
                                   ids=[self.item_id(item) for item in items])

    def eval_batch_size(self, split: str) -> int | None:
        """1 when the split's whole images differ in size (they cannot be stacked), else data.batch_size."""
        return 1 if not self.image_size and len(self.split_sizes(split)) > 1 else None

    def val_dataloader(self):
        return self.make_loader(self.dataset("val"), batch_size=self.eval_batch_size("val"))

    def test_dataloader(self):
        return self.make_loader(self.dataset("test"), batch_size=self.eval_batch_size("test"))

"""Segmentation data: pairing, foreground value, splits, dev mode and every bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from datamodules.segmentation import SegmentationDataModule, binarize, pair_images_and_masks
from datamodules.synthetic.segmentation import GENERATOR
from suite.errors import DataError
from tools.check_masks import check_folder
from tools.check_masks import main as check_masks_main


def write_pair(root: Path, stem: str, size=(32, 32), mask_size=None, ext=".png", mask_value=255) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    # distinct content per stem: identical images would count as duplicates of one item
    rng = np.random.default_rng(list(f"{root}/{stem}".encode()))
    cv2.imwrite(str(root / "images" / f"{stem}{ext}"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    mask = np.zeros(mask_size or size, np.uint8)
    mask[:4, :4] = mask_value
    cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)


def generate(folder: Path, n_images: int, size: int, seed: int) -> Path:
    return GENERATOR.ensure(folder, seed, n_images=n_images, size=size)


def test_synthetic_layout_and_foreground_fraction(tmp_path: Path) -> None:
    root = generate(tmp_path / "syn", n_images=12, size=64, seed=3)
    pairs = pair_images_and_masks(root)
    assert len(pairs) == 12
    fractions = [(cv2.imread(str(m), 0) > 0).mean() for _, m in pairs]
    assert 0.03 <= np.mean(fractions) <= 0.25
    # cached: a second call does not regenerate
    stamp = pairs[0][0].stat().st_mtime_ns
    generate(tmp_path / "syn", n_images=12, size=64, seed=3)
    assert pairs[0][0].stat().st_mtime_ns == stamp


def test_pairs_by_stem_across_extensions(tmp_path: Path) -> None:
    write_pair(tmp_path, "a", ext=".jpg")
    write_pair(tmp_path, "b", ext=".png")
    assert [i.stem for i, _ in pair_images_and_masks(tmp_path)] == ["a", "b"]


def test_foreground_value() -> None:
    mask = np.array([[0, 255], [255, 0]], np.uint8)
    assert binarize(mask, None).tolist() == [[0, 1], [1, 0]]
    assert binarize(mask, 0).tolist() == [[1, 0], [0, 1]]  # ISBI: membrane stored as 0


def test_image_without_mask_is_named(tmp_path: Path) -> None:
    write_pair(tmp_path, "a")
    cv2.imwrite(str(tmp_path / "images" / "lonely.png"), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"without a mask.*lonely\.png"):
        pair_images_and_masks(tmp_path)


def test_mask_without_image_is_named(tmp_path: Path) -> None:
    write_pair(tmp_path, "a")
    cv2.imwrite(str(tmp_path / "masks" / "orphan.png"), np.zeros((32, 32), np.uint8))
    with pytest.raises(DataError, match=r"without an image.*orphan\.png"):
        pair_images_and_masks(tmp_path)


def test_mask_of_another_size_is_named(tmp_path: Path) -> None:
    write_pair(tmp_path, "a")
    write_pair(tmp_path, "b", mask_size=(16, 32))
    with pytest.raises(DataError, match=r"mask size .* differs .*b\.png"):
        pair_images_and_masks(tmp_path)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    write_pair(tmp_path, "a")
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png at all")
    cv2.imwrite(str(tmp_path / "masks" / "broken.png"), np.zeros((32, 32), np.uint8))
    with pytest.raises(DataError, match=r"cannot read image.*broken\.png"):
        pair_images_and_masks(tmp_path)


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"no images"):
        pair_images_and_masks(tmp_path)


def test_missing_root_is_named(tmp_path: Path) -> None:
    dm = SegmentationDataModule(root=str(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"data.root: folder not found: .*nope"):
        dm.setup()


def test_seeded_split_dev_mode_and_batches(tmp_path: Path) -> None:
    root = generate(tmp_path / "syn", n_images=20, size=64, seed=0)
    dm = SegmentationDataModule(root=str(root), val_fraction=0.25, test_fraction=0.25, seed=1, batch_size=4)
    dm.setup()
    again = SegmentationDataModule(root=str(root), val_fraction=0.25, test_fraction=0.25, seed=1, batch_size=4)
    again.setup()
    assert dm.splits == again.splits
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 10, "val": 5, "test": 5}
    images = {name: {p for p, _ in items} for name, items in dm.splits.items()}
    assert not images["val"] & images["train"] and not images["test"] & (images["train"] | images["val"])
    spec = dm.spec()
    assert spec.split_sizes == {"train": 10, "val": 5, "test": 5}
    assert spec.label_map()["mask"] == {"background": 0, "foreground": 1}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["mask"].shape == (4, 1, 64, 64)
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    dev = SegmentationDataModule(root=str(root), dev_samples=8, seed=1)
    dev.setup()
    assert sum(len(v) for v in dev.splits.values()) == 8 and all(dev.splits.values())


def test_given_train_val_folders_hold_out_a_test_split_from_train(tmp_path: Path) -> None:
    for split, n in (("train", 5), ("val", 2)):
        for i in range(n):
            write_pair(tmp_path / split, f"{split}{i}")
    dm = SegmentationDataModule(root=str(tmp_path), test_fraction=0.2)
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 4, "val": 2, "test": 1}
    assert dm.splits["test"][0][0].parent.parent.name == "train"
    assert "held out as the test split" in dm.manifests_used()[-1][0]


def test_given_train_val_test_folders_are_used(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        for i in range(n):
            write_pair(tmp_path / split, f"{split}{i}")
    dm = SegmentationDataModule(root=str(tmp_path))
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 3, "val": 2, "test": 2}
    ids = dm.split_ids()
    assert ids["test"] == ["test/images/test0.png", "test/images/test1.png"]


def test_same_image_in_two_splits_is_refused(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        write_pair(tmp_path / split, "x")
    dm = SegmentationDataModule(root=str(tmp_path))
    dm.item_id = lambda item: item[0].name  # an id without the split folder: the same file name
    with pytest.raises(DataError, match=r"share 1 item.*x\.png"):
        dm.setup()


def test_augmentation_pipelines_use_current_albumentations_names(tmp_path: Path) -> None:
    dm = SegmentationDataModule(root=None, image_size=64, crop_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm._transform(train=True)
        dm._transform(train=False)


def test_check_masks_reports_each_problem(tmp_path: Path, capsys) -> None:
    write_pair(tmp_path, "good")
    write_pair(tmp_path, "empty", mask_value=0)
    write_pair(tmp_path, "grey")
    grey = np.zeros((32, 32), np.uint8)
    grey[:4, :4], grey[8:12, 8:12] = 255, 170  # CDnet-style "unknown" value: not a binary mask
    cv2.imwrite(str(tmp_path / "masks" / "grey.png"), grey)
    write_pair(tmp_path, "small", mask_size=(16, 16))
    cv2.imwrite(str(tmp_path / "images" / "nomask.png"), np.zeros((32, 32, 3), np.uint8))
    full = np.full((32, 32), 255, np.uint8)
    write_pair(tmp_path, "full")
    cv2.imwrite(str(tmp_path / "masks" / "full.png"), full)
    report = check_folder(tmp_path)
    assert [Path(p).stem for p in report.empty] == ["empty"]
    assert [Path(p).stem for p in report.all_foreground] == ["full"]
    assert len(report.non_binary) == 1 and "grey" in report.non_binary[0]
    assert len(report.size_mismatch) == 1 and "small" in report.size_mismatch[0]
    assert [Path(p).stem for p in report.image_without_mask] == ["nomask"]
    assert check_masks_main([f"data.root={tmp_path}", "--json", str(tmp_path / "r.json")]) == 1
    assert (tmp_path / "r.json").is_file()
    assert check_masks_main(["data.rot=x"]) == 2

"""Segmentation data: pairing, foreground value, splits, dev mode and every bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from datamodules.images import orient
from datamodules.segmentation import SegmentationDataModule, binarize, pair_images_and_masks
from datamodules.synthetic.segmentation import GENERATOR
from suite.errors import ConfigError, DataError


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


def test_synthetic_sparse_foreground(tmp_path: Path) -> None:
    root = GENERATOR.ensure(tmp_path / "sparse", 0, n_images=12, size=64, foreground=[0.01, 0.02])
    fractions = [(cv2.imread(str(m), 0) > 0).mean() for _, m in pair_images_and_masks(root)]
    # whole objects are added until the drawn fraction is reached, never past 1.1 x the range's top
    assert all(0.005 <= f <= 0.022 for f in fractions), fractions
    assert 0.01 <= np.mean(fractions) <= 0.02


@pytest.mark.parametrize("foreground", [[0.2, 0.1], [0.0, 0.02], [0.5], "sparse"])
def test_synthetic_foreground_range_is_checked(foreground, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="foreground="):
        SegmentationDataModule(synthetic_dir=str(tmp_path), synthetic_foreground=foreground)


def test_synthetic_foreground_key_reaches_the_generator(tmp_path: Path) -> None:
    dm = SegmentationDataModule(synthetic_dir=str(tmp_path), synthetic_foreground=(0.01, 0.02))
    generator, params = dm.synthetic()
    assert params["foreground"] == [0.01, 0.02]
    # another range is another cached dataset
    assert generator.folder(tmp_path, 0, **params) != generator.folder(tmp_path, 0, n_images=200, size=128)


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


# -- masks read as meant, or refused with what was found ------------------------------------------------
def write_masks(root: Path, n: int, save) -> None:
    """``n`` distinct images and masks whose foreground is a block; ``save(path_without_suffix, mask01)``."""
    for i in range(n):
        write_pair(root, f"m{i}")
        (root / "masks" / f"m{i}.png").unlink()
        mask = np.zeros((32, 32), np.uint8)
        mask[4 + i:14 + i, 6:20] = 1
        save(root / "masks" / f"m{i}", mask)


def batches_foreground(dm: SegmentationDataModule) -> float:
    dm.setup()
    return float(np.mean([b["mask"].mean().item() for b in dm.val_dataloader()]))


def test_16_bit_masks_with_values_0_1_are_read_as_binary(tmp_path: Path) -> None:
    write_masks(tmp_path, 6, lambda p, m: cv2.imwrite(f"{p}.png", m.astype(np.uint16)))
    assert batches_foreground(SegmentationDataModule(root=str(tmp_path), augment=False)) > 0.1  # was 0: >>8
    assert batches_foreground(SegmentationDataModule(root=str(tmp_path), foreground_value=1)) > 0.1


@pytest.mark.parametrize(("case", "foreground_value", "message"), [
    ("colour", None, r"masks of .* cannot be trained on: 6 of 6 masks read cannot be used: mask is in colour: "
                     r".*m0\.png holds the colours \(0, 0, 0\) .*\(255, 0, 0\)"),
    ("absent", 255, r"data.foreground_value=255 is in none of the 6 masks \(values found: 0 \(in 6 masks\), "
                    r"1 \(in 6 masks\).*set .*data.foreground_value=1"),
    ("jpeg", None, r"6 JPEG mask\(s\) hold more than two values, e.g. .*m\d\.jpg holds \d+ values .*PNG"),
    ("empty", None, r"every mask is empty: none of the 6 masks has a foreground pixel"),
])
def test_masks_that_would_train_on_nothing_are_refused_at_setup(tmp_path: Path, case: str, foreground_value,
                                                                  message: str) -> None:
    save = {
        "colour": lambda p, m: cv2.imwrite(f"{p}.png", np.dstack([0 * m, 0 * m, 255 * m])),  # red (BGR)
        "absent": lambda p, m: cv2.imwrite(f"{p}.png", m),
        "jpeg": lambda p, m: cv2.imwrite(f"{p}.jpg", 255 * m, [cv2.IMWRITE_JPEG_QUALITY, 75]),
        "empty": lambda p, m: cv2.imwrite(f"{p}.png", 0 * m),
    }[case]
    write_masks(tmp_path, 6, save)
    with pytest.raises(DataError, match=message):
        SegmentationDataModule(root=str(tmp_path), foreground_value=foreground_value).setup()


def test_exif_rotated_photos_align_with_their_masks(tmp_path: Path) -> None:
    """A 32x24 photo stored landscape with orientation 6 (shown portrait) and a mask of the stored size:
    both are turned, so the red foreground marks and the mask overlap exactly (it was overlap 0)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        pattern = np.zeros((24, 32), bool)
        pattern[2 + i:10 + i, 3:25] = True
        image = np.zeros((24, 32, 3), np.uint8)
        image[..., 0], image[..., 1] = pattern * 255, rng.integers(0, 200, (24, 32))
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(image).save(tmp_path / "images" / f"p{i}.png", exif=exif.tobytes())
        cv2.imwrite(str(tmp_path / "masks" / f"p{i}.png"), pattern.astype(np.uint8) * 255)
    dm = SegmentationDataModule(root=str(tmp_path), batch_size=2, augment=False)
    dm.setup()
    for batch in dm.val_dataloader():
        assert batch["image"].shape[-2:] == (32, 24)  # shown portrait
        red = batch["image"][:, 0] > 0  # normalised: foreground red 255 is far above 0
        assert red.eq(batch["mask"][:, 0].bool()).all()
    assert orient(np.zeros((24, 32)), 6).shape == (32, 24)


# -- images of any size train and evaluate ---------------------------------------------------------------
def sized_dataset(root: Path, sizes: list[tuple[int, int]]) -> Path:
    for i, (h, w) in enumerate(sizes):
        write_pair(root, f"s{i:02d}", size=(h, w))
    return root


def test_non_square_images_of_one_size_train_with_the_default_augmentation(tmp_path: Path) -> None:
    sized_dataset(tmp_path, [(48, 64)] * 12)  # 640x480-style; RandomRotate90 made some 64x48: stack failed
    dm = SegmentationDataModule(root=str(tmp_path), batch_size=4, seed=0)
    dm.setup()
    for _ in range(3):
        for batch in dm.train_dataloader():
            assert batch["image"].shape[1:] == (3, 48, 64) and batch["mask"].shape[1:] == (1, 48, 64)
    assert dm.eval_batch_size("val") is None  # one size: batches of data.batch_size
    assert next(iter(dm.val_dataloader()))["image"].shape[1:] == (3, 48, 64)


def test_images_of_mixed_sizes_train_on_crops_and_evaluate_whole(tmp_path: Path) -> None:
    sized_dataset(tmp_path, [(48, 64), (64, 64), (40, 56), (64, 80)] * 3)
    dm = SegmentationDataModule(root=str(tmp_path), batch_size=4, seed=0)
    dm.setup()
    assert dm.train_crop() == min(min(s) for s in dm.split_sizes("train"))
    for batch in dm.train_dataloader():
        side = dm.train_crop()
        assert batch["image"].shape[1:] == (3, side, side)
    assert dm.eval_batch_size("test") == 1
    whole = {tuple(b["image"].shape[2:]) for b in dm.test_dataloader()}
    assert whole == dm.split_sizes("test")  # each image at its own size, nothing resized
    resized = SegmentationDataModule(root=str(tmp_path), batch_size=4, image_size=32)
    resized.setup()
    assert resized.eval_batch_size("test") is None
    assert {tuple(b["image"].shape[2:]) for b in resized.test_dataloader()} == {(32, 32)}


# -- files that cannot be paired or read ------------------------------------------------------------------
def test_unpaired_files_are_counted_with_examples_in_one_message(tmp_path: Path) -> None:
    for i in range(7):
        write_pair(tmp_path, f"img_{i}")
        (tmp_path / "masks" / f"img_{i}.png").rename(tmp_path / "masks" / f"mask_{i}.png")
    write_pair(tmp_path, "ok")
    with pytest.raises(DataError, match=r"7 image\(s\) without a mask in .*masks: .*img_0\.png.*\(2 more\) and "
                                        r"7 mask\(s\) without an image in .*images: .*mask_0\.png.*\(1 paired\)"):
        pair_images_and_masks(tmp_path)


def test_two_images_for_one_stem_are_named(tmp_path: Path) -> None:
    write_pair(tmp_path, "a")
    write_pair(tmp_path, "a", ext=".jpg")
    with pytest.raises(DataError, match=r"two images for one stem .*a\.jpg, .*a\.png"):
        pair_images_and_masks(tmp_path)


@pytest.mark.parametrize("damage", ["zero bytes", "truncated"])
def test_damaged_masks_fail_at_setup_naming_the_file(tmp_path: Path, damage: str) -> None:
    for i in range(4):
        write_pair(tmp_path, f"d{i}")
    bad = tmp_path / "masks" / "d2.png"
    bad.write_bytes(b"" if damage == "zero bytes" else bad.read_bytes()[:60])
    with pytest.raises(DataError, match=r"1 of 4 image/mask pairs .* cannot be read: .*masks/d2\.png"):
        SegmentationDataModule(root=str(tmp_path)).setup()


# -- data.crop_size=auto: crops of large images, whole images otherwise -------------------------------------
def test_auto_crop_trains_large_images_on_crops_and_evaluates_them_whole(tmp_path: Path, caplog, capsys) -> None:
    sized_dataset(tmp_path, [(80, 96)] * 12)
    dm = SegmentationDataModule(root=str(tmp_path), batch_size=8, auto_crop_size=32, crop_batch_size=4, seed=0)
    with caplog.at_level("INFO", logger="datamodules.segmentation"):
        dm.setup()
        assert dm.train_crop() == 32
        train = [tuple(b["image"].shape) for b in dm.train_dataloader()]
        dm.train_dataloader()
        assert dm.input_spec().shape == (3, 32, 32)  # what a predictor reads as the training size
    assert set(train) == {(4, 3, 32, 32)} and dm.train_batch_size() == 4  # crops in batches of crop_batch_size
    assert {tuple(b["image"].shape[2:]) for b in dm.val_dataloader()} == {(80, 96)}  # evaluation: whole images
    chosen = [r.message for r in caplog.records if "crop_size=auto" in r.message]
    assert len(chosen) == 1 and "32x32 crops" in chosen[0]  # said once, however often the loaders are built
    assert capsys.readouterr().out.count("crop_size=auto") == 1  # on the console too: train.py logs to a file


def test_auto_crop_keeps_images_no_larger_than_the_crop_whole(tmp_path: Path) -> None:
    sized_dataset(tmp_path, [(32, 48)] * 12)
    dm = SegmentationDataModule(root=str(tmp_path), batch_size=4, auto_crop_size=32)
    dm.setup()
    assert dm.train_crop() is None and dm.input_spec().shape == (3, None, None)
    assert {tuple(b["image"].shape[2:]) for b in dm.train_dataloader()} == {(32, 48)}


def test_auto_crop_of_mixed_sizes_is_at_most_the_auto_crop_size(tmp_path: Path) -> None:
    sized_dataset(tmp_path, [(48, 64), (64, 64), (40, 56), (64, 80)] * 3)
    small_side = SegmentationDataModule(root=str(tmp_path), auto_crop_size=256)
    assert small_side.train_crop() == 40  # the smallest side, as before
    assert SegmentationDataModule(root=str(tmp_path), auto_crop_size=32).train_crop() == 32


@pytest.mark.parametrize(("options", "crop"), [({"crop_size": 48}, 48), ({"crop_size": None}, None),
                                               ({"image_size": 64}, None), ({"image_size": 64, "crop_size": 40}, 40)])
def test_explicit_crop_and_image_size_win_over_auto(tmp_path: Path, options: dict, crop: int | None) -> None:
    sized_dataset(tmp_path, [(80, 96)] * 12)
    dm = SegmentationDataModule(root=str(tmp_path), auto_crop_size=32, batch_size=6, crop_batch_size=4, **options)
    assert dm.train_crop() == crop
    assert dm.train_batch_size() == 6  # data.crop_batch_size is for the crops auto chose, not for chosen ones


def test_unknown_crop_word_is_refused() -> None:
    with pytest.raises(DataError, match="data.crop_size='big'"):
        SegmentationDataModule(crop_size="big")

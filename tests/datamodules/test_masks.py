"""The dataset-wide mask check: every way of training on nothing is refused with what was found."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from datamodules.masks import check_masks, evenly_spread
from suite.errors import DataError


def masks(folder: Path, values: list[np.ndarray], suffix: str = ".png", params: list[int] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, mask in enumerate(values):
        path = folder / f"{i:03d}{suffix}"
        assert cv2.imwrite(str(path), mask, params or [])
        paths.append(path)
    return paths


def blob(value: int = 255, dtype=np.uint8, size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), dtype)
    mask[8:20, 10:24] = value
    return mask


def test_binary_masks_pass(tmp_path: Path) -> None:
    check = check_masks(masks(tmp_path, [blob(), blob(), np.zeros((32, 32), np.uint8)]), "data")
    assert check.errors(None) == [] and check.errors(255) == [] and check.warnings(None) == []


def test_foreground_value_in_no_mask_lists_the_values_found(tmp_path: Path) -> None:
    check = check_masks(masks(tmp_path, [blob(1), blob(1)]), "data")
    with pytest.raises(DataError, match=r"data.foreground_value=255 is in none of the 2 masks \(values found: 0 \(in "
                                        r"2 masks\), 1 \(in 2 masks\); stored as uint8\); .*data.foreground_value=1"):
        check.raise_errors(255)
    check.raise_errors(None)  # any non-zero value: 1 is foreground
    check.raise_errors(1)


def test_16_bit_masks_are_named_in_the_values_found(tmp_path: Path) -> None:
    check = check_masks(masks(tmp_path, [blob(65535, np.uint16)]), "data")
    with pytest.raises(DataError, match=r"values found: 0 .*65535 .*stored as uint16.*foreground_value=65535"):
        check.raise_errors(255)


def test_every_mask_empty_or_full_is_refused(tmp_path: Path) -> None:
    empty = check_masks(masks(tmp_path, [np.zeros((8, 8), np.uint8)] * 3), "data")
    with pytest.raises(DataError, match=r"every mask is empty: none of the 3 masks"):
        empty.raise_errors(None)
    full = check_masks(masks(tmp_path / "full", [np.full((8, 8), 255, np.uint8)] * 2), "data")
    with pytest.raises(DataError, match=r"every mask is all foreground"):
        full.raise_errors(255)


def test_lossy_jpeg_masks_are_refused_with_the_count_of_off_values(tmp_path: Path) -> None:
    paths = masks(tmp_path, [blob()] * 2, suffix=".jpg", params=[cv2.IMWRITE_JPEG_QUALITY, 70])
    check = check_masks(paths, "data")
    with pytest.raises(DataError, match=r"2 JPEG mask\(s\) hold more than two values, e.g. .*\.jpg holds \d+ values "
                                        r"\(\d+ of 1024 pixels are neither of its two main values \{\d+, \d+\}\).*PNG"):
        check.raise_errors(255)


def test_colour_masks_are_collected_in_one_message(tmp_path: Path) -> None:
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[:4, :4] = (0, 0, 255)
    check = check_masks(masks(tmp_path, [colour, colour, blob()]), "data")
    assert len(check.refused) == 2 and len(check.checked) == 1
    with pytest.raises(DataError, match=r"2 of 3 masks read cannot be used: mask is in colour: .*000\.png"):
        check.raise_errors(None)


def test_more_than_two_values_is_a_warning_with_any_non_zero_foreground(tmp_path: Path) -> None:
    cdnet = blob()
    cdnet[0:4, 0:4] = 170  # CDnet's "unknown" value
    check = check_masks(masks(tmp_path, [cdnet, blob()]), "data")
    assert check.errors(None) == []
    (warning,) = check.warnings(None)
    assert "000.png ({0, 170, 255})" in warning and "data.foreground_value=<v>" in warning
    assert check.warnings(255) == []


def test_large_datasets_are_checked_on_an_even_sample(tmp_path: Path) -> None:
    paths = masks(tmp_path, [np.zeros((4, 4), np.uint8)] * 9 + [np.eye(4, dtype=np.uint8)])
    assert evenly_spread(paths, 3) == [paths[0], paths[4], paths[9]]
    check = check_masks(paths, "data", limit=3)
    assert check.read == 3 and check.total == 10
    check.raise_errors(None)  # the sample holds the last (non-empty) mask
    empty_sample = check_masks(paths[:9], "data", limit=2)
    with pytest.raises(DataError, match=r"none of the 2 masks checked \(of 9, evenly spread\)"):
        empty_sample.raise_errors(None)

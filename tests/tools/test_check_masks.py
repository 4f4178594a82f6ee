"""tools.check_masks: every problem training would refuse or read wrong is reported per file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from tests.datamodules.test_segmentation import write_pair
from tools.check_masks import check_folder, check_root, main


def test_reports_each_problem(tmp_path: Path) -> None:
    write_pair(tmp_path, "good")
    write_pair(tmp_path, "empty", mask_value=0)
    write_pair(tmp_path, "grey")
    grey = np.zeros((32, 32), np.uint8)
    grey[:4, :4], grey[8:12, 8:12] = 255, 170  # CDnet-style "unknown" value: not a binary mask
    cv2.imwrite(str(tmp_path / "masks" / "grey.png"), grey)
    write_pair(tmp_path, "small", mask_size=(16, 16))
    cv2.imwrite(str(tmp_path / "images" / "nomask.png"), np.zeros((32, 32, 3), np.uint8))
    write_pair(tmp_path, "full")
    cv2.imwrite(str(tmp_path / "masks" / "full.png"), np.full((32, 32), 255, np.uint8))
    write_pair(tmp_path, "colour")
    cv2.imwrite(str(tmp_path / "masks" / "colour.png"), np.dstack([np.zeros((32, 32), np.uint8)] * 2 + [grey]))
    write_pair(tmp_path, "lossy")
    (tmp_path / "masks" / "lossy.png").unlink()
    cv2.imwrite(str(tmp_path / "masks" / "lossy.jpg"), grey, [cv2.IMWRITE_JPEG_QUALITY, 70])
    write_pair(tmp_path, "cut")
    (tmp_path / "masks" / "cut.png").write_bytes(b"")
    write_pair(tmp_path, "m16")
    mask16 = np.zeros((32, 32), np.uint16)
    mask16[:8, :8] = 1
    cv2.imwrite(str(tmp_path / "masks" / "m16.png"), mask16)

    report = check_folder(tmp_path)
    assert [Path(p).stem for p in report.empty] == ["empty"]
    assert [Path(p).stem for p in report.all_foreground] == ["full"]
    assert len(report.non_binary) == 1 and "grey" in report.non_binary[0]
    assert len(report.size_mismatch) == 1 and "small" in report.size_mismatch[0]
    assert [Path(p).stem for p in report.image_without_mask] == ["nomask"]
    assert len(report.not_a_mask) == 1 and "colour.png holds the colours" in report.not_a_mask[0]
    assert len(report.lossy) == 1 and "lossy.jpg" in report.lossy[0]
    assert len(report.unreadable) == 1 and "cut.png" in report.unreadable[0]
    assert report.dataset == []
    assert report.warnings and "of the 6 masks hold more than two values" in report.warnings[0]
    m16 = sorted(report.foreground_fraction)  # the 16-bit {0,1} mask counts its 64 foreground pixels
    assert 64 / 1024 in m16
    assert main([f"data.root={tmp_path}", "--json", str(tmp_path / "r.json")]) == 1
    assert json.loads((tmp_path / "r.json").read_text())["unusable"] == 5
    assert main(["data.rot=x"]) == 2
    assert main([f"data.root={tmp_path}", "data.foreground_value=abc"]) == 2


def test_a_foreground_value_no_mask_holds_is_unusable(tmp_path: Path, capsys) -> None:
    for i in range(3):
        write_pair(tmp_path, f"a{i}", mask_value=1)
    assert main([f"data.root={tmp_path}"]) == 0
    assert main([f"data.root={tmp_path}", "data.foreground_value=255"]) == 1
    out = capsys.readouterr().out
    assert "data.foreground_value=255 is in none of the 3 masks" in out and "data.foreground_value=1" in out


def test_split_folders_are_each_checked(tmp_path: Path) -> None:
    for split in ("train", "val"):
        write_pair(tmp_path / split, f"{split}0")
    assert [Path(r.root).name for r in check_root(tmp_path)] == ["train", "val"]

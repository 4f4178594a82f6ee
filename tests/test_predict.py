"""predict.py: the command line's refusals (exit 2), and a segmentation run and its exported bundle agreeing.

The command-line tests use a bundle exported from a one-layer network (seconds); the slow test trains a
tiny segmentation run with the export on, as ``python train.py`` would, and compares the masks that
``predict.py <run>`` (PyTorch) and ``predict.py <run>/export`` (ONNX Runtime) write.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from predict import main as predict_main
from suite.contracts import DataSpec, Head, InputSpec
from suite.exporting import export_module
from suite.inference import ExportGraph

SPEC = DataSpec("segmentation", (Head("mask", ("background", "foreground"), positive=1),),
                InputSpec("image", (3, 16, 16), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))


class RedIsForeground(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((images[:, :1] - 127.5) / 10.0)


class TinyModule:
    spec = SPEC

    def export_graphs(self) -> list[ExportGraph]:
        return [ExportGraph("model", RedIsForeground(), torch.rand(2, 3, 16, 16) * 255, input_name="image",
                            output_names=("foreground",), dynamic_axes=(0, 2, 3))]

    def inference_options(self) -> dict:
        return {"threshold": 0.5, "train_size": [16, 16]}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "export"
    export_module(TinyModule(), out, None, latency_runs=0)
    return out


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rgb = np.zeros((24, 40, 3), np.uint8)
    rgb[:, :10, 0] = 255
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


def exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        predict_main(argv)
    return int(info.value.code)


def test_a_bundle_predicts_a_folder(bundle: Path, images: Path, tmp_path: Path) -> None:
    predict_main([str(bundle), str(images), "--out", str(tmp_path / "out"), "--no-progress", "large=resize"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["backend"] == "onnx" and summary["options"]["large"] == "resize"
    (row,) = csv.DictReader(open(tmp_path / "out" / "predictions.csv"))
    assert row["mode"] == "resize" and abs(float(row["foreground_fraction"]) - 0.25) < 0.05


def test_bad_command_lines_exit_2_naming_the_problem(bundle: Path, images: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    broken = tmp_path / "broken_bundle"  # a manifest whose graph file is gone
    broken.mkdir()
    (broken / "preprocessing.json").write_text((bundle / "preprocessing.json").read_text())
    (taken / "mine.txt").write_text("keep")
    cases = {
        "exists and is not empty": [str(bundle), str(images), "--out", str(taken)],
        "input not found": [str(bundle), str(tmp_path / "missing"), "--out", str(tmp_path / "o1")],
        "unknown segmentation predict option": [str(bundle), str(images), "tile=64", "--out", str(tmp_path / "o2")],
        "not a run directory": [str(tmp_path), str(images), "--out", str(tmp_path / "o3")],
        "give at least one input": [str(bundle)],
        "--threads must be at least 1": [str(bundle), str(images), "--threads", "0"],
        "bundle graph 'model' is missing": [str(broken), str(images), "--out", str(tmp_path / "o4")],
    }
    for message, argv in cases.items():
        assert exit_code(argv) == 2, message
        assert message in capsys.readouterr().err, message
    assert (taken / "mine.txt").read_text() == "keep" and sorted(p.name for p in taken.iterdir()) == ["mine.txt"]
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "o4"))


def test_options_are_listed(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    predict_main([str(bundle), "--options"])
    assert "large=tile" in capsys.readouterr().out


def _masks(folder: Path) -> dict[str, np.ndarray]:
    files = sorted((folder / "pictures" / "masks").glob("*.png"))
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) > 0 for p in files}


@pytest.mark.slow
def test_checkpoint_and_bundle_give_the_same_masks(tmp_path: Path) -> None:
    """train.py exports after its final test; predict.py on the run (PyTorch) and on export/ (ONNX Runtime)
    write the same masks, tiled at the training crop; export_run re-exports the finished run."""
    from suite.exporting import export_run
    from tests.deploy.predictors.conftest import train_tiny_run

    run = train_tiny_run(["data.synthetic_images=24", "data.synthetic_size=64", "data.crop_size=32",
                          "model.log_images=0", "model.net.decoder_channels=[16,16,16,8,8]",
                          "callbacks.onnx_export.enabled=true", "callbacks.onnx_export.strict=true"], tmp_path)
    parity = json.loads((run / "export" / "parity.json").read_text())
    assert parity["passed"] and parity["checkpoint"].endswith("best.ckpt")
    assert parity["graphs"]["model"]["inputs"] == "test split" and parity["graphs"]["model"]["items"] >= 1
    images = next((tmp_path / "data").rglob("images"))
    for source, out in ((run, "torch"), (run / "export", "onnx")):
        predict_main([str(source), str(images), "--out", str(tmp_path / out), "--no-progress"])
    torch_masks, onnx_masks = _masks(tmp_path / "torch"), _masks(tmp_path / "onnx")
    assert torch_masks.keys() == onnx_masks.keys() and len(torch_masks) == 24
    assert all(m.shape == (64, 64) for m in torch_masks.values())
    inter = sum(int((torch_masks[k] & onnx_masks[k]).sum()) for k in torch_masks)
    union = sum(int((torch_masks[k] | onnx_masks[k]).sum()) for k in torch_masks)
    assert (inter / union if union else 1.0) >= 0.99
    rows = list(csv.DictReader(open(tmp_path / "onnx" / "predictions.csv")))
    assert {r["mode"] for r in rows} == {"tile"}

    again = export_run(run, out=tmp_path / "again", latency_runs=0)
    assert again["passed"] and again["graphs"]["model"]["inputs"] == "test split"
    moved = export_run(run, out=tmp_path / "no_data", latency_runs=0, overrides=[f"data.root={tmp_path / 'gone'}"])
    assert moved["graphs"]["model"]["inputs"].startswith("graph example (the run's test split could not be read")

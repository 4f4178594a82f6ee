"""suite.exporting: graphs to ONNX with dynamic axes, ONNX Runtime's parity against PyTorch, the bundle as a unit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from suite.contracts import DataSpec, Head, InputSpec
from suite.errors import UserError
from suite.exporting import (
    DEFAULT_OPSET,
    ParityError,
    ParityInputs,
    _agreement_kind,
    export_module,
)
from suite.inference import ExportGraph

SPEC = DataSpec("segmentation", (Head("mask", ("background", "foreground"), positive=1),),
                InputSpec("image", (3, None, None), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))


class TinyMaskNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(images / 255.0 - 0.5))


class Branchy(nn.Module):
    """Data-dependent control flow: the trace keeps the branch of the example, so ONNX disagrees elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x.mean(1, keepdim=True) / 255.0) if x.mean() > 100 else torch.zeros_like(x[:, :1])


class FakeModule:
    """The inference side of a task module, without Lightning."""

    def __init__(self, network: nn.Module, example: torch.Tensor | None = None):
        torch.manual_seed(0)
        self.spec = SPEC
        self.network = network
        self.example = example if example is not None else torch.randint(0, 256, (2, 3, 16, 16)).float()

    def export_graphs(self) -> list[ExportGraph]:
        return [ExportGraph("model", self.network, self.example, input_name="image", output_names=("foreground",),
                            dynamic_axes=(0, 2, 3))]

    def export_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"model": batch["image"]}

    def inference_options(self) -> dict[str, Any]:
        return {"threshold": 0.5, "train_size": None}


def test_bundle_files_parity_and_dynamic_height_width(tmp_path: Path) -> None:
    import onnxruntime as ort

    module = FakeModule(TinyMaskNet())
    batches = [torch.randint(0, 256, (3, 3, 20, 24)).float(), torch.randint(0, 256, (2, 3, 20, 24)).float()]
    parity = export_module(module, tmp_path / "export", {"model": batches}, latency_runs=2)
    out = tmp_path / "export"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "model.onnx", "parity.json", "preprocessing.json", "spec.json"]
    on_disk = json.loads((out / "parity.json").read_text())
    assert on_disk == json.loads(json.dumps(parity))
    graph = on_disk["graphs"]["model"]
    assert on_disk["passed"] and on_disk["opset"] == DEFAULT_OPSET
    assert graph["items"] == 5 and graph["batches"] == 2 and graph["inputs"] == "test split"
    figures = graph["outputs"]["foreground"]
    assert figures["agreement_kind"] == "mask_iou" and figures["agreement"] == 1.0 and figures["max_abs_diff"] < 1e-5
    assert graph["latency"]["torch"] > 0 and graph["latency"]["onnxruntime"] > 0
    meta = json.loads((out / "preprocessing.json").read_text())
    assert meta["graphs"]["model"]["input_shape"] == [None, 3, None, None]
    assert json.loads((out / "spec.json").read_text())["task"] == "segmentation"
    # batch, height and width are free: a size the export never saw runs and matches PyTorch
    x = torch.randint(0, 256, (1, 3, 37, 53)).float()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, module.network(x).numpy(), atol=1e-5)


def test_without_parity_inputs_the_example_stands_in_and_says_so(tmp_path: Path) -> None:
    parity = export_module(FakeModule(TinyMaskNet()), tmp_path / "export", None, latency_runs=0,
                           no_data_reason="the data folder is gone")
    graph = parity["graphs"]["model"]
    assert graph["inputs"].startswith("graph example (the data folder is gone)") and graph["items"] == 2
    assert "latency" not in graph


def test_disagreement_is_recorded_or_refused_when_strict(tmp_path: Path) -> None:
    # traced on a bright example (first branch); parity inputs are dark (the other branch in PyTorch)
    module = FakeModule(Branchy(), example=torch.full((2, 3, 8, 8), 200.0))
    dark = {"model": [torch.full((2, 3, 8, 8), 10.0)]}
    parity = export_module(module, tmp_path / "loose", dark, latency_runs=0)
    assert not parity["passed"] and not parity["graphs"]["model"]["passed"]
    assert parity["graphs"]["model"]["outputs"]["foreground"]["agreement"] == 0.0
    assert json.loads((tmp_path / "loose" / "parity.json").read_text())["passed"] is False

    good = export_module(FakeModule(TinyMaskNet()), tmp_path / "strict", None, latency_runs=0)
    before = (tmp_path / "strict" / "parity.json").read_text()
    with pytest.raises(ParityError, match="disagrees with PyTorch"):
        export_module(module, tmp_path / "strict", dark, latency_runs=0, strict=True)
    # the earlier bundle is left whole, and no partial folder stays behind
    assert (tmp_path / "strict" / "parity.json").read_text() == before and good["passed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loose", "strict"]


def test_an_earlier_bundle_is_replaced_whole_and_other_folders_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "export"
    export_module(FakeModule(TinyMaskNet()), out, None, latency_runs=0)
    (out / "stale.onnx").write_bytes(b"old")
    export_module(FakeModule(TinyMaskNet()), out, None, latency_runs=0)
    assert not (out / "stale.onnx").exists() and (out / "model.onnx").is_file()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="did not write"):
        export_module(FakeModule(TinyMaskNet()), mine, None, latency_runs=0)
    assert (mine / "notes.txt").read_text() == "keep"


def test_opset_below_the_lowest_that_keeps_the_numerics_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="opset >= 11"):
        export_module(FakeModule(TinyMaskNet()), tmp_path / "export", None, opset=9)
    assert not (tmp_path / "export").exists()


def test_parity_inputs_keep_at_most_the_limit_per_graph() -> None:
    collected = ParityInputs(limit=5)
    module = FakeModule(TinyMaskNet())
    for _ in range(4):
        collected.add(module, {"image": torch.ones(2, 3, 4, 4)})
    assert collected.full and collected.count("model") == 5
    assert [t.shape[0] for t in collected.inputs["model"]] == [2, 2, 1]
    with pytest.raises(UserError):
        ParityInputs(limit=0)


@pytest.mark.parametrize(("shape", "kind"), [((4, 1, 8, 8), "mask_iou"), ((4, 5), "top1"), ((4, 1), "threshold"),
                                             ((4,), "threshold")])
def test_agreement_kind_follows_the_output_shape(shape: tuple[int, ...], kind: str) -> None:
    assert _agreement_kind(shape) == kind


def test_segmentation_module_graph_has_preprocessing_inside(tmp_path: Path) -> None:
    """The segmentation graph takes raw RGB 0-255 and returns the sigmoid of the net on normalised input."""
    from lightning_modules.nets.segmentation import UNet
    from lightning_modules.segmentation import SegmentationModule

    module = SegmentationModule(UNet("resnet18", decoder_channels=(16, 16, 16, 8, 8)), nn.BCEWithLogitsLoss(),
                                optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    module.configure(SPEC)
    module.eval()
    (graph,) = module.export_graphs()
    raw = torch.randint(0, 256, (2, 3, 32, 48)).float()
    normalised = (raw / 255.0 - 0.5) / 0.25
    with torch.no_grad():
        np.testing.assert_allclose(graph.network(raw).numpy(), torch.sigmoid(module(normalised)).numpy(), atol=1e-5)
    back = module.export_inputs({"image": normalised})["model"]
    np.testing.assert_allclose(back.numpy(), raw.numpy(), atol=1e-3)
    assert module.inference_options() == {"threshold": 0.5, "train_size": None, "tile_size": 1024, "tile_overlap": 0.25}
    parity = export_module(module, tmp_path / "export", {"model": [raw]}, latency_runs=0)
    assert parity["passed"] and parity["graphs"]["model"]["outputs"]["foreground"]["max_abs_diff"] < 1e-4

"""conf/model/net/lego_edge.yaml: the LEGO classifier on EfficientNet-Lite0, the int8-friendly backbone."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from hydra.utils import instantiate

import export
from tests.conftest import compose_train_config


def _net(overrides: list[str], tmp_path: Path) -> torch.nn.Module:
    cfg = compose_train_config(["experiment=lego_multitask", "model.pretrained=false", *overrides], tmp_path / "run")
    return instantiate(cfg.model.net)(num_parts=3, num_colors=2).eval()


def test_edge_preset_has_no_squeeze_excite_and_relu6(tmp_path: Path) -> None:
    edge = _net(["+model/net=lego_edge"], tmp_path)
    assert edge.backbone.default_cfg["architecture"] == "efficientnet_lite0"
    modules = list(edge.backbone.modules())
    assert any(isinstance(m, torch.nn.ReLU6) for m in modules)
    assert not any(isinstance(m, torch.nn.SiLU) for m in modules)
    example = torch.rand(2, 3, 32, 32) * 255
    path = tmp_path / "edge.onnx"
    export.export_onnx(edge, path, example)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Sigmoid" not in ops and "Clip" in ops  # ReLU6 is a Clip that folds into the int8 conv
    assert export.layer_groups(path)["se"] == []
    default = _net([], tmp_path)  # the preset changes only the backbone: EfficientNet-B0 has 16 SE blocks
    export.export_onnx(default, tmp_path / "b0.onnx", example)
    se = export.layer_groups(tmp_path / "b0.onnx")["se"]
    assert sum(1 for name in set(se) if "ReduceMean" in name or "mean" in name.lower()) == 16

"""Every exportable network of the suite through one contract test: forward shape, backward,
``torch.onnx`` export, and ONNX Runtime agreeing with PyTorch on the same input.

Add a network here when you add a task (``docs/adding_a_task.md``); the nets are built small (tiny
inputs, random weights) so the whole table runs in well under a minute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lightning_modules.nets.behavior import ClipClassifier
from lightning_modules.nets.lego import LegoClassifier
from lightning_modules.nets.relevance import ContrastiveNet
from lightning_modules.nets.segmentation import UNet
from lightning_modules.nets.violence import FrameEncoder, HybridBiLSTM, StackedBiLSTM


@dataclass
class NetCase:
    build: Callable[[], nn.Module]
    example: Callable[[], torch.Tensor]
    shapes: tuple[tuple[int, ...], ...]  # expected output shapes for the example
    atol: float = 1e-4


def _frame_encoder_network() -> nn.Module:
    encoder = FrameEncoder(backbone="resnet18", pretrained=False, frame_size=32, feature_dim=512, seed=0)
    return encoder.load(device="cpu").model


CASES = {
    "segmentation.UNet": NetCase(lambda: UNet("resnet18", num_classes=1), lambda: torch.rand(2, 3, 64, 64),
                                 ((2, 1, 64, 64),)),
    "relevance.UNet (phase 2)": NetCase(lambda: UNet("resnet18", num_classes=1, encoder_depth=4),
                                        lambda: torch.rand(2, 3, 48, 64), ((2, 1, 48, 64),)),
    "relevance.ContrastiveNet": NetCase(lambda: ContrastiveNet("resnet18", embedding_dim=16),
                                        lambda: torch.rand(2, 3, 64, 64), ((2, 16),)),
    "behavior.ClipClassifier": NetCase(lambda: ClipClassifier("resnet18", temporal_channels=16),
                                       lambda: torch.rand(2, 4, 3, 32, 32), ((2, 2),)),
    "lego.LegoClassifier": NetCase(lambda: LegoClassifier("resnet18", num_parts=5, num_colors=3, shared_dim=32,
                                                          freeze_ratio=0.0),
                                   lambda: torch.rand(2, 3, 64, 64) * 255, ((2, 5), (2, 3))),
    "violence.StackedBiLSTM": NetCase(lambda: StackedBiLSTM(input_dim=24, hidden_sizes=(8, 6), dense_units=8),
                                      lambda: torch.rand(2, 5, 24), ((2, 2),)),
    "violence.HybridBiLSTM": NetCase(lambda: HybridBiLSTM(input_dim=24, compressed_dim=12, hidden_sizes=(8, 6),
                                                          dense_units=8, attention_dim=8),
                                     lambda: torch.rand(2, 5, 24), ((2, 2),)),
    "violence.FrameEncoder network": NetCase(_frame_encoder_network, lambda: torch.rand(2, 3, 32, 32),
                                             ((2, 512),)),
}


def _outputs(result: torch.Tensor | tuple | list) -> tuple[torch.Tensor, ...]:
    return tuple(result) if isinstance(result, tuple | list) else (result,)


@pytest.fixture(params=sorted(CASES), ids=lambda name: name)
def case(request: pytest.FixtureRequest) -> tuple[str, NetCase]:
    torch.manual_seed(0)
    return request.param, CASES[request.param]


def test_forward_shape_and_backward(case: tuple[str, NetCase]) -> None:
    name, spec = case
    net = spec.build().train()
    outputs = _outputs(net(spec.example()))
    assert tuple(o.shape for o in outputs) == spec.shapes, name
    trainable = [p for p in net.parameters() if p.requires_grad]
    if not trainable:
        pytest.skip(f"{name} is a fixed feature extractor (nothing to train)")
    sum(o.float().pow(2).mean() for o in outputs).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable), f"{name}: no gradient"


def test_onnx_export_agrees_with_torch(case: tuple[str, NetCase], tmp_path: Path) -> None:
    import onnxruntime as ort

    name, spec = case
    net = spec.build().eval()
    example = spec.example()
    path = tmp_path / "net.onnx"
    with torch.no_grad():
        expected = [o.numpy() for o in _outputs(net(example))]
        torch.onnx.export(net, (example,), str(path), input_names=["input"], dynamo=False, opset_version=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": example.numpy()})
    assert len(got) == len(expected), name
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=spec.atol, rtol=1e-3, err_msg=name)

"""The seed's LegoClassifier: timm backbone -> shared FC 512 + BN + ReLU + dropout -> part and colour heads.

``forward`` takes RGB images as float pixel values 0-255 (N, 3, H, W) and normalises them with
the ImageNet mean/std itself, so the exported ONNX graph, the Pi predictor and training all see
the same preprocessing. It returns one logits tensor per head, in ``output_names`` order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from suite.backbones import IMAGENET_MEAN, IMAGENET_STD, create_timm_model
from suite.printing import warn_on_console

log = logging.getLogger(__name__)

HEAD_OUTPUTS = {"part": "part_logits", "color": "color_logits"}


def backbone_units(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's layers in input-to-output order, with sequential containers opened.

    EfficientNet-B0 gives 20 units (stem conv + BN, 16 MBConv blocks, head conv + BN), so a freeze
    ratio counts layers from the input, the seed's "first 50 % of layers" (about 8 % of the
    backbone's weights at 0.5: the late blocks hold most of them).
    """
    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, nn.Sequential | nn.ModuleList):
                visit(child)
            elif any(p.numel() for p in child.parameters()):
                units.append(child)

    visit(backbone)
    return units


class LegoClassifier(nn.Module):
    def __init__(
        self,
        backbone: str = "efficientnet_b0",
        pretrained: bool = False,
        weights: str | None = None,
        num_parts: int = 0,
        num_colors: int = 0,
        heads: Sequence[str] = ("part", "color"),
        shared_dim: int = 512,
        dropout: float = 0.3,
        freeze_ratio: float = 0.5,
    ):
        super().__init__()
        if not 0.0 <= freeze_ratio <= 1.0:
            raise ValueError(f"freeze_ratio must be in [0, 1], got {freeze_ratio}")
        self.heads = [h for h in ("part", "color") if h in heads]
        if not self.heads:
            raise ValueError(f"heads must name part and/or color, got {list(heads)}")
        self.backbone = create_timm_model(backbone, pretrained=pretrained, weights=weights, num_classes=0)
        features = self.backbone.num_features
        self.shared = nn.Sequential(
            nn.Linear(features, shared_dim), nn.BatchNorm1d(shared_dim), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        sizes = {"part": num_parts, "color": num_colors}
        self.part_head = nn.Linear(shared_dim, num_parts) if "part" in self.heads and num_parts > 0 else None
        self.color_head = nn.Linear(shared_dim, num_colors) if "color" in self.heads and num_colors > 0 else None
        for head in self.heads:
            if sizes[head] <= 0:
                raise ValueError(f"the {head} head needs num_{head}s > 0")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.frozen_units: list[nn.Module] = []
        if freeze_ratio > 0 and not (pretrained or weights):
            # The seed freezes layers to keep ImageNet features; frozen random layers are fixed random
            # projections that never improve, capacity lost for nothing.
            message = (f"model.net.freeze_ratio={freeze_ratio} not applied: the backbone starts from random "
                       "weights (model.pretrained=false, no model.weights), so every layer trains")
            warn_on_console(log, message, prefix="note: ")
            freeze_ratio = 0.0
        self.freeze_ratio = freeze_ratio
        self.freeze(freeze_ratio)

    @property
    def output_names(self) -> list[str]:
        return [HEAD_OUTPUTS[h] for h in self.heads]

    def freeze(self, ratio: float) -> None:
        """Freeze the first ``ratio`` of the backbone's units; their BatchNorm statistics stay fixed too."""
        units = backbone_units(self.backbone)
        n_frozen = round(len(units) * ratio)
        for i, unit in enumerate(units):
            for p in unit.parameters():
                p.requires_grad = i >= n_frozen
        self.frozen_units = units[:n_frozen]
        self.train(self.training)

    def train(self, mode: bool = True) -> LegoClassifier:
        super().train(mode)
        for unit in self.frozen_units:
            unit.eval()
        return self

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (image - self.mean) / self.std
        shared = self.shared(self.backbone(x))
        outputs = []
        if self.part_head is not None:
            outputs.append(self.part_head(shared))
        if self.color_head is not None:
            outputs.append(self.color_head(shared))
        return tuple(outputs)

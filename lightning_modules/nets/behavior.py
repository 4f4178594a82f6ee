"""Clip classifier: a timm 2D backbone per frame, a temporal convolution, attention pooling over time.

Input ``[B, T, 3, H, W]`` (ImageNet-normalised frames), output logits ``[B, num_classes]``. The
temporal convolution lets the head see motion between neighbouring frames (the tail behaviour
is a rhythm, not a pose); attention pooling lets a few decisive frames outweigh the rest.
"""

from __future__ import annotations

import torch
from torch import nn

from suite.backbones import create_timm_model


class ClipClassifier(nn.Module):
    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        num_classes: int = 2,
        temporal_channels: int = 128,
        dropout: float = 0.5,
        temporal: str = "attention",
    ):
        super().__init__()
        if temporal not in ("attention", "mean"):
            raise ValueError(f"temporal must be 'attention' or 'mean', got '{temporal}'")
        self.encoder = create_timm_model(backbone, pretrained=pretrained, weights=weights, num_classes=0)
        dim = self.encoder.num_features
        self.temporal_conv = nn.Sequential(
            nn.Conv1d(dim, temporal_channels, kernel_size=3, padding=1),
            nn.BatchNorm1d(temporal_channels),
            nn.ReLU(inplace=True),
        )
        self.temporal = temporal
        self.attention = nn.Linear(temporal_channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(temporal_channels, num_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        b, t = clips.shape[:2]
        feats = self.encoder(clips.flatten(0, 1)).view(b, t, -1)  # [B, T, D]
        feats = self.temporal_conv(feats.transpose(1, 2)).transpose(1, 2)  # [B, T, C]
        if self.temporal == "attention":
            weights = torch.softmax(self.attention(feats), dim=1)
            pooled = (weights * feats).sum(dim=1)
        else:
            pooled = feats.mean(dim=1)
        return self.head(self.dropout(pooled))

"""Relevance task networks: a timm encoder shared by both phases.

- :class:`ContrastiveNet` (phase 1): encoder -> global pooling -> projection -> unit-length embedding.
- :class:`RelevanceNet` (phase 2): the same encoder + a U-Net decoder up to the input resolution
  (the seed's 32x32 head is why its IoU was 0) -> relevance logits [N, 1, H, W].

The phase-1 encoder travels between runs as a small file (:func:`save_encoder` /
:func:`load_encoder`) holding the backbone name with the weights, so a file of another
architecture is refused with a message instead of a shape error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.nets.segmentation import UNetDecoder
from suite.backbones import create_timm_model
from suite.errors import UserError

ENCODER_FORMAT = "vision-suite/relevance-encoder/v1"
NET_FORMAT = "vision-suite/relevance-net/v1"


def _encoder(backbone: str, pretrained: bool, weights: str | None, in_channels: int, depth: int) -> nn.Module:
    return create_timm_model(backbone, pretrained=pretrained, weights=weights, features_only=True,
                             in_chans=in_channels, out_indices=tuple(range(depth)))


class ContrastiveNet(nn.Module):
    """``forward(images [N, 3, H, W]) -> embeddings [N, embedding_dim]`` (L2-normalised)."""

    def __init__(self, backbone: str = "resnet18", pretrained: bool = False, weights: str | None = None,
                 in_channels: int = 3, encoder_depth: int = 5, embedding_dim: int = 128):
        super().__init__()
        self.config = {"backbone": backbone, "in_channels": in_channels, "encoder_depth": encoder_depth}
        self.encoder = _encoder(backbone, pretrained, weights, in_channels, encoder_depth)
        channels = self.encoder.feature_info.channels()[-1]
        self.projection = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True),
                                        nn.Linear(channels, embedding_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.encoder(images)[-1].mean(dim=(2, 3))
        return F.normalize(self.projection(pooled), dim=1)


class RelevanceNet(nn.Module):
    """``forward(images [N, 3, H, W]) -> logits [N, 1, H, W]`` at the input resolution."""

    def __init__(self, backbone: str = "resnet18", pretrained: bool = False, weights: str | None = None,
                 in_channels: int = 3, encoder_depth: int = 5,
                 decoder_channels: Sequence[int] = (128, 64, 48, 32, 16)):
        super().__init__()
        self.config = {"backbone": backbone, "in_channels": in_channels, "encoder_depth": encoder_depth,
                       "decoder_channels": list(decoder_channels)}
        self.encoder = _encoder(backbone, pretrained, weights, in_channels, encoder_depth)
        self.decoder = UNetDecoder(self.encoder.feature_info.channels(), list(decoder_channels))
        self.head = nn.Conv2d(self.decoder.out_channels, 1, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(images), images.shape[-2:]))


def save_encoder(net: nn.Module, path: str | Path) -> None:
    import io

    from suite.io import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({"format": ENCODER_FORMAT, **net.config,
                "state_dict": {k: v.detach().cpu() for k, v in net.encoder.state_dict().items()}}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _encoder_state(payload: dict[str, Any], path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """Encoder weights and backbone name from an encoder file or a phase-1/2 Lightning checkpoint."""
    if payload.get("format") in (ENCODER_FORMAT, NET_FORMAT):
        state = payload["state_dict"]
        if payload.get("format") == NET_FORMAT:
            state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        return state, payload.get("backbone")
    state = payload.get("state_dict")
    if isinstance(state, dict):
        enc = {k.removeprefix("net.encoder."): v for k, v in state.items() if k.startswith("net.encoder.")}
        if enc:
            return enc, (payload.get("hyper_parameters") or {}).get("backbone")
    raise UserError(f"model.encoder_ckpt: {path} holds no relevance encoder (expected checkpoints/contrastive.pth "
                    "of a relevance_contrastive run, or one of its .ckpt files)")


def load_encoder(net: nn.Module, path: str | Path) -> None:
    """Copy a phase-1 encoder into ``net.encoder``; another architecture is a :class:`UserError`."""
    from suite.checkpoints import load_checkpoint

    path = Path(path).expanduser()
    state, backbone = _encoder_state(load_checkpoint(path), path)
    own = net.encoder.state_dict()
    if backbone and backbone != net.config["backbone"]:
        raise UserError(f"model.encoder_ckpt: {path} holds a '{backbone}' encoder but this model uses "
                        f"'{net.config['backbone']}' (set model.net.backbone={backbone}, or train phase 1 "
                        "with the same backbone)")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or mismatched:
        detail = (f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected "
                  f"(e.g. {unexpected[:1]}), {len(mismatched)} of another shape (e.g. {mismatched[:1]})")
        raise UserError(f"model.encoder_ckpt: {path} does not fit this encoder "
                        f"('{net.config['backbone']}', depth {net.config['encoder_depth']}): {detail}. "
                        "It was made with another architecture.")
    net.encoder.load_state_dict(state)


def region_scores(prob: torch.Tensor, labels: torch.Tensor, region_ids: Sequence[int]) -> list[float]:
    """Mean relevance probability inside each region (``labels == id``) of one event."""
    flat_p, flat_l = prob.reshape(-1).float(), labels.reshape(-1).long()
    n = int(max(region_ids, default=0)) + 1
    sums = torch.zeros(n).index_add_(0, flat_l.clamp(max=n - 1).cpu(), flat_p.cpu())
    counts = torch.bincount(flat_l.clamp(max=n - 1).cpu(), minlength=n).float()
    return [float(sums[i] / counts[i]) if counts[i] > 0 else 0.0 for i in region_ids]

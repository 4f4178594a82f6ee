"""Relevance task networks and the one region/alert rule of training, evaluation and serving.

- :class:`ContrastiveNet` (phase 1): a timm encoder -> global pooling -> projection -> unit-length
  embedding. Its encoder is built like :class:`~lightning_modules.nets.segmentation.UNet`'s, so it
  loads into phase 2's.
- Phase 2 is the suite's :class:`~lightning_modules.nets.segmentation.UNet` with one output channel:
  relevance logits ``[N, 1, H, W]`` at the input resolution (:func:`relevance_unet`). The seed's
  coarse head, why its IoU was 0, stays available as ``head_size=32`` (:class:`CoarseHeadUNet`) so
  the failure can be reproduced next to its fix (``python -m tools.gallery``).
- :func:`event_relevance` + :func:`decide_regions`: the relevance map of an event (max over its
  sampled frames) and the per-region decision (mean relevance inside a motion region above the
  threshold -> relevant; any relevant region -> alert). The rule itself is torch-free
  (``deploy/relevance_rule.py``): the test step calls it through these functions and the served
  predictor (``deploy/predictors/relevance.py``) directly, so what is scored is what is served.

The phase-1 encoder travels between runs as a small payload (:func:`encoder_payload`, written by
the run's ArtifactWriter) holding the backbone name with the weights, so a file of another
architecture is refused with a message instead of a shape error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deploy import relevance_rule as rule
from deploy.relevance_rule import RegionDecision
from lightning_modules.nets.segmentation import UNet, timm_encoder
from suite.errors import UserError

ENCODER_FORMAT = "vision-suite/relevance-encoder/v1"
NET_FORMAT = "vision-suite/relevance-net/v1"

#: earlier runs' configs name the phase-2 net ``RelevanceNet``; it is the shared UNet (same weights layout)
RelevanceNet = UNet


class ContrastiveNet(nn.Module):
    """``forward(images [N, 3, H, W]) -> embeddings [N, embedding_dim]`` (L2-normalised)."""

    def __init__(self, backbone: str = "resnet18", pretrained: bool = False, weights: str | None = None,
                 in_channels: int = 3, encoder_depth: int = 5, embedding_dim: int = 128):
        super().__init__()
        self.config = {"backbone": backbone, "in_channels": in_channels, "encoder_depth": encoder_depth}
        self.encoder = timm_encoder(backbone, pretrained, weights, in_channels, encoder_depth)
        channels = self.encoder.feature_info.channels()[-1]
        self.projection = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True),
                                        nn.Linear(channels, embedding_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.encoder(images)[-1].mean(dim=(2, 3))
        return F.normalize(self.projection(pooled), dim=1)


class CoarseHeadUNet(UNet):
    """The seed's coarse head: the decoder stops at ``head_size`` x ``head_size`` and its logits are
    upsampled bilinearly to the input, so loss and metrics still see full-size masks (small motion
    regions blur away)."""

    def __init__(self, head_size: int = 32, **unet: Any):
        super().__init__(**unet)
        self.head_size = int(head_size)
        self.config["head_size"] = self.head_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.decoder(self.encoder(images), (self.head_size, self.head_size)))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def relevance_unet(head_size: int | None = None, **unet: Any) -> UNet:
    """The phase-2 net: ``head_size`` null = logits at the input resolution; an int = the seed's
    coarse ``head_size`` x ``head_size`` head, upsampled (:class:`CoarseHeadUNet`)."""
    return UNet(**unet) if head_size is None else CoarseHeadUNet(head_size, **unet)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def encoder_payload(net: nn.Module) -> dict[str, Any]:
    """The phase-1 hand-over (``checkpoints/contrastive.pth``): backbone facts + encoder weights."""
    return {"format": ENCODER_FORMAT, **net.config, "state_dict": _cpu_state(net.encoder)}


def net_payload(net: UNet, **facts: Any) -> dict[str, Any]:
    """A phase-2 net file (``segmentation.pth``; with ``facts`` such as image size and thresholds,
    ``complete.pth``): architecture, weights and what serving needs to decide like the test did."""
    return {"format": NET_FORMAT, **net.config, "state_dict": _cpu_state(net), **facts}


def net_from_payload(payload: dict[str, Any], source: str | Path) -> UNet:
    """The phase-2 net of a :func:`net_payload` file (files of earlier runs have no ``num_classes``)."""
    if payload.get("format") != NET_FORMAT:
        raise UserError(f"{source} is not a relevance net file (segmentation.pth or complete.pth of a "
                        "relevance_segmentation run)")
    keys = ("backbone", "in_channels", "num_classes", "decoder_channels", "encoder_depth", "head_size")
    net = relevance_unet(**{k: payload[k] for k in keys if k in payload})
    net.load_state_dict(payload["state_dict"])
    return net


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


# -- the decision rule -------------------------------------------------------------------------
def event_relevance(net: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """Relevance ``[h, w]`` in [0, 1] of one event: the max over its preprocessed frames ``[T, 3, h, w]``
    (an object is relevant if it is relevant in any of them)."""
    with torch.no_grad():
        return torch.sigmoid(net(frames)).amax(dim=0)[0]


def resize_relevance(prob: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``prob [h, w]`` bilinearly resized to ``size`` (height, width): regions are scored at the frames'
    size, so a small region never vanishes as it would if the region labels were shrunk instead."""
    if tuple(prob.shape[-2:]) == tuple(size):
        return prob
    return F.interpolate(prob[None, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0, 0]


def region_scores(prob: torch.Tensor, labels: torch.Tensor, region_ids: Sequence[int]) -> list[float]:
    """Mean relevance inside each region (``labels == id``) of one event, ``prob`` resized to ``labels``:
    the torch-free rule of serving (``deploy/relevance_rule.py``) on these tensors."""
    return rule.region_scores(prob.detach().float().cpu().numpy(), labels.detach().cpu().numpy(), region_ids)


def decide_regions(prob: torch.Tensor, labels: torch.Tensor, region_ids: Sequence[int],
                   threshold: float) -> RegionDecision:
    """The rule: a region is relevant when its mean relevance is above ``threshold``."""
    scores = region_scores(prob, labels, region_ids)
    return RegionDecision(scores=scores, relevant=[s > threshold for s in scores])

"""Test-time augmentation: one way to merge the probabilities of an item's K views (clips, windows)."""

from __future__ import annotations

import torch

AGGREGATIONS = ("mean", "max", "vote")


def aggregate_tta(probs: torch.Tensor, aggregation: str = "mean", threshold: float = 0.5) -> torch.Tensor:
    """Per-item probabilities from per-view ones, reduced over dim 1.

    ``probs`` is ``[N, K]`` (the positive class's probability per view) or ``[N, K, C]`` (every
    class). ``mean`` and ``max`` reduce the views; ``vote`` is the share of views voting for a class:
    at or above ``threshold`` for ``[N, K]``, the view's most probable class for ``[N, K, C]``.
    """
    if aggregation == "mean":
        return probs.mean(dim=1)
    if aggregation == "max":
        return probs.max(dim=1).values
    if aggregation == "vote":
        if probs.ndim == 2:
            return (probs >= threshold).float().mean(dim=1)
        votes = torch.nn.functional.one_hot(probs.argmax(dim=2), probs.shape[2]).float()
        return votes.mean(dim=1)
    raise ValueError(f"tta.aggregation must be one of {AGGREGATIONS}, got '{aggregation}'")

"""Calibration and prediction-diversity measures used by the behavior task.

ECE convention: the usual max-probability ECE (confidence = probability of the predicted class,
15 equal-width bins, L1), computed by torchmetrics' ``MulticlassCalibrationError`` on ``[1-p, p]``.
torchmetrics' ``BinaryCalibrationError`` bins the positive-class probability instead, which gives
other figures for the same predictions.
"""

from __future__ import annotations

from collections import Counter

import torch
from torchmetrics.classification import MulticlassCalibrationError


def two_class_probs(p_tail: torch.Tensor) -> torch.Tensor:
    p_tail = p_tail.float().clamp(0.0, 1.0)
    return torch.stack([1.0 - p_tail, p_tail], dim=-1)


def max_prob_ece_metric(n_bins: int = 15) -> MulticlassCalibrationError:
    return MulticlassCalibrationError(num_classes=2, n_bins=n_bins, norm="l1")


def max_prob_ece(p_tail: torch.Tensor, target: torch.Tensor, n_bins: int = 15) -> float:
    metric = max_prob_ece_metric(n_bins)
    metric.update(two_class_probs(p_tail), target.long())
    return float(metric.compute())


def probability_clusters(probs: list[float] | torch.Tensor, decimals: int = 3, min_count: int = 3) -> int:
    """How many distinct probability values (rounded to ``decimals``) occur at least ``min_count`` times.

    The training plan's symptom of a model that scores videos instead of behaviour: many events share
    one exact score. No library counts this, hence a few lines here.
    """
    values = [round(float(p), decimals) for p in (probs.tolist() if isinstance(probs, torch.Tensor) else probs)]
    return sum(1 for count in Counter(values).values() if count >= min_count)

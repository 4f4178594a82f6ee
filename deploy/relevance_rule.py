"""The relevance task's decision rule, without torch: frame sampling, region scores, relevant regions, alert.

One rule for the test of a run (``lightning_modules/nets/relevance.py`` calls these functions on its
tensors) and for serving (``deploy/predictors/relevance.py`` on the graph's numpy output), so what is
scored is what is served. numpy and OpenCV only: the ONNX path runs on a Raspberry Pi without torch.

- :func:`sample_frames`: which frames of an event the network sees (up to ``wanted``, spread evenly,
  always with the middle one);
- :func:`region_scores`: mean relevance inside each motion region, the relevance map resized to the
  regions' label image (so a small region never vanishes, as it would if the labels were shrunk);
- :func:`decide_regions`: relevant when the score is above the threshold; the event alerts when any
  region is relevant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


def sample_frames(count: int, wanted: int) -> np.ndarray:
    """Indices of the frames of an event that are scored: up to ``wanted`` spread evenly over ``count``,
    always with the middle one (its motion mask is the pixel-level target of the test).

    The same function as ``datamodules.relevance.sample_frames`` (tests check it), kept here because
    that module imports torch.
    """
    spread = np.linspace(0, count - 1, max(1, min(count, wanted))).round().astype(int)
    return np.unique(np.append(spread, count // 2))


def resize_relevance(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``prob [h, w]`` bilinearly resized to ``size`` (height, width), as float32.

    OpenCV's linear interpolation samples at the same half-pixel centres as torch's bilinear
    ``align_corners=False`` without antialiasing, so both paths give the same map.
    """
    prob = np.asarray(prob, np.float32)
    if tuple(prob.shape[-2:]) == tuple(size):
        return prob
    return cv2.resize(prob, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def region_scores(prob: np.ndarray, labels: np.ndarray, region_ids: Sequence[int]) -> list[float]:
    """Mean relevance inside each region (``labels == id``) of one event, ``prob`` resized to ``labels``."""
    labels = np.asarray(labels)
    flat_p = resize_relevance(prob, labels.shape[-2:]).reshape(-1).astype(np.float64)
    n = int(max(region_ids, default=0)) + 1
    index = np.clip(labels.reshape(-1).astype(np.int64), 0, n - 1)
    sums = np.bincount(index, weights=flat_p, minlength=n)
    counts = np.bincount(index, minlength=n)
    return [float(sums[i] / counts[i]) if counts[i] > 0 else 0.0 for i in region_ids]


@dataclass(frozen=True)
class RegionDecision:
    """Per-region scores and relevant flags of one event, and its alert (any relevant region)."""

    scores: list[float]
    relevant: list[bool]

    @property
    def alert(self) -> bool:
        return any(self.relevant)

    @property
    def event_score(self) -> float:
        """The highest region score: the event alerts exactly when it exceeds the threshold."""
        return max(self.scores, default=0.0)


def decide_regions(prob: np.ndarray, labels: np.ndarray, region_ids: Sequence[int],
                   threshold: float) -> RegionDecision:
    """The rule: a region is relevant when its mean relevance is above ``threshold``."""
    scores = region_scores(prob, labels, region_ids)
    return RegionDecision(scores=scores, relevant=[s > threshold for s in scores])

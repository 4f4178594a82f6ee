"""Losses shared by the tasks.

Binary segmentation losses take logits and a {0,1} target of the same shape. The soft overlap
losses (Dice, IoU, Tversky) are computed over the whole batch, so a batch whose targets are all
empty still gives a finite loss that is 0 exactly when the predictions are empty too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss


def _soft_counts(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft true positives, false positives and false negatives over the batch."""
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    prob = torch.sigmoid(logits.float())
    target = target.float()
    tp = (prob * target).sum()
    fp = (prob * (1 - target)).sum()
    fn = ((1 - prob) * target).sum()
    return tp, fp, fn


class DiceLoss(nn.Module):
    """1 - (2 TP + s) / (2 TP + FP + FN + s)."""

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, fp, fn = _soft_counts(logits, target)
        return 1 - (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth)


class IoULoss(nn.Module):
    """1 - (TP + s) / (TP + FP + FN + s) (soft Jaccard)."""

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, fp, fn = _soft_counts(logits, target)
        return 1 - (tp + self.smooth) / (tp + fp + fn + self.smooth)


class TverskyLoss(nn.Module):
    """1 - (TP + s) / (TP + alpha FP + beta FN + s); beta > alpha penalises missed foreground more."""

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0):
        super().__init__()
        if alpha < 0 or beta < 0:
            raise ValueError(f"TverskyLoss: alpha and beta must be >= 0, got {alpha}, {beta}")
        self.alpha, self.beta, self.smooth = alpha, beta, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, fp, fn = _soft_counts(logits, target)
        return 1 - (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)


class FocalLoss(nn.Module):
    """Focal loss, binary (logits and target of one shape) or multiclass (logits [N, C], target [N]).

    Binary uses torchvision's ``sigmoid_focal_loss``; ``alpha`` < 0 disables the class weight.
    Multiclass: ``(1 - p_t)^gamma * CE``, with optional label smoothing and per-class ``alpha``
    weights — torchvision has no softmax focal loss, so it is written here.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | list[float] | None = 0.25,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
    ):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"FocalLoss: gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        self.alpha = alpha
        self.label_smoothing = label_smoothing
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape == target.shape:
            alpha = self.alpha if isinstance(self.alpha, float | int) else -1
            return sigmoid_focal_loss(logits.float(), target.float(), alpha=alpha, gamma=self.gamma,
                                      reduction=self.reduction)
        if logits.dim() != 2 or target.dim() != 1 or logits.shape[0] != target.shape[0]:
            raise ValueError(
                f"FocalLoss: expected logits [N, C] with target [N], got {tuple(logits.shape)} and "
                f"{tuple(target.shape)}"
            )
        log_prob = F.log_softmax(logits.float(), dim=1)
        p_t = log_prob.gather(1, target[:, None]).squeeze(1).exp()
        ce = F.cross_entropy(logits.float(), target, reduction="none", label_smoothing=self.label_smoothing)
        loss = (1 - p_t).clamp(min=0).pow(self.gamma) * ce
        if isinstance(self.alpha, list | tuple):
            weights = torch.as_tensor(self.alpha, dtype=loss.dtype, device=loss.device)
            loss = loss * weights[target]
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss


class CombinedSegmentationLoss(nn.Module):
    """Weighted BCE + Dice + Focal (seed 002): the overlap term keeps an all-zero prediction
    from being a cheap minimum on sparse masks."""

    def __init__(self, bce_weight: float = 0.4, dice_weight: float = 0.4, focal_weight: float = 0.2,
                 focal_gamma: float = 2.0, focal_alpha: float = 0.25, pos_weight: float | None = None):
        super().__init__()
        if min(bce_weight, dice_weight, focal_weight) < 0 or bce_weight + dice_weight + focal_weight <= 0:
            raise ValueError("CombinedSegmentationLoss: weights must be >= 0 and not all zero")
        self.bce_weight, self.dice_weight, self.focal_weight = bce_weight, dice_weight, focal_weight
        self.pos_weight = pos_weight
        self.dice = DiceLoss()
        self.focal = FocalLoss(gamma=focal_gamma, alpha=focal_alpha)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pos_weight = None
        if self.pos_weight is not None:
            pos_weight = torch.tensor(self.pos_weight, device=logits.device)
        bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=pos_weight)
        return (self.bce_weight * bce + self.dice_weight * self.dice(logits, target)
                + self.focal_weight * self.focal(logits, target))

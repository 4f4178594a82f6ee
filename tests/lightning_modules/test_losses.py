"""Each loss on small hand-checked tensors, including all-zero targets."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.losses import CombinedSegmentationLoss, DiceLoss, FocalLoss, IoULoss, TverskyLoss

BIG = 50.0  # a logit whose sigmoid is 1 to float precision


def logits_for(prob: list[float]) -> torch.Tensor:
    p = torch.tensor(prob).clamp(1e-7, 1 - 1e-7)
    return torch.log(p / (1 - p))


def test_dice_hand_checked() -> None:
    # p = [1, 0, 1, 0], t = [1, 1, 0, 0]: TP 1, FP 1, FN 1 -> dice (2+1)/(2+1+1+1) = 0.6
    loss = DiceLoss(smooth=1.0)(logits_for([1, 0, 1, 0]), torch.tensor([1.0, 1, 0, 0]))
    assert loss.item() == pytest.approx(1 - 3 / 5, abs=1e-5)


def test_iou_hand_checked() -> None:
    # TP 1, FP 1, FN 1 -> (1+1)/(1+1+1+1) = 0.5
    loss = IoULoss(smooth=1.0)(logits_for([1, 0, 1, 0]), torch.tensor([1.0, 1, 0, 0]))
    assert loss.item() == pytest.approx(0.5, abs=1e-5)


def test_tversky_weights_false_negatives() -> None:
    # TP 1, FP 0, FN 2 with alpha 0.3, beta 0.7, smooth 0: 1 - 1/(1 + 1.4)
    loss = TverskyLoss(alpha=0.3, beta=0.7, smooth=0.0)(logits_for([1, 0, 0]), torch.tensor([1.0, 1, 1]))
    assert loss.item() == pytest.approx(1 - 1 / 2.4, abs=1e-5)
    # the same number of false positives costs less
    fp_loss = TverskyLoss(alpha=0.3, beta=0.7, smooth=0.0)(logits_for([1, 1, 1]), torch.tensor([1.0, 0, 0]))
    assert fp_loss.item() < loss.item()


@pytest.mark.parametrize("loss_cls", [DiceLoss, IoULoss, TverskyLoss])
def test_overlap_losses_on_all_zero_targets(loss_cls) -> None:
    target = torch.zeros(2, 1, 4, 4)
    empty_pred = torch.full_like(target, -BIG)
    full_pred = torch.full_like(target, BIG)
    assert loss_cls()(empty_pred, target).item() == pytest.approx(0.0, abs=1e-6)
    assert loss_cls()(full_pred, target).item() > 0.9
    assert torch.isfinite(loss_cls()(torch.zeros_like(target), target))


def test_binary_focal_hand_checked() -> None:
    # p = 0.8 for a positive: alpha 0.25 * (1-0.8)^2 * -log(0.8)
    loss = FocalLoss(gamma=2.0, alpha=0.25)(logits_for([0.8]), torch.tensor([1.0]))
    assert loss.item() == pytest.approx(0.25 * 0.04 * -math.log(0.8), rel=1e-4)


def test_multiclass_focal_hand_checked_and_gamma_zero_is_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([0, 0])
    p = torch.softmax(logits, 1)[torch.arange(2), target]
    expected = ((1 - p) ** 2 * -torch.log(p)).mean()
    assert FocalLoss(gamma=2.0, alpha=None)(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert FocalLoss(gamma=0.0, alpha=None)(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)


def test_multiclass_focal_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="expected logits"):
        FocalLoss(alpha=None)(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


def test_combined_is_weighted_sum_and_finite_on_empty_targets() -> None:
    logits = logits_for([0.9, 0.2, 0.6, 0.1]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 0, 1, 0]).view(1, 1, 2, 2)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    expected = 0.4 * bce + 0.4 * DiceLoss()(logits, target) + 0.2 * FocalLoss()(logits, target)
    assert CombinedSegmentationLoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    empty = torch.zeros(1, 1, 2, 2)
    assert torch.isfinite(CombinedSegmentationLoss()(logits, empty))


def test_combined_loss_is_not_minimised_by_predicting_all_zero() -> None:
    # seed 002's collapse: with sparse masks, BCE alone is small for an all-zero prediction;
    # the dice term keeps that from being a cheap minimum.
    target = torch.zeros(1, 1, 10, 10)
    target[..., :2, :5] = 1  # 10 % foreground
    all_zero = torch.full_like(target, -6.0)
    perfect = torch.where(target > 0, 6.0, -6.0)
    assert CombinedSegmentationLoss()(all_zero, target) > CombinedSegmentationLoss()(perfect, target) + 0.3


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        DiceLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))

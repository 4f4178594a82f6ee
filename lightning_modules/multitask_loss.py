"""The seed's MultiTaskLoss: weighted part + colour cross-entropy with unknown labels masked out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiTaskLoss(nn.Module):
    """``part_weight * CE(part) + color_weight * CE(color)``, each with label smoothing.

    Targets equal to ``ignore_index`` (unknown part, or colour 9999 in the manifest) are left out of
    their term. A term whose batch has no known label is an exact zero that keeps the graph (not
    NaN, which ``F.cross_entropy(ignore_index=...)`` gives when every target is ignored), so a
    batch of b200c renders without colours trains the part head alone. A head that is absent
    (``None`` logits, the seed's option B) contributes nothing.
    """

    def __init__(
        self, part_weight: float = 1.0, color_weight: float = 0.5, label_smoothing: float = 0.1,
        ignore_index: int = -1,
    ):
        super().__init__()
        if part_weight < 0 or color_weight < 0:
            raise ValueError(f"MultiTaskLoss: weights must be >= 0, got {part_weight}, {color_weight}")
        self.part_weight, self.color_weight = part_weight, color_weight
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def term(self, logits: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
        if logits is None:
            return target.new_zeros((), dtype=torch.float32)
        known = target != self.ignore_index
        if not bool(known.any()):
            return logits.sum() * 0.0
        # fp32 whatever the autocast dtype of the logits (bf16-mixed)
        return F.cross_entropy(logits[known].float(), target[known], label_smoothing=self.label_smoothing)

    def terms(
        self, part_pred: torch.Tensor | None, color_pred: torch.Tensor | None, part_target: torch.Tensor,
        color_target: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        part = self.term(part_pred, part_target)
        color = self.term(color_pred, color_target)
        return {"loss": self.part_weight * part + self.color_weight * color, "loss_part": part, "loss_color": color}

    def forward(
        self, part_pred: torch.Tensor | None, color_pred: torch.Tensor | None, part_target: torch.Tensor,
        color_target: torch.Tensor,
    ) -> torch.Tensor:
        return self.terms(part_pred, color_pred, part_target, color_target)["loss"]

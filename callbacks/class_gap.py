"""Per-class accuracy and the largest gap between classes (seed 001's early-warning signal)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch

from suite.contracts import step_output

log = logging.getLogger(__name__)


class ClassGap(L.Callback):
    """Accumulate the ``preds``/``target`` step outputs (class indices) of validation.

    Each validation epoch logs ``val/acc_<class>``, ``val/class_gap`` (the largest difference between
    two classes' accuracies) and ``val/pred_share_<class>`` (the share of validation items predicted as
    each class), fractions like every metric of the suite. The alarms on them (seed 001's gap above 15
    and 25 points, one class stuck, predicting only one class) are health rules
    (conf/health/violence.yaml, docs/run_health.md), evaluated by callbacks.run_health.RunHealth. Class
    names come from ``class_names`` or the first head of the module's data spec.
    """

    needs = {"val": ("preds", "target")}

    def __init__(self, num_classes: int | None = None, class_names: Sequence[str] | None = None,
                 warn: float | None = None, critical: float | None = None, stop_on_critical: bool | None = None):
        # warn/critical/stop_on_critical are accepted from configs of earlier runs (evaluate.py rebuilds a
        # run's callbacks from its config) and not used: those alarms are health rules now
        if any(v is not None for v in (warn, critical, stop_on_critical)):
            log.info("ClassGap: warn/critical/stop_on_critical are ignored; the gap alarms are the health rules "
                     "class_gap_warning / class_gap_critical (conf/health/, docs/run_health.md)")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else None
        self.metric: Any = None
        self.counts: torch.Tensor | None = None
        self.last_gap: float | None = None

    def _names(self, pl_module: L.LightningModule) -> list[str]:
        spec = getattr(pl_module, "spec", None)
        names = self.class_names or (list(spec.heads[0].classes) if spec is not None and spec.heads else [])
        n = self.num_classes or len(names)
        if n < 2:
            raise ValueError("ClassGap needs num_classes >= 2 (or class_names on the module)")
        return names if len(names) == n else [str(i) for i in range(n)]

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from torchmetrics.classification import MulticlassAccuracy

        names = self._names(pl_module)
        self.metric = MulticlassAccuracy(num_classes=len(names), average=None).to(pl_module.device)
        self.counts = torch.zeros(len(names), dtype=torch.long)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if self.metric is None:
            return
        out = step_output(outputs, "callbacks.ClassGap")
        preds = out.require("preds", "ClassGap").detach()
        self.metric.update(preds, out.require("target", "ClassGap").detach())
        if self.counts is not None:
            self.counts += torch.bincount(preds.flatten().long().cpu(), minlength=len(self.counts))[:len(self.counts)]

    def logged_metrics(self) -> set[str]:
        names = self.class_names or []
        return {"val/class_gap", *(f"val/acc_{name}" for name in names), *(f"val/pred_share_{n}" for n in names)}

    def gap(self, per_class: torch.Tensor) -> float:
        """Largest difference between two classes' accuracies, as a fraction."""
        return float(per_class.max() - per_class.min())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.metric is None or not self.metric.update_called:
            return
        per_class = self.metric.compute()
        names = self._names(pl_module)
        for name, acc in zip(names, per_class, strict=True):
            pl_module.log(f"val/acc_{name}", acc, prog_bar=True, sync_dist=False)
        if self.counts is not None and int(self.counts.sum()) > 0:
            # this rank's predictions: a share needs no sync to show that one class takes everything
            shares = self.counts.float() / self.counts.sum()
            for name, share in zip(names, shares.tolist(), strict=True):
                pl_module.log(f"val/pred_share_{name}", share, sync_dist=False)
        gap = self.gap(per_class)
        pl_module.log("val/class_gap", gap, prog_bar=True)
        self.last_gap = gap
        self.metric.reset()

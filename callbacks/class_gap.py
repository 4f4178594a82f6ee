"""Per-class accuracy and the largest gap between classes (seed 001's early-warning signal)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch

from suite.contracts import step_output
from suite.printing import warn_on_console

log = logging.getLogger(__name__)


class ClassGap(L.Callback):
    """Accumulate the ``preds``/``target`` step outputs (class indices) of validation.

    Each validation epoch logs ``val/acc_<class>`` and ``val/class_gap`` as fractions (0-1, like
    every metric of the suite), prints a warning when the gap is above ``warn`` and a critical
    message above ``critical`` (fractions too: seed 001's 15 and 25 points are 0.15 and 0.25; the
    console says points); with ``stop_on_critical`` the run ends. Class names come from
    ``class_names`` or the first head of the module's data spec.
    """

    needs = {"val": ("preds", "target")}

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        warn: float = 0.15,
        critical: float = 0.25,
        stop_on_critical: bool = False,
    ):
        if not (0.0 <= warn <= 1.0 and 0.0 <= critical <= 1.0):
            raise ValueError(f"ClassGap: warn ({warn}) and critical ({critical}) are fractions of accuracy in [0, 1] "
                             "(15 points = 0.15)")
        if warn > critical:
            raise ValueError(f"ClassGap: warn ({warn}) must not exceed critical ({critical})")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else None
        self.warn, self.critical = warn, critical
        self.stop_on_critical = stop_on_critical
        self.metric: Any = None
        self.last_gap: float | None = None
        self.level = "ok"

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

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if self.metric is None:
            return
        out = step_output(outputs, "callbacks.ClassGap")
        self.metric.update(out.require("preds", "ClassGap").detach(), out.require("target", "ClassGap").detach())

    def logged_metrics(self) -> set[str]:
        names = self.class_names or []
        return {"val/class_gap", *(f"val/acc_{name}" for name in names)}

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
        gap = self.gap(per_class)
        pl_module.log("val/class_gap", gap, prog_bar=True)
        self.last_gap = gap
        if trainer.sanity_checking:
            return
        accs = ", ".join(f"{n} {a * 100:.1f}%" for n, a in zip(names, per_class.tolist(), strict=True))
        if gap > self.critical:
            self.level = "critical"
            message = (f"CRITICAL class gap {gap * 100:.1f} points (> {self.critical * 100:g}) "
                       f"at epoch {trainer.current_epoch}: {accs}")
            warn_on_console(log, message)
            if self.stop_on_critical:
                print("stopping: class gap is critical (callbacks.class_gap.stop_on_critical=true)")
                trainer.should_stop = True
        elif gap > self.warn:
            self.level = "warn"
            message = (f"class gap warning: {gap * 100:.1f} points (> {self.warn * 100:g}) "
                       f"at epoch {trainer.current_epoch}: {accs}")
            warn_on_console(log, message)
        else:
            self.level = "ok"
        self.metric.reset()

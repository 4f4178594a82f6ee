"""Alarm for the seed-002 failure: predictions collapse to all-0 (or all-1) while targets don't."""

from __future__ import annotations

from typing import Any

import lightning as L

from callbacks.run_health import remind, report_alert
from suite.contracts import step_output
from suite.health import make_alert


class PredictionCollapse(L.Callback):
    """Watch the ``pred_mean``/``target_mean`` step outputs of training.

    A batch is flagged when the mean predicted probability leaves ``[low, high]`` while the
    target mean stays inside it. After ``patience`` consecutive flagged batches the alarm
    ``prediction_collapse`` goes to the run's health sink (callbacks.run_health: alerts.json,
    train.log, trackers) with the seed's console line (batch index, pred_mean, target_mean), once
    per run of flagged batches; while the collapse lasts the line is repeated every ``warn_every``
    batches on the console only. With ``stop_training`` the run ends. The flag is logged as
    ``train/collapse`` for TensorBoard.
    """

    needs = {"train": ("pred_mean", "target_mean")}

    def __init__(
        self,
        low: float = 1e-3,
        high: float = 1 - 1e-3,
        patience: int = 1,
        stop_training: bool = False,
        warn_every: int = 50,
    ):
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"PredictionCollapse: need 0 <= low < high <= 1, got low={low}, high={high}")
        self.low, self.high = low, high
        self.patience = max(1, patience)
        self.stop_training = stop_training
        self.warn_every = max(1, warn_every)
        self.consecutive = 0
        self.fired = 0

    def is_collapsed(self, pred_mean: float, target_mean: float) -> bool:
        pred_out = pred_mean < self.low or pred_mean > self.high
        target_in = self.low <= target_mean <= self.high
        return pred_out and target_in

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        out = step_output(outputs, "callbacks.PredictionCollapse")
        pred_mean = float(out.require("pred_mean", "PredictionCollapse"))
        target_mean = float(out.require("target_mean", "PredictionCollapse"))
        collapsed = self.is_collapsed(pred_mean, target_mean)
        pl_module.log("train/collapse", float(collapsed), on_step=True, on_epoch=False, prog_bar=False)
        self.consecutive = self.consecutive + 1 if collapsed else 0
        if self.consecutive < self.patience:
            return
        since = self.consecutive - self.patience
        if since % self.warn_every != 0:
            return
        message = (f"Predictions may be collapsing! Batch {batch_idx}: "
                   f"pred_mean={pred_mean:.6f}, target_mean={target_mean:.4f}")
        if since > 0:  # the same collapse, still going on: a reminder, not a new alarm
            remind(trainer, message, prefix="\n\u26a0\ufe0f  ")
            return
        self.fired += 1
        alert = make_alert(
            "prediction_collapse", message, step=int(getattr(trainer, "global_step", 0)),
            epoch=getattr(trainer, "current_epoch", None), batch=batch_idx, severity="critical",
            action="stop" if self.stop_training else "warn",
            values={"pred_mean": pred_mean, "target_mean": target_mean},
            hint="predictions are all background (or all foreground): check the loss weights (pos_weight, "
                 "Dice/Focal terms), the learning rate and that the masks are read as 0/1")
        report_alert(trainer, alert, console_text=message, prefix="\n\u26a0\ufe0f  ")

    def state_dict(self) -> dict[str, Any]:
        return {"consecutive": self.consecutive, "fired": self.fired}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.consecutive = int(state_dict.get("consecutive", 0))
        self.fired = int(state_dict.get("fired", 0))


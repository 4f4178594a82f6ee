"""Stop on a NaN/inf loss with the batch index, keeping the last good checkpoint untouched."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from callbacks.run_health import report_alert
from suite.contracts import step_output
from suite.errors import UserError
from suite.health import make_alert


class NonFiniteLossError(UserError):
    pass


class NonFiniteLossGuard(L.Callback):
    """Raise a clear error when the training loss is not finite.

    Raising (instead of only stopping) keeps ``last.ckpt`` from being overwritten with a
    diverged model: the last good checkpoint stays what it was. The alarm ``non_finite_loss`` is
    recorded in the run's health sink (alerts.json, train.log, trackers) before raising; the
    console gets the error itself.
    """

    needs = {"train": ("loss",)}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = step_output(outputs, "callbacks.NonFiniteLossGuard").require("loss", "NonFiniteLossGuard")
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if not math.isfinite(value):
            hint = ("lower the learning rate, check the inputs for NaN/inf, or use trainer.gradient_clip_val; "
                    "the last good checkpoint is kept in checkpoints/last.ckpt")
            message = (f"training loss is {value} at epoch {trainer.current_epoch}, batch {batch_idx} "
                       f"(global step {trainer.global_step})")
            report_alert(trainer, make_alert(
                "non_finite_loss", message, step=trainer.global_step, epoch=trainer.current_epoch, batch=batch_idx,
                severity="critical", action="stop", values={"loss": value}, hint=hint), console=False)
            raise NonFiniteLossError(f"{message}; stopped. The last good checkpoint is kept in "
                                     "checkpoints/last.ckpt. Lower the learning rate, check the inputs for NaN/inf, "
                                     "or use trainer.gradient_clip_val.")

"""Small test-only callbacks used through config overrides (``+callbacks.x._target_=tests.helpers.X``)."""

from __future__ import annotations

import lightning as L


class SimulatedCrash(RuntimeError):
    pass


class CrashAtEpoch(L.Callback):
    """Raise at the start of epoch ``epoch``, after the previous epoch's checkpoints were written."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise SimulatedCrash(f"simulated crash at the start of epoch {self.epoch}")



class PoisonWeightsAtEpoch(L.Callback):
    """Set one weight to NaN when epoch ``epoch`` starts, so the next loss is not finite."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            import torch

            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


class NeedsRowsInValidation(L.Callback):
    """Declares a step output no task gives in validation: the suite must refuse it at start."""

    needs = {"val": ("rows",)}

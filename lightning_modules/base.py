"""Pieces every task's LightningModule shares: optimizer/scheduler wiring from config partials."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch


class SuiteModule(L.LightningModule):
    """Builds the optimizer and scheduler from Hydra ``_partial_`` nodes.

    ``optimizer`` is called with the trainable parameters, ``scheduler`` (optional) with the
    optimizer; ``scheduler_interval`` says whether it steps per ``epoch`` or per ``step``.
    ``pretrained``/``weights`` are the config's ``model.pretrained``/``model.weights``: the
    network receives them by interpolation; they are kept here so that every checkpoint records
    where its initial weights came from.
    """

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        pretrained: bool = False,
        weights: str | None = None,
    ):
        super().__init__()
        self.pretrained = pretrained
        self.weights = weights
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}

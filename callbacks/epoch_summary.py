"""The seed-002 console summary, one block per epoch:

    Epoch 5/50 Complete - Train Loss: 0.3200, Val Loss: 0.2800 | Train F1: 0.4500, Val F1: 0.4800
    Train Metrics - Precision: 0.4234 | Recall: 0.4789 | F1: 0.4500 | Iou: 0.2893 | Accuracy: 0.9234
    Val Metrics - Precision: 0.4556 | Recall: 0.5123 | F1: 0.4823 | Iou: 0.3178 | Accuracy: 0.9312
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


class EpochSummary(L.Callback):
    def __init__(self, metrics: Sequence[str] = ("precision", "recall", "f1", "iou", "accuracy"),
                 headline: str = "f1"):
        self.metrics = list(metrics)
        self.headline = headline

    def format(self, metrics: dict[str, float], epoch: int, max_epochs: int) -> str:
        def get(key: str) -> str:
            value = metrics.get(key)
            return "n/a" if value is None else f"{value:.4f}"

        head = self.headline.upper() if len(self.headline) <= 3 else self.headline.title()
        lines = [
            f"Epoch {epoch}/{max_epochs} Complete - Train Loss: {get('train/loss')}, Val Loss: {get('val/loss')}"
            f" | Train {head}: {get('train/' + self.headline)}, Val {head}: {get('val/' + self.headline)}"
        ]
        for stage in ("train", "val"):
            parts = [f"{m.replace('_', ' ').title()}: {get(f'{stage}/{m}')}" for m in self.metrics
                     if f"{stage}/{m}" in metrics]
            if parts:
                lines.append(f"{stage.title()} Metrics - " + " | ".join(parts))
        return "\n".join(lines)

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k.removesuffix("_epoch"): float(v) for k, v in trainer.callback_metrics.items()
                   if not k.endswith("_step")}
        print("\n" + self.format(metrics, trainer.current_epoch + 1, trainer.max_epochs or -1), flush=True)

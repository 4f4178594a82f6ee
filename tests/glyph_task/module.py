"""The glyph classifier: a tiny CNN whose head is sized from the data spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.base import SuiteModule
from suite.contracts import DataSpec, PredictionRow, StepOutput


class GlyphNet(nn.Module):
    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class GlyphModule(SuiteModule):
    step_outputs = {"train": ("loss", "pred_mean", "target_mean"), "val": ("loss", "preds", "target", "prob"),
                    "test": ("loss", "preds", "target", "prob", "rows")}

    def __init__(self, optimizer: Callable[..., torch.optim.Optimizer], width: int = 16, **common: Any):
        super().__init__(optimizer=optimizer, **common)
        self.width = width
        self.net: GlyphNet | None = None
        self.classes: tuple[str, ...] = ()

    def configure(self, spec: DataSpec) -> None:
        super().configure(spec)
        self.classes = spec.head("digit").classes
        self.net = GlyphNet(len(self.classes), self.width)
        self.val_acc = MulticlassAccuracy(num_classes=len(self.classes))

    def logged_metrics(self) -> set[str]:
        return {"val/loss", "val/acc"}

    def _step(self, batch: dict[str, Any], stage: str) -> StepOutput:
        logits = self.net(batch["image"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        prob = logits.detach().softmax(1)
        self.log(f"{stage}/loss", loss, batch_size=len(logits))
        return StepOutput(loss=loss, preds=prob.argmax(1), target=batch["label"], prob=prob)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out = self._step(batch, "train")
        # the collapse alarm watches the last class's share, predicted and true
        last = len(self.classes) - 1
        out.pred_mean, out.target_mean = out.prob[:, last].mean(), (batch["label"] == last).float().mean()
        return out.for_training()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        out = self._step(batch, "val")
        self.val_acc(out.preds, out.target)
        self.log("val/acc", self.val_acc, batch_size=len(out.preds))
        return out

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        out = self._step(batch, "test")
        self.log("test/acc", (out.preds == out.target).float().mean(), batch_size=len(out.preds))
        out.rows = [PredictionRow(item_id=item, label=self.classes[int(t)], pred=self.classes[int(p)],
                                  scores=dict(zip(self.classes, map(float, pr), strict=True)))
                    for item, t, p, pr in zip(batch["id"], out.target, out.preds, out.prob, strict=True)]
        return out

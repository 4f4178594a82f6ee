"""Binary segmentation (seed 002): combined loss, per-epoch precision/recall/F1/IoU/accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)
from torchmetrics.functional.classification import binary_f1_score, binary_jaccard_index

from lightning_modules.base import SuiteModule
from suite.backbones import IMAGENET_MEAN, IMAGENET_STD
from suite.contracts import PredictionRow, StepOutput

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def segmentation_metrics(prefix: str, threshold: float) -> MetricCollection:
    return MetricCollection(
        {
            "precision": BinaryPrecision(threshold=threshold),
            "recall": BinaryRecall(threshold=threshold),
            "f1": BinaryF1Score(threshold=threshold),
            "iou": BinaryJaccardIndex(threshold=threshold),
            "accuracy": BinaryAccuracy(threshold=threshold),
        },
        prefix=prefix,
    )


class SegmentationModule(SuiteModule):
    step_outputs = {
        "train": ("loss", "pred_mean", "target_mean"),
        "val": ("loss", "preds", "target", "prob"),
        "test": ("loss", "preds", "target", "prob", "rows"),
    }

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        threshold: float = 0.5,
        log_images: int = 4,
        pretrained: bool = False,
        weights: str | None = None,
    ):
        super().__init__(optimizer=optimizer, scheduler=scheduler, pretrained=pretrained, weights=weights)
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"])
        self.net = net
        self.loss_fn = loss
        self.threshold = threshold
        self.log_images = log_images
        self.train_metrics = segmentation_metrics("train/", threshold)
        self.val_metrics = segmentation_metrics("val/", threshold)
        self.test_metrics = segmentation_metrics("test/", threshold)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def logged_metrics(self) -> set[str]:
        return {f"val/{name}" for name in ("loss", "precision", "recall", "f1", "iou", "accuracy")}

    def _shared_step(self, batch: dict[str, Any], metrics: MetricCollection, stage: str):
        logits = self(batch["image"])
        target = batch["mask"]
        loss = self.loss_fn(logits, target)
        prob = torch.sigmoid(logits.detach())
        metrics.update(prob.flatten(), target.flatten().long())
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(target),
                 sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=len(target))
        return loss, prob, target

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        loss, prob, target = self._shared_step(batch, self.train_metrics, "train")
        return StepOutput(loss=loss, pred_mean=prob.mean(), target_mean=target.mean()).for_training()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        loss, prob, target = self._shared_step(batch, self.val_metrics, "val")
        return StepOutput(loss=loss, prob=prob, preds=(prob > self.threshold).long(), target=target.long())

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        loss, prob, target = self._shared_step(batch, self.test_metrics, "test")
        rows = []
        for name, p, t in zip(batch["name"], prob, target, strict=True):
            t_flat = t.flatten().long()
            rows.append(PredictionRow(item_id=name, extras={
                "foreground_true": float(t.mean()),
                "foreground_pred": float((p > self.threshold).float().mean()),
                "f1": float(binary_f1_score(p.flatten(), t_flat, threshold=self.threshold)),
                "iou": float(binary_jaccard_index(p.flatten(), t_flat, threshold=self.threshold)),
            }))
        return StepOutput(loss=loss, prob=prob, preds=(prob > self.threshold).long(), target=target.long(), rows=rows)

    def visualize(self, batch: dict[str, Any], output: StepOutput) -> dict[str, torch.Tensor]:
        """Image | ground truth | prediction | overlay (prediction in red), a few samples as one grid."""
        if self.log_images <= 0:
            return {}
        from torchvision.utils import make_grid

        images, target, prob = batch["image"], output.target, output.prob
        n = min(self.log_images, len(images))
        shown = (images[:n].detach().float().cpu() * STD + MEAN).clamp(0, 1)
        gt = target[:n].float().cpu().expand(-1, 3, -1, -1)
        pred = (prob[:n].float().cpu() > self.threshold).float().expand(-1, 3, -1, -1)
        overlay = shown.clone()
        overlay[:, 0] = torch.where(pred[:, 0] > 0, 1.0, overlay[:, 0])
        rows = torch.cat([shown, gt, pred, overlay], dim=0)
        return {"overlays": make_grid(rows, nrow=n, padding=2)}

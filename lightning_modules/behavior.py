"""Behavior clip classifier (seed 003): focal loss, TTA over clips per event, tail-class metrics.

Validation and test batches hold every TTA clip of an event (``[B, K, T, 3, H, W]``); the
tail probabilities of the K clips are aggregated per event (``tta.aggregation``: mean | max |
vote) before any metric. The tail class is index 1, the positive class of every binary metric.

Logged each validation epoch: ``val/tail_recall``, ``val/tail_precision``, ``val/tail_f1`` (also as
``val/f1_tail``, the selection metric), ``val/macro_f1``, ``val/roc_auc``, ``val/ece``,
``val/prob_clusters``. Test logs the same under ``test/`` and, because the training plan's reports
use them, under their plain names (``tail_recall`` ...), plus a per-video breakdown
(``per_video/<video_id>/...``) and ``skipped_events``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    MulticlassF1Score,
)

from lightning_modules.base import SuiteModule
from lightning_modules.calibration import max_prob_ece_metric, probability_clusters, two_class_probs

AGGREGATIONS = ("mean", "max", "vote")


def aggregate_tta(clip_probs: torch.Tensor, aggregation: str = "mean", threshold: float = 0.5) -> torch.Tensor:
    """Per-event tail probability from per-clip ones ``[B, K]``: mean, max, or the share of clips voting tail."""
    if aggregation == "mean":
        return clip_probs.mean(dim=1)
    if aggregation == "max":
        return clip_probs.max(dim=1).values
    if aggregation == "vote":
        return (clip_probs >= threshold).float().mean(dim=1)
    raise ValueError(f"tta.aggregation must be one of {AGGREGATIONS}, got '{aggregation}'")


class EventMetrics(nn.Module):
    """The plan's event-level metrics, all from torchmetrics, plus the probability-clustering count."""

    def __init__(self, threshold: float, ece_bins: int):
        super().__init__()
        self.threshold = threshold
        self.binary = MetricCollection({
            "tail_recall": BinaryRecall(threshold=threshold),
            "tail_precision": BinaryPrecision(threshold=threshold),
            "tail_f1": BinaryF1Score(threshold=threshold),
            "roc_auc": BinaryAUROC(),
        })
        self.macro_f1 = MulticlassF1Score(num_classes=2, average="macro")
        self.ece = max_prob_ece_metric(ece_bins)
        self.probs: list[float] = []
        self.targets: list[int] = []

    def update(self, p_tail: torch.Tensor, target: torch.Tensor) -> None:
        p_tail, target = p_tail.float(), target.long()
        self.binary.update(p_tail, target)
        self.macro_f1.update((p_tail >= self.threshold).long(), target)
        self.ece.update(two_class_probs(p_tail), target)
        self.probs += p_tail.tolist()
        self.targets += target.tolist()

    def compute(self, cluster_decimals: int) -> dict[str, float]:
        out = {k: float(v) for k, v in self.binary.compute().items()}
        if len(set(self.targets)) < 2:
            out["roc_auc"] = float("nan")  # undefined with one class (torchmetrics would say 0): not logged
        out["macro_f1"] = float(self.macro_f1.compute())
        out["ece"] = float(self.ece.compute())
        out["prob_clusters"] = float(probability_clusters(self.probs, decimals=cluster_decimals))
        return out

    def reset(self) -> None:
        self.binary.reset()
        self.macro_f1.reset()
        self.ece.reset()
        self.probs, self.targets = [], []


class BehaviorModule(SuiteModule):
    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        tta: dict[str, Any] | None = None,
        threshold: float = 0.5,
        ece_bins: int = 15,
        cluster_decimals: int = 3,
        class_names: list[str] | None = None,
        pretrained: bool = False,
        weights: str | None = None,
    ):
        super().__init__(optimizer=optimizer, scheduler=scheduler, pretrained=pretrained, weights=weights)
        # Plain containers: checkpoints are loaded with weights_only=True, which refuses OmegaConf objects.
        tta = {str(k): v for k, v in dict(tta or {}).items()}
        class_names = [str(c) for c in (class_names or ["normal", "tail"])]
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"])
        self.aggregation = str(tta.get("aggregation", "mean"))
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"model.tta.aggregation must be one of {AGGREGATIONS}, got '{self.aggregation}'")
        self.net = net
        self.loss_fn = loss
        self.threshold = threshold
        self.cluster_decimals = cluster_decimals
        self.class_names = class_names
        self.val_metrics = EventMetrics(threshold, ece_bins)
        self.test_metrics = EventMetrics(threshold, ece_bins)
        self.test_rows: list[dict[str, Any]] = []

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.net(clips)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self(batch["video"])
        target = batch["label"].long()
        loss = self.loss_fn(logits, target)
        p_tail = torch.softmax(logits.detach().float(), dim=1)[:, 1]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(target))
        return {"loss": loss, "pred_mean": p_tail.mean(), "target_mean": target.float().mean()}

    def _event_step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        video = batch["video"]  # [B, K, T, 3, H, W]
        b, k = video.shape[:2]
        logits = self(video.flatten(0, 1))
        target = batch["label"].long()
        loss = self.loss_fn(logits, target.repeat_interleave(k))
        clip_probs = torch.softmax(logits.float(), dim=1)[:, 1].view(b, k)
        p_tail = aggregate_tta(clip_probs, self.aggregation, self.threshold)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=b, sync_dist=True)
        return clip_probs, p_tail, target

    def setup(self, stage: str) -> None:
        # The DataModule orders the names so that the tail class is index 1; follow it, not the config order.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and getattr(datamodule, "class_names", None):
            self.class_names = list(datamodule.class_names)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        _, p_tail, target = self._event_step(batch, "val")
        self.val_metrics.update(p_tail, target)
        return {"preds": (p_tail >= self.threshold).long(), "target": target, "prob": p_tail}

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute(self.cluster_decimals)
        self.val_metrics.reset()
        values["f1_tail"] = values["tail_f1"]
        self.log_dict({f"val/{k}": v for k, v in values.items() if not math.isnan(v) and k != "f1_tail"})
        self.log("val/f1_tail", values["f1_tail"], prog_bar=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        clip_probs, p_tail, target = self._event_step(batch, "test")
        self.test_metrics.update(p_tail, target)
        rows = []
        for i in range(len(target)):
            label, pred = int(target[i]), int(p_tail[i] >= self.threshold)
            row = {"event_id": batch["event_id"][i], "video_id": batch["video_id"][i], "label": label,
                   "label_name": self.class_names[label]}
            row.update({f"p_clip{j}": round(float(p), 6) for j, p in enumerate(clip_probs[i])})
            row.update({"prob_tail": round(float(p_tail[i]), 6), "pred": pred, "pred_name": self.class_names[pred]})
            rows.append(row)
        self.test_rows += rows
        return {"rows": rows}

    def on_test_epoch_start(self) -> None:
        self.test_rows = []
        self.test_metrics.reset()

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute(self.cluster_decimals)
        self.test_metrics.reset()
        logged = {f"test/{k}": v for k, v in values.items()}
        logged.update(values)  # plain names too, as the plan's metrics.json has them
        logged.update(per_video_breakdown(self.test_rows, self.threshold))
        logged["test/videos"] = float(len({r["video_id"] for r in self.test_rows}))
        datamodule = getattr(self.trainer, "datamodule", None)
        logged["skipped_events"] = float(len(getattr(datamodule, "skipped", []) or []))
        self.log_dict({k: v for k, v in logged.items() if not math.isnan(v)})


def per_video_breakdown(rows: list[dict[str, Any]], threshold: float) -> dict[str, float]:
    """Per video: events, tail events, accuracy, tail recall (when it has tail events), mean and spread of scores."""
    by_video: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_video[str(row["video_id"])].append(row)
    out: dict[str, float] = {}
    for video, items in sorted(by_video.items()):
        probs = torch.tensor([r["prob_tail"] for r in items])
        labels = torch.tensor([r["label"] for r in items])
        preds = (probs >= threshold).long()
        key = f"per_video/{video}"
        out[f"{key}/events"] = float(len(items))
        out[f"{key}/tail_events"] = float(labels.sum())
        out[f"{key}/accuracy"] = float((preds == labels).float().mean())
        if labels.sum() > 0:
            out[f"{key}/tail_recall"] = float(preds[labels == 1].float().mean())
        out[f"{key}/mean_prob"] = float(probs.mean())
        out[f"{key}/prob_std"] = float(probs.std()) if len(items) > 1 else 0.0
    return {k: v for k, v in out.items() if not math.isnan(v)}

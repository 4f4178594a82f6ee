"""Behavior clip classifier (seed 003): focal loss, TTA over clips per event, tail-class metrics.

Validation and test batches hold every TTA clip of an event (``[B, K, T, 3, H, W]``); the
tail probabilities of the K clips are aggregated per event (``tta.aggregation``: mean | max |
vote) before any metric. The class names come from the data's spec (head ``label``), whose tail
class is index 1, the positive class of every binary metric.

Logged each validation epoch, one name per metric (seed 003's where it names one): ``val/tail_recall``,
``val/tail_precision``, ``val/f1_tail`` (the selection metric), ``val/macro_f1``, ``val/roc_auc``,
``val/ece``, ``val/prob_clusters``. Test logs the same under ``test/``, plus a per-video breakdown
(``test/per_video/<video_id>/...``) and ``test/skipped_events``. Every figure is computed on the events of
all ranks: metric states are torchmetrics states, and the per-video rows are gathered.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchmetrics import CatMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    MulticlassF1Score,
)

from lightning_modules.base import SuiteModule
from lightning_modules.calibration import max_prob_ece_metric, probability_clusters, two_class_probs
from lightning_modules.tta import AGGREGATIONS, aggregate_tta
from suite.contracts import ContractError, DataSpec, PredictionRow, StepOutput
from suite.errors import ConfigError
from suite.inference import ExportGraph


class ClipScores(nn.Module):
    """The exported clip model: raw clips ``[N, T, 3, H, W]`` (RGB 0-255) -> class probabilities ``[N, C]``.

    The normalisation the data applies before the network (``x / 255``, then the spec's mean and std)
    is inside, so a deployment only decodes, resizes and stacks frames.
    """

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 1, 3, 1, 1) * 255.0)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net((clips - self.mean) / self.std), dim=1)


def gather_objects(items: list[Any]) -> list[Any]:
    """``items`` of every rank, in rank order (the list itself when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return list(items)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


class EventMetrics(nn.Module):
    """The plan's event-level metrics, all from torchmetrics, plus the probability-clustering count.

    The probabilities and targets are kept in ``CatMetric`` states, so that under DDP the clustering
    count and the one-class check see every rank's events, as the other metrics do.
    """

    def __init__(self, threshold: float, ece_bins: int):
        super().__init__()
        self.threshold = threshold
        self.binary = MetricCollection({
            "tail_recall": BinaryRecall(threshold=threshold),
            "tail_precision": BinaryPrecision(threshold=threshold),
            "f1_tail": BinaryF1Score(threshold=threshold),
            "roc_auc": BinaryAUROC(),
        })
        self.macro_f1 = MulticlassF1Score(num_classes=2, average="macro")
        self.ece = max_prob_ece_metric(ece_bins)
        self.probs = CatMetric()
        self.targets = CatMetric()

    def update(self, p_tail: torch.Tensor, target: torch.Tensor) -> None:
        p_tail, target = p_tail.float(), target.long()
        self.binary.update(p_tail, target)
        self.macro_f1.update((p_tail >= self.threshold).long(), target)
        self.ece.update(two_class_probs(p_tail), target)
        self.probs.update(p_tail)
        self.targets.update(target.float())

    @property
    def update_called(self) -> bool:
        return bool(self.probs.update_called)

    def compute(self, cluster_decimals: int) -> dict[str, float]:
        out = {k: float(v) for k, v in self.binary.compute().items()}
        targets = self.targets.compute()
        if targets.unique().numel() < 2:
            out["roc_auc"] = float("nan")  # undefined with one class (torchmetrics would say 0): not logged
        out["macro_f1"] = float(self.macro_f1.compute())
        out["ece"] = float(self.ece.compute())
        out["prob_clusters"] = float(probability_clusters(self.probs.compute().flatten(), decimals=cluster_decimals))
        return out

    def reset(self) -> None:
        for metric in (self.binary, self.macro_f1, self.ece, self.probs, self.targets):
            metric.reset()


class BehaviorModule(SuiteModule):
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
        tta: dict[str, Any] | None = None,
        threshold: float = 0.5,
        ece_bins: int = 15,
        cluster_decimals: int = 3,
        class_names: list[str] | None = None,
        pretrained: bool = False,
        weights: str | None = None,
        compile: bool | dict[str, Any] = False,
    ):
        """``class_names`` is accepted from configs of earlier runs and not used: the names come from
        the data's spec. ``tta.clips_per_event`` (former key) must agree with ``data.clips_per_event``."""
        super().__init__(optimizer=optimizer, scheduler=scheduler, pretrained=pretrained, weights=weights,
                         compile=compile)
        tta = dict(tta or {})
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "class_names"])
        self.aggregation = str(tta.get("aggregation", "mean"))
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"model.tta.aggregation must be one of {AGGREGATIONS}, got '{self.aggregation}'")
        self.tta_clips = tta.get("clips_per_event")
        self.net = net
        self.loss_fn = loss
        self.threshold = threshold
        self.cluster_decimals = cluster_decimals
        self.class_names = ["normal", "tail"]
        self.val_metrics = EventMetrics(threshold, ece_bins)
        self.test_metrics = EventMetrics(threshold, ece_bins)
        self._test_events: list[tuple[str, str, int, float]] = []

    # -- contract --------------------------------------------------------------------------------------------
    def configure(self, spec: DataSpec) -> None:
        head = spec.head("label")
        if head.num_classes != 2 or head.positive != 1:
            raise ContractError(f"the behavior module needs two classes with the tail class at index 1, the data "
                                f"gives {list(head.classes)} (positive index {head.positive})")
        clips = spec.extras.get("clips_per_event")
        if self.tta_clips is not None and clips is not None and int(self.tta_clips) != int(clips):
            raise ConfigError(f"model.tta.clips_per_event={self.tta_clips} differs from data.clips_per_event={clips}: "
                              "the data decodes the TTA clips, so set data.clips_per_event "
                              "(model.tta.clips_per_event is deprecated)")
        super().configure(spec)
        self.class_names = list(head.classes)

    def logged_metrics(self) -> set[str]:
        # val/roc_auc is left out: it is not logged when the validation events have one class
        names = ("loss", "tail_recall", "tail_precision", "f1_tail", "macro_f1", "ece", "prob_clusters")
        return {f"val/{name}" for name in names}

    # -- inference (suite/inference.py) ---------------------------------------------------------------------
    def _spec(self) -> DataSpec:
        if self.spec is None:
            raise ContractError("the behavior module has no data spec: configure it (or load a checkpoint) first")
        return self.spec

    def export_graphs(self) -> list[ExportGraph]:
        """One graph, ``model``: raw clips in, class probabilities out (a copy of the network in eval mode, so
        exporting during training leaves the module as it was)."""
        spec = self._spec()
        frames, channels, height, width = spec.input.shape
        network = ClipScores(copy.deepcopy(self.net).cpu(), spec.input.mean, spec.input.std).eval()
        example = torch.randint(0, 256, (2, frames, channels, height, width)).float()
        return [ExportGraph("model", network, example, input_name="clips", output_names=("scores",),
                            description=f"RGB clips 0-255 [N, {frames}, 3, {height}, {width}] -> probabilities of "
                                        f"{list(self.class_names)}")]

    def export_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """A validation/test batch's TTA clips (normalised by the data) back to raw RGB 0-255."""
        spec = self._spec()
        video = batch["video"]
        clips = video.flatten(0, 1) if video.dim() == 6 else video  # [B*K, T, 3, H, W]
        mean = torch.tensor(spec.input.mean, dtype=clips.dtype, device=clips.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(spec.input.std, dtype=clips.dtype, device=clips.device).view(1, 1, 3, 1, 1)
        return {"model": ((clips * std + mean) * 255.0).clamp(0, 255).detach().cpu()}

    def inference_options(self) -> dict[str, Any]:
        """How the run scores an event, for a predictor sliding windows over long videos: the TTA clips and
        their aggregation, clip length and frame size, the typical event length (``event_s``, the window)
        and the frame rate clips are sampled at (``target_fps``, null = every frame)."""
        spec = self._spec()
        frames, _, height, _ = spec.input.shape
        event_s = spec.extras.get("event_s")
        return {
            "threshold": float(self.threshold), "aggregation": self.aggregation,
            "clips_per_event": int(spec.extras.get("clips_per_event") or self.tta_clips or 5),
            "frames_per_clip": int(frames), "image_size": int(height),
            "target_fps": spec.extras.get("target_fps"), "event_s": event_s,
            # half-overlapping windows: an event of the window's length is always mostly inside one
            "stride_s": round(float(event_s) / 2, 3) if event_s else None,
            "positive": spec.head("label").positive,
        }

    # -- steps -----------------------------------------------------------------------------------------------
    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.net(clips)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        logits = self(batch["video"])
        target = batch["label"].long()
        loss = self.loss_fn(logits, target)
        p_tail = torch.softmax(logits.detach().float(), dim=1)[:, 1]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(target))
        # the classes the sampler drew this epoch (a batch-size weighted mean of the batches' shares): the
        # health rule sampler_not_balanced compares them with what balanced sampling should draw
        for index, name in enumerate(self.class_names):
            self.log(f"train/drawn_share_{name}", (target == index).float().mean(), on_step=False, on_epoch=True,
                     batch_size=len(target))
        return StepOutput(loss=loss, pred_mean=p_tail.mean(), target_mean=target.float().mean()).for_training()

    def _event_step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                       torch.Tensor]:
        video = batch["video"]  # [B, K, T, 3, H, W]
        b, k = video.shape[:2]
        logits = self(video.flatten(0, 1))
        target = batch["label"].long()
        loss = self.loss_fn(logits, target.repeat_interleave(k))
        clip_probs = torch.softmax(logits.float(), dim=1)[:, 1].view(b, k)
        p_tail = aggregate_tta(clip_probs, self.aggregation, self.threshold)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=b, sync_dist=True)
        return loss, clip_probs, p_tail, target

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        loss, _, p_tail, target = self._event_step(batch, "val")
        self.val_metrics.update(p_tail, target)
        return StepOutput(loss=loss, preds=(p_tail >= self.threshold).long(), target=target, prob=p_tail)

    def on_validation_epoch_end(self) -> None:
        if not self.val_metrics.update_called:
            return
        values = self.val_metrics.compute(self.cluster_decimals)
        self.val_metrics.reset()
        self.log_dict({f"val/{k}": v for k, v in values.items() if not math.isnan(v) and k != "f1_tail"})
        self.log("val/f1_tail", values["f1_tail"], prog_bar=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        loss, clip_probs, p_tail, target = self._event_step(batch, "test")
        self.test_metrics.update(p_tail, target)
        preds = (p_tail >= self.threshold).long()
        # one copy to the host for the rows, not one per value
        clips, probs, labels, predicted = (t.detach().cpu() for t in (clip_probs, p_tail, target, preds))
        rows = []
        for i in range(len(labels)):
            label, pred, p = int(labels[i]), int(predicted[i]), float(probs[i])
            event_id, video_id = str(batch["event_id"][i]), str(batch["video_id"][i])
            extras: dict[str, Any] = {"video_id": video_id, "prob_tail": round(p, 6)}
            extras.update({f"p_clip{j}": round(float(c), 6) for j, c in enumerate(clips[i])})
            rows.append(PredictionRow(item_id=event_id, group=video_id, label=self.class_names[label],
                                      pred=self.class_names[pred],
                                      scores={self.class_names[0]: 1.0 - p, self.class_names[1]: p}, extras=extras))
            self._test_events.append((event_id, video_id, label, p))
        return StepOutput(loss=loss, preds=preds, target=target, prob=p_tail, rows=rows)

    def on_test_epoch_start(self) -> None:
        self._test_events = []
        self.test_metrics.reset()

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute(self.cluster_decimals)
        self.test_metrics.reset()
        logged = {f"test/{k}": v for k, v in values.items()}
        # Every rank's events, once each: DistributedSampler repeats a few to even out the ranks.
        events = {event_id: (video, label, p) for event_id, video, label, p in gather_objects(self._test_events)}
        rows = [{"video_id": video, "label": label, "prob_tail": p} for video, label, p in events.values()]
        logged.update({f"test/{k}": v for k, v in per_video_breakdown(rows, self.threshold).items()})
        logged["test/videos"] = float(len({r["video_id"] for r in rows}))
        extras = self.spec.extras if self.spec is not None else {}
        logged["test/skipped_events"] = float(extras.get("skipped_events", 0))
        self.log_dict({k: v for k, v in logged.items() if not math.isnan(v)})


def per_video_breakdown(rows: list[dict[str, Any]], threshold: float) -> dict[str, float]:
    """Per video: events, tail events, accuracy, tail recall (when it has tail events), mean and spread of scores."""
    by_video: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_video[str(row["video_id"])].append(row)
    out: dict[str, float] = {}
    for video, items in sorted(by_video.items()):
        probs = torch.tensor([float(r["prob_tail"]) for r in items])
        labels = torch.tensor([int(r["label"]) for r in items])
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

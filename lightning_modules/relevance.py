"""Relevance task (seed 000, VeroAllarme): the two training phases.

- :class:`ContrastiveModule` (experiment ``relevance_contrastive``): triplet margin loss or
  InfoNCE on (anchor, positive, negative) frames; ``val/triplet_acc`` is the share of triplets whose
  positive is closer to the anchor than the negative. Its file: ``checkpoints/contrastive.pth``.
- :class:`RelevanceSegmentationModule` (experiment ``relevance_segmentation``): encoder from
  ``encoder_ckpt`` (phase 1) or from scratch, full-resolution masks fitted to the motion
  pseudo-labels with the shared segmentation loss; val/test IoU and F1 against the motion masks;
  at test time region-level relevant/irrelevant accuracy and alert precision/recall of the
  trained network and of the untrained one (as built, before fine-tuning), with the rule that
  serving uses (:func:`~lightning_modules.nets.relevance.decide_regions`). Its files:
  ``checkpoints/segmentation.pth``, ``checkpoints/complete.pth`` and the seed's ``comparison.jpg``.

The modules compute and log only: the phase files come from :meth:`artifacts` after the test of the
selected checkpoint (so they hold best.ckpt's weights) and are written by the ArtifactWriter
callback; pictures for TensorBoard come from :meth:`visualize`; the per-phase training log is the
TrainingHistory callback's summary.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)

from deploy.relevance_pictures import motion_panel, relevance_panel, scaled_boxes, titled_grid
from lightning_modules.base import SuiteModule
from lightning_modules.nets.relevance import (
    RegionDecision,
    decide_regions,
    encoder_payload,
    event_relevance,
    load_encoder,
    net_payload,
)
from suite.backbones import IMAGENET_MEAN, IMAGENET_STD
from suite.contracts import ContractError, DataSpec, PredictionRow, StepOutput
from suite.errors import UserError
from suite.inference import ExportGraph

log = logging.getLogger(__name__)

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
CLASSES = ("irrelevant", "relevant")
#: frames of a long sequence its background is estimated from (as the data module does)
SEQUENCE_BACKGROUND_FRAMES = 200


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over the batch: each anchor's positive against every positive and negative in it.

    Written here because neither torch nor the installed libraries ship InfoNCE; embeddings are
    already unit length, so dot products are cosine similarities.
    """
    candidates = torch.cat([positive, negative], dim=0)
    logits = anchor @ candidates.T / temperature
    return F.cross_entropy(logits, torch.arange(len(anchor), device=anchor.device))


def _denormalize(images: torch.Tensor) -> torch.Tensor:
    """Network inputs ``[..., 3, H, W]`` back to [0, 1] RGB for pictures."""
    return (images.detach().float().cpu() * STD + MEAN).clamp(0, 1)


class RawRelevance(nn.Module):
    """The exported phase-2 graph: raw RGB frames (float 0-255, ``[N, 3, H, W]``) -> relevance
    probability ``[N, 1, H, W]``; the ImageNet normalisation of training and the sigmoid are inside."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", MEAN[None] * 255.0, persistent=False)
        self.register_buffer("std", STD[None] * 255.0, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net((frames - self.mean) / self.std))


def relevance_graph(net: nn.Module, image_size: int) -> ExportGraph:
    """The one graph of a relevance bundle (``model``): per frame, so an event's frames are a batch."""
    return ExportGraph(
        name="model", network=RawRelevance(net).eval(), example=torch.rand(2, 3, image_size, image_size) * 255,
        output_names=("relevance",), dynamic_axes=(0,),
        description=f"raw RGB frames 0-255 [N, 3, {image_size}, {image_size}] -> relevance probability "
                    "[N, 1, H, W]; the event's map is the max over its sampled frames",
    )


def relevance_options(image_size: int, threshold: float, region_threshold: float, eval_frames: int,
                      event_frames: int, motion: dict[str, Any]) -> dict[str, Any]:
    """What the predictor needs besides the graph: frame size and sampling, the rule's threshold and
    the motion detector's settings (stage 1 runs outside the graph, in OpenCV)."""
    return {"image_size": int(image_size), "resize": "stretch to a square", "interpolation": "linear",
            "threshold": float(threshold), "region_threshold": float(region_threshold),
            "eval_frames": int(eval_frames), "event_frames": int(event_frames), "aggregation": "max over frames",
            "sequence_background_frames": SEQUENCE_BACKGROUND_FRAMES, "motion": dict(motion)}


class _RelevancePhase(SuiteModule):
    #: the data's ``mode`` extra this module trains on
    phase: ClassVar[str] = ""

    def configure(self, spec: DataSpec) -> None:
        mode = spec.extras.get("mode")
        if mode is not None and mode != self.phase:
            raise ContractError(f"{type(self).__name__} trains the {self.phase} phase but the data is the {mode} "
                                f"phase's: use experiment=relevance_{self.phase} (data=relevance_{self.phase})")
        super().configure(spec)


class ContrastiveModule(_RelevancePhase):
    phase = "contrastive"
    step_outputs = {"train": ("loss",), "val": ("loss",), "test": ("loss", "rows")}

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        loss: str = "triplet",
        margin: float = 0.5,
        temperature: float = 0.1,
        log_images: int = 4,
        pretrained: bool = False,
        weights: str | None = None,
        compile: bool | dict[str, Any] = False,
    ):
        super().__init__(optimizer=optimizer, scheduler=scheduler, pretrained=pretrained, weights=weights,
                         compile=compile)
        if loss not in ("triplet", "infonce"):
            raise UserError(f"model.loss must be 'triplet' or 'infonce', got {loss!r}")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        # a .ckpt of this phase names its encoder's architecture for model.encoder_ckpt
        self.hparams["backbone"] = net.config["backbone"]
        self.net = net
        self.loss_name, self.temperature = loss, temperature
        self.log_images = log_images
        self.triplet = nn.TripletMarginLoss(margin=margin)
        # a triplet is "right" when the positive is closer to the anchor than the negative
        self.val_acc = BinaryAccuracy()
        self.test_acc = BinaryAccuracy()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def logged_metrics(self) -> set[str]:
        return {"val/loss", "val/triplet_acc"}

    def _embed(self, batch: dict[str, Any], n: int | None = None) -> tuple[torch.Tensor, ...]:
        n = len(batch["anchor"]) if n is None else n
        # fp32 embeddings under bf16 autocast too: distances of nearby embeddings need the mantissa
        emb = self(torch.cat([batch["anchor"][:n], batch["positive"][:n], batch["negative"][:n]])).float()
        return emb[:n], emb[n:2 * n], emb[2 * n:]

    def _step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, p, neg = self._embed(batch)
        loss = self.triplet(a, p, neg) if self.loss_name == "triplet" else info_nce(a, p, neg, self.temperature)
        n = len(a)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        d_pos, d_neg = (a - p).norm(dim=1).detach(), (a - neg).norm(dim=1).detach()
        if stage != "train":
            # class indices, not distances: a float in [0, 1] would be read as a probability
            right = (d_pos < d_neg).long()
            metric = self.val_acc if stage == "val" else self.test_acc
            metric.update(right, torch.ones_like(right))
            self.log(f"{stage}/triplet_acc", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss, d_pos, d_neg

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        loss, _, _ = self._step(batch, "train")
        return StepOutput(loss=loss).for_training()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        loss, _, _ = self._step(batch, "val")
        return StepOutput(loss=loss)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        loss, d_pos, d_neg = self._step(batch, "test")
        rows = [
            PredictionRow(item_id=event, extras={"camera": camera, "negative_event": negative,
                                                 "d_positive": round(float(dp), 6), "d_negative": round(float(dn), 6),
                                                 "triplet_right": int(dp < dn)})
            for event, camera, negative, dp, dn in zip(batch["event_id"], batch["camera"],
                                                       batch["negative_event_id"], d_pos, d_neg, strict=True)
        ]
        return StepOutput(loss=loss, rows=rows)

    def visualize(self, batch: dict[str, Any], output: StepOutput) -> dict[str, torch.Tensor]:
        """Rows of anchor | positive | negative; the pair's frame is green when the positive is the
        closer one (a right triplet), red otherwise."""
        if self.log_images <= 0:
            return {}
        from torchvision.utils import make_grid

        n = min(self.log_images, len(batch["anchor"]))
        a, p, neg = self._embed(batch, n)
        right = ((a - p).norm(dim=1) < (a - neg).norm(dim=1)).cpu()
        tiles = []
        for i in range(n):
            colour = torch.tensor([0.0, 0.85, 0.0] if right[i] else [0.9, 0.0, 0.0]).view(3, 1, 1)
            for key in ("anchor", "positive", "negative"):
                image = _denormalize(batch[key][i])
                if key != "anchor":
                    framed = colour.expand_as(image).clone()
                    framed[:, 3:-3, 3:-3] = image[:, 3:-3, 3:-3]
                    image = framed
                tiles.append(image)
        return {"triplets": make_grid(torch.stack(tiles), nrow=3, padding=2)}

    def artifacts(self, stage: str) -> dict[str, Any]:
        # after the test the module holds the weights of the selected checkpoint
        if stage != "test":
            return {}
        return {"checkpoints/contrastive.pth": encoder_payload(self.net)}

    def export_graphs(self) -> list[ExportGraph]:
        raise ContractError("phase 1 (relevance_contrastive) is an encoder for phase 2, not a served model: "
                            "export the relevance_segmentation run trained from it")


class RelevanceSegmentationModule(_RelevancePhase):
    phase = "segmentation"
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
        encoder_ckpt: str | None = None,
        threshold: float = 0.5,
        region_threshold: float = 0.5,
        comparison_events: int = 4,
        log_images: int = 4,
        pretrained: bool = False,
        weights: str | None = None,
        compile: bool | dict[str, Any] = False,
    ):
        super().__init__(optimizer=optimizer, scheduler=scheduler, pretrained=pretrained, weights=weights,
                         compile=compile)
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"])
        self.hparams["backbone"] = net.config["backbone"]
        self.net = net
        if encoder_ckpt:
            load_encoder(self.net, encoder_ckpt)
            log.info("encoder initialised from phase 1: %s", encoder_ckpt)
        else:
            log.info("model.encoder_ckpt is null: the encoder is trained from scratch%s; pass "
                     "model.encoder_ckpt=<run>/checkpoints/contrastive.pth to start from phase 1",
                     " (from ImageNet weights)" if pretrained or weights else "")
        self.loss_fn = loss
        self.threshold, self.region_threshold = threshold, region_threshold
        self.comparison_events, self.log_images = comparison_events, log_images
        self.train_metrics = self._pixel_metrics("train/")
        self.val_metrics = self._pixel_metrics("val/")
        self.test_metrics = self._pixel_metrics("test/")
        self.region_metrics = nn.ModuleDict({name: MetricCollection({
            "region_acc": BinaryAccuracy(), "alert_precision": BinaryPrecision(), "alert_recall": BinaryRecall(),
            "alert_acc": BinaryAccuracy()}) for name in ("trained", "untrained")})
        self._untrained: dict[str, torch.Tensor] | None = None
        self._comparison: list[dict[str, Any]] = []

    def _pixel_metrics(self, prefix: str) -> MetricCollection:
        return MetricCollection({"iou": BinaryJaccardIndex(threshold=self.threshold),
                                 "f1": BinaryF1Score(threshold=self.threshold),
                                 "precision": BinaryPrecision(threshold=self.threshold),
                                 "recall": BinaryRecall(threshold=self.threshold)}, prefix=prefix)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def logged_metrics(self) -> set[str]:
        return {f"val/{name}" for name in ("loss", "iou", "f1", "precision", "recall")}

    def _classes(self) -> tuple[str, ...]:
        return self.spec.head("mask").classes if self.spec is not None else CLASSES

    def on_fit_start(self) -> None:
        # the network as built (phase-1 encoder, random decoder): the test compares against it
        if self._untrained is None:
            self._untrained = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def _pixel_step(self, images: torch.Tensor, target: torch.Tensor, metrics: MetricCollection, stage: str):
        logits = self(images)
        loss = self.loss_fn(logits, target)
        prob = torch.sigmoid(logits.detach().float())
        metrics.update(prob.flatten(), target.flatten().long())
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(target),
                 sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=len(target))
        return loss, prob

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        loss, prob = self._pixel_step(batch["image"], batch["mask"], self.train_metrics, "train")
        return StepOutput(loss=loss, pred_mean=prob.mean(), target_mean=batch["mask"].mean()).for_training()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        target = batch["mask"]
        loss, prob = self._pixel_step(batch["image"], target, self.val_metrics, "val")
        return StepOutput(loss=loss, prob=prob, preds=(prob > self.threshold).long(), target=target.long())

    # -- test: pixels against motion, regions and alerts against truth ---------------------------
    def _untrained_net(self) -> nn.Module | None:
        if self._untrained is None:
            return None
        if "_untrained_copy" not in self.__dict__:
            net = copy.deepcopy(self.net)
            net.load_state_dict(self._untrained)
            # kept outside the module tree so it never enters a checkpoint
            object.__setattr__(self, "_untrained_copy", net.eval())
        return self.__dict__["_untrained_copy"]

    def _decide(self, net: nn.Module, event: dict[str, Any], name: str) -> tuple[torch.Tensor, RegionDecision]:
        prob = event_relevance(net, event["frames"].to(self.device)).cpu()
        decision = decide_regions(prob, event["labels"], [r["id"] for r in event["regions"]], self.region_threshold)
        metrics = self.region_metrics[name]
        truth = torch.tensor([r["relevant"] for r in event["regions"]], dtype=torch.long)
        known = truth >= 0
        if known.any():
            relevant = torch.tensor(decision.relevant, dtype=torch.long)
            metrics["region_acc"].update(relevant[known].to(self.device), truth[known].to(self.device))
        if event["event_relevant"] >= 0:
            alert = torch.tensor([int(decision.alert)], device=self.device)
            target = torch.tensor([int(event["event_relevant"])], device=self.device)
            for key in ("alert_precision", "alert_recall", "alert_acc"):
                metrics[key].update(alert, target)
        return prob, decision

    def test_step(self, event: dict[str, Any], batch_idx: int) -> StepOutput:
        frames = event["frames"]
        middle = frames[event["middle"]:event["middle"] + 1]
        target = event["mask"][None].to(frames)
        loss, pixel_prob = self._pixel_step(middle, target, self.test_metrics, "test")
        prob, trained = self._decide(self.net, event, "trained")
        untrained_net = self._untrained_net()
        untrained = self._decide(untrained_net, event, "untrained") if untrained_net is not None else None
        if len(self._comparison) < self.comparison_events and event["regions"]:
            self._comparison.append({"frame": frames[event["middle"]].cpu(), "motion": event["motion"].cpu(),
                                     "regions": event["regions"], "trained": (prob, trained),
                                     "untrained": untrained})
        classes = self._classes()
        known = event["event_relevant"] >= 0
        extras: dict[str, Any] = {"camera": event["camera"], "regions": len(event["regions"]),
                                  "relevant_regions": int(sum(trained.relevant)),
                                  "region_scores": ";".join(f"{s:.3f}" for s in trained.scores)}
        if untrained is not None:
            extras["alert_untrained"] = int(untrained[1].alert)
        row = PredictionRow(
            item_id=event["event_id"],
            label=classes[int(event["event_relevant"])] if known else None,
            pred=classes[int(trained.alert)],
            # the event alerts exactly when its highest region score is above region_threshold
            scores={classes[0]: 1.0 - trained.event_score, classes[1]: trained.event_score},
            extras=extras,
        )
        return StepOutput(loss=loss, prob=pixel_prob, preds=(pixel_prob > self.threshold).long(),
                          target=target.long(), rows=[row])

    def on_test_epoch_start(self) -> None:
        self._comparison = []
        for metrics in self.region_metrics.values():
            metrics.reset()

    def on_test_epoch_end(self) -> None:
        for name, metrics in self.region_metrics.items():
            for key, metric in metrics.items():
                if metric.update_count:  # only what the data could score
                    prefix = "test/" if name == "trained" else "test/untrained_"
                    self.log(prefix + key, metric.compute(), batch_size=1)

    # -- inference (suite/inference.py) -------------------------------------------------------
    def _image_size(self) -> int:
        if self.spec is None or self.spec.input.shape[-1] is None:
            raise ContractError("the relevance module has no data spec yet: load it from a checkpoint")
        return int(self.spec.input.shape[-1])

    def export_graphs(self) -> list[ExportGraph]:
        return [relevance_graph(self.net, self._image_size())]

    def export_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """A test event's frames (or a validation batch's images) back to raw RGB 0-255."""
        images = batch["frames"] if "frames" in batch else batch["image"]
        return {"model": (images.detach().float().cpu() * STD + MEAN) * 255.0}

    def inference_options(self) -> dict[str, Any]:
        extras = self.spec.extras if self.spec is not None else {}
        return relevance_options(self._image_size(), self.threshold, self.region_threshold,
                                 int(extras.get("eval_frames", 4)), int(extras.get("event_frames", 16)),
                                 dict(extras.get("motion") or {}))

    # -- pictures and files --------------------------------------------------------------------
    def visualize(self, batch: dict[str, Any], output: StepOutput) -> dict[str, torch.Tensor]:
        """Frame | motion mask (the pseudo-label) | relevance > threshold | overlay (relevance in red)."""
        if self.log_images <= 0:
            return {}
        from torchvision.utils import make_grid

        n = min(self.log_images, len(batch["image"]))
        shown = _denormalize(batch["image"][:n])
        target = output.target[:n].float().cpu().expand(-1, 3, -1, -1)
        pred = (output.prob[:n].float().cpu() > self.threshold).float().expand(-1, 3, -1, -1)
        overlay = shown.clone()
        overlay[:, 0] = torch.where(pred[:, 0] > 0, 1.0, overlay[:, 0])
        return {"relevance": make_grid(torch.cat([shown, target, pred, overlay]), nrow=n, padding=2)}

    def artifacts(self, stage: str) -> dict[str, Any]:
        # after the test the module holds the weights of the selected checkpoint
        if stage != "test":
            return {}
        files: dict[str, Any] = {"checkpoints/segmentation.pth": net_payload(self.net)}
        if self.spec is not None:
            facts = {"image_size": int(self.spec.input.shape[-1]), "threshold": self.threshold,
                     "region_threshold": self.region_threshold,
                     "eval_frames": int(self.spec.extras.get("eval_frames", 4)),
                     "motion": dict(self.spec.extras.get("motion") or {})}
            files["checkpoints/complete.pth"] = net_payload(self.net, **facts)
        if self._comparison:
            files["comparison.jpg"] = comparison_image(self._comparison)
        return files


def comparison_image(items: list[dict[str, Any]]) -> np.ndarray:
    """The seed's comparison, ``H x W x 3`` uint8 RGB: rows of events; columns: motion detection |
    untrained | trained (green relevant, red irrelevant, with each region's score). The drawing is
    the predictor's (``deploy/relevance_pictures.py``)."""
    rows = []
    for item in items:
        frame = (_denormalize(item["frame"]).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        boxes = scaled_boxes(item["regions"], 1.0)
        cols = [motion_panel(frame, item["motion"].numpy(), boxes)]
        for key in ("untrained", "trained"):
            if item[key] is None:
                cols.append(np.zeros_like(frame))
                continue
            prob, decision = item[key]
            cols.append(relevance_panel(frame, prob.numpy(), boxes, decision))
        rows.append(cols)
    return titled_grid(rows, ("motion detection", "untrained", "trained"))

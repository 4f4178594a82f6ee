"""Binary segmentation (seed 002): combined loss, per-epoch precision/recall/F1/IoU/accuracy."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
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
from suite.contracts import ContractError, PredictionRow, StepOutput
from suite.inference import ExportGraph

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


class MaskScores(nn.Module):
    """The exported graph: raw RGB 0-255 ``[N, 3, H, W]`` -> foreground probability ``[N, 1, H, W]``.

    The data's normalisation is inside, so a deployment only decodes and (maybe) resizes or tiles.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        # mean/std folded into one scale and shift: x/255 normalised = x * scale + shift
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / std_t)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(images * self.scale + self.shift))


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
        compile: bool | dict[str, Any] = False,
    ):
        super().__init__(optimizer=optimizer, scheduler=scheduler, pretrained=pretrained, weights=weights,
                         compile=compile)
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

    # -- inference (suite/inference.py) ---------------------------------------------------------
    def _mean_std(self) -> tuple[Sequence[float], Sequence[float]]:
        if self.spec is None:
            raise ContractError("SegmentationModule has no data spec: configure it (or load a checkpoint) first")
        inp = self.spec.input
        return tuple(inp.mean or IMAGENET_MEAN), tuple(inp.std or IMAGENET_STD)

    def export_graphs(self) -> list[ExportGraph]:
        """One graph, ``model``: raw RGB images in, foreground probability maps out, at any height and width
        (the net is fully convolutional: batch, height and width are dynamic axes). A copy of the network
        in eval mode, so exporting during training leaves the module as it was."""
        mean, std = self._mean_std()
        network = MaskScores(copy.deepcopy(self.net).cpu(), mean, std).eval()
        _, height, width = self.spec.input.shape
        height, width = height or 64, width or 64
        example = torch.randint(0, 256, (2, 3, height, width)).float()
        return [ExportGraph("model", network, example, input_name="image", output_names=("foreground",),
                            dynamic_axes=(0, 2, 3),
                            description="RGB images 0-255 [N, 3, H, W] -> foreground probability [N, 1, H, W]")]

    def export_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """A test batch (normalised by the data) back to raw RGB 0-255."""
        mean, std = self._mean_std()
        images = batch["image"].detach().float()
        mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return {"model": ((images * std_t + mean_t) * 255.0).clamp(0, 255).cpu()}

    def inference_options(self) -> dict[str, Any]:
        """The mask threshold and the training size (``train_size`` [H, W], null when the run trained on
        whole images of any size): a predictor tiles or resizes images larger than it."""
        _, height, width = self.spec.input.shape if self.spec is not None else (3, None, None)
        return {"threshold": float(self.threshold),
                "train_size": [int(height), int(width)] if height and width else None}

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

"""Binary segmentation (seed 002): combined loss, per-epoch precision/recall/F1/IoU/accuracy."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

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
from torchmetrics.functional.classification import binary_f1_score, binary_jaccard_index

from deploy.predictors.segmentation import blend_weights, tile_starts
from lightning_modules.base import SuiteModule
from suite.backbones import IMAGENET_MEAN, IMAGENET_STD
from suite.contracts import ContractError, PredictionRow, StepOutput
from suite.errors import ConfigError
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


def _pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """``images`` padded at the bottom and right to a multiple of ``multiple`` (reflected where the image is
    large enough, so the pad looks like the image; repeated edge pixels otherwise)."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not pad_h and not pad_w:
        return images
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def whole_image_logits(net: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tile: int,
                       overlap: float = 0.25, multiple: int = 32) -> torch.Tensor:
    """Logits ``[N, C, H, W]`` of whole images ``[N, 3, H, W]`` of any size.

    An image whose sides are at most ``tile`` goes through ``net`` whole, padded to a multiple of the net's
    stride (``multiple``) and cut back; a larger one in tiles of at most ``tile`` pixels that overlap by
    ``overlap`` of a tile, blended with weights falling off towards each tile's edges: the rule the ONNX
    predictor applies (deploy/predictors/segmentation.py, whose tile offsets and weights this shares), so a
    deployed model sees images as the reported metrics saw them. Written here because neither torch nor
    timm has a sliding-window inference (MONAI's would be one more dependency for a dozen lines).
    """
    height, width = images.shape[-2:]

    def padded(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return net(_pad_to_multiple(x, multiple))[..., :h, :w]

    if height <= tile and width <= tile:
        return padded(images)
    tile_h, tile_w = min(tile, height), min(tile, width)
    stride_h, stride_w = max(1, round(tile_h * (1 - overlap))), max(1, round(tile_w * (1 - overlap)))
    weight = torch.from_numpy(
        blend_weights(tile_h, tile_h - stride_h)[:, None] * blend_weights(tile_w, tile_w - stride_w)[None, :]
    ).to(images.device)
    total = norm = None
    for y in tile_starts(height, tile_h, stride_h):
        for x in tile_starts(width, tile_w, stride_w):
            logits = padded(images[..., y:y + tile_h, x:x + tile_w])
            if total is None:
                total = logits.new_zeros((*logits.shape[:2], height, width))
                norm = logits.new_zeros((height, width))
            total[..., y:y + tile_h, x:x + tile_w] += logits * weight.to(logits.dtype)
            norm[y:y + tile_h, x:x + tile_w] += weight.to(logits.dtype)
    return total / norm


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
        eval_tile: int = 1024,
        eval_overlap: float = 0.25,
    ):
        super().__init__(optimizer=optimizer, scheduler=scheduler, pretrained=pretrained, weights=weights,
                         compile=compile)
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"])
        self.net = net
        self.loss_fn = loss
        self.threshold = threshold
        self.log_images = log_images
        if eval_tile < 32 or not 0.0 <= eval_overlap < 1.0:
            raise ConfigError(f"model.eval_tile={eval_tile} must be at least 32 and "
                              f"model.eval_overlap={eval_overlap} in [0, 1)")
        self.eval_tile, self.eval_overlap = eval_tile, eval_overlap
        self.train_metrics = segmentation_metrics("train/", threshold)
        self.val_metrics = segmentation_metrics("val/", threshold)
        self.test_metrics = segmentation_metrics("test/", threshold)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def logged_metrics(self) -> set[str]:
        return {f"val/{name}" for name in ("loss", "precision", "recall", "f1", "iou", "accuracy")}

    def whole_image_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Validation and test see whole images (training may see crops): padded to the net's stride, tiled
        above ``eval_tile`` px, so the reported metrics are whole-image metrics."""
        depth = getattr(self.net, "config", {}).get("encoder_depth", 5)
        return whole_image_logits(self, images, self.eval_tile, self.eval_overlap, multiple=2 ** depth)

    def _shared_step(self, batch: dict[str, Any], metrics: MetricCollection, stage: str):
        logits = self(batch["image"]) if stage == "train" else self.whole_image_logits(batch["image"])
        target = batch["mask"]
        loss = self.loss_fn(logits, target)
        prob = torch.sigmoid(logits.detach().float())
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
        """The mask threshold, the training size (``train_size`` [H, W], null when the run trained on whole
        images of any size: a predictor resizes larger images to it for a run trained on resized images) and
        the evaluation's tile (``tile_size``, ``tile_overlap``: a predictor runs images up to it whole and
        tiles larger ones, as validation and test did)."""
        _, height, width = self.spec.input.shape if self.spec is not None else (3, None, None)
        return {"threshold": float(self.threshold),
                "train_size": [int(height), int(width)] if height and width else None,
                "tile_size": int(self.eval_tile), "tile_overlap": float(self.eval_overlap)}

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

"""Violence detection (seed 001): a sequence model over cached frame features, focal loss, Keras-style
L2, per-class accuracies and test-time augmentation over temporal crops."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, MulticlassAccuracy

from lightning_modules.base import SPEC_KEY, SuiteModule
from lightning_modules.nets.violence import FrameEncoder, parameter_count
from lightning_modules.tta import aggregate_tta
from suite.contracts import ContractError, DataSpec, PredictionRow, StepOutput
from suite.errors import ConfigError, DataError
from suite.inference import ExportGraph

log = logging.getLogger(__name__)

# Parameter counts the seed quotes for its two models (its own figures; ours are logged beside them).
SEED_PARAMETERS = {"StackedBiLSTM": "2.5M", "HybridBiLSTM": "1.2M"}
# The head of the data spec this module predicts, and its classes when no spec was given yet.
HEAD = "class"
DEFAULT_CLASSES = ("non_violent", "violent")
# The data's sampling when a checkpoint's spec predates recording it (the data config's defaults).
DEFAULT_NUM_FRAMES, DEFAULT_TTA_CROPS = 30, 5


class FrameFeatures(nn.Module):
    """The exported frame encoder: raw frames ``[N, 3, H, W]`` (RGB 0-255) -> features ``[N, D]``, with the
    backbone's normalisation inside (the same arithmetic as ``FrameEncoder.__call__``)."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("std", std.float().clone())

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model((frames - self.mean) / self.std)


class SequenceScores(nn.Module):
    """The exported sequence model: features ``[N, T, D]`` -> class probabilities ``[N, C]``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(features), dim=1)


def rebuild_frame_encoder(described: dict[str, Any]) -> FrameEncoder:
    """The frame encoder a checkpoint's features came from, from its description in the data spec
    (``extras.frame_encoder``): random weights are redrawn from the recorded seed, pretrained ones come
    from the hub cache. A local weights file is recorded by name only, so it cannot be found again."""
    if described.get("weights"):
        raise ConfigError(f"the frame encoder of this run was loaded from the weights file '{described['weights']}', "
                          "which the checkpoint records by name only: rebuilding it for export needs that file "
                          "(export from a run whose data.frame_encoder uses pretrained or random weights)")
    keys = ("backbone", "pretrained", "frame_size", "feature_dim", "projection", "seed")
    encoder = FrameEncoder(**{k: described[k] for k in keys if k in described}, config_key="data.frame_encoder")
    return encoder.load(device="cpu")


def _metrics(prefix: str, num_classes: int) -> MetricCollection:
    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
        "balanced_acc": MulticlassAccuracy(num_classes=num_classes, average="macro"),
        "f1": BinaryF1Score(),
    }, prefix=prefix)


class ViolenceModule(SuiteModule):
    """``features [N, T, D] -> logits [N, 2]`` (class names and their order from the data spec:
    ``non_violent`` 0, ``violent`` 1, the positive class of F1).

    ``net`` is the sequence network, or a factory of it (a ``_partial_`` config node): the factory is
    called by :meth:`configure` with the features' size (``input_dim``) and the number of classes of
    the data spec, so the network's input follows the frame encoder without a config interpolation.

    ``l2`` adds ``l2 * sum(w^2)`` over every weight matrix to the loss, as a Keras
    ``kernel_regularizer=l2(l2)`` does (seed: 0.01 failed, 0.003 optimal); the optimizer's own
    weight decay stays 0 so the two are not counted twice. ``acc``, ``balanced_acc`` and ``f1`` are
    fractions (0-1); per-class accuracies and their gap are in points (0-100), from the ClassGap
    callback (validation) and from this module (test). ``class_names`` is a former key: the class
    names come from the data.
    """

    step_outputs = {
        "train": ("loss", "pred_mean", "target_mean"),
        "val": ("loss", "preds", "target", "prob"),
        "test": ("loss", "preds", "target", "prob", "rows"),
    }

    def __init__(
        self,
        net: nn.Module | Callable[..., nn.Module],
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        l2: float = 0.0,
        class_names: Sequence[str] | None = None,
        pretrained: bool = False,
        weights: str | None = None,
        compile: bool | dict[str, Any] = False,
    ):
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         pretrained=pretrained, weights=weights, compile=compile)
        if l2 < 0:
            raise ConfigError(f"model.l2 must be >= 0, got {l2}")
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "class_names"])
        self.net: nn.Module | None = net if isinstance(net, nn.Module) else None
        self.net_factory = None if isinstance(net, nn.Module) else net
        self.loss_fn = loss
        self.l2 = l2
        if class_names is not None:
            log.warning("model.class_names is deprecated and not used: the class names come from the data "
                        "(label_map.json)")
        # plain strings until the data's spec arrives (checkpoints load with weights_only=True)
        self.class_names = list(DEFAULT_CLASSES)
        self.positive = 1
        self.train_metrics = MulticlassAccuracy(num_classes=2, average="micro")
        self.val_metrics = _metrics("val/", 2)
        self.val_tta = _metrics("val/tta_", 2)
        self.test_metrics = _metrics("test/", 2)
        self.test_tta = _metrics("test/tta_", 2)
        self.test_per_class = MulticlassAccuracy(num_classes=2, average=None)
        self.test_tta_per_class = MulticlassAccuracy(num_classes=2, average=None)

    # -- contract ------------------------------------------------------------------------------
    def configure(self, spec: DataSpec) -> None:
        """Class names from the data's head; the network built for (or checked against) the features' size."""
        super().configure(spec)
        head = spec.head(HEAD)
        if head.num_classes != 2:
            raise ContractError(f"ViolenceModule is binary, but the data's '{HEAD}' head has classes {head.classes}")
        self.class_names = list(head.classes)
        self.positive = head.positive if head.positive is not None else 1
        input_dim = int(spec.input.shape[-1])
        if self.net is None:
            declared = getattr(self.net_factory, "keywords", {}).get("input_dim")
            if declared is not None and declared != input_dim:
                raise ConfigError(f"model.net.input_dim={declared} but the cached features are {input_dim}-d "
                                  "(the frame encoder's feature_dim); leave model.net.input_dim out to follow it")
            assert self.net_factory is not None
            self.net = self.net_factory(input_dim=input_dim, num_classes=head.num_classes)
            name = type(self.net).__name__
            claim = SEED_PARAMETERS.get(name)
            log.info("%s: %s parameters%s", name, f"{parameter_count(self.net):,}",
                     f" (the seed quotes {claim})" if claim else "")
        elif self.input_dim is not None and self.input_dim != input_dim:
            raise ConfigError(f"model.net.input_dim={self.input_dim} but the cached features are {input_dim}-d "
                              "(the frame encoder's feature_dim); set model.net.input_dim to it or leave it out")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint learned from the features of one frame encoder: features of another (a
        different backbone, weights or frame size) would be read as garbage, so they are refused."""
        stored = (checkpoint.get(SPEC_KEY) or {}).get("extras", {}).get("frame_encoder")
        current = self.spec.extras.get("frame_encoder") if self.spec is not None else None
        if stored and current and dict(stored) != dict(current):
            raise ConfigError(f"this checkpoint was trained on features of the frame encoder {dict(stored)}, but the "
                              f"data gives features of {dict(current)}: set data.frame_encoder (or "
                              "data.synthetic_frame_encoder) to the checkpoint's")
        super().on_load_checkpoint(checkpoint)

    def logged_metrics(self) -> set[str]:
        names = ("loss", "acc", "balanced_acc", "f1", "tta_acc", "tta_balanced_acc", "tta_f1")
        return {f"val/{name}" for name in names}

    def artifacts(self, stage: str) -> dict[str, Any]:
        """``model_size.json`` after fitting: the sequence network's parameter count beside the seed's."""
        if stage != "fit" or self.net is None:
            return {}
        name = type(self.net).__name__
        return {"model_size.json": {"net": name, "parameters": parameter_count(self.net),
                                    "seed_quotes": SEED_PARAMETERS.get(name)}}

    # -- inference (suite/inference.py) ---------------------------------------------------------
    def _encoder_description(self) -> dict[str, Any]:
        if self.spec is None or self.net is None:
            raise ContractError("the violence module has no data spec: configure it (or load a checkpoint) first")
        described = self.spec.extras.get("frame_encoder")
        if not described:
            raise ContractError("the data spec does not describe its frame encoder (extras.frame_encoder): "
                                "this checkpoint cannot give the frame encoder graph")
        return dict(described)

    def export_graphs(self) -> list[ExportGraph]:
        """Two graphs: ``frame_encoder`` (raw frames -> features, rebuilt from the spec's description so a
        checkpoint alone gives it) and ``sequence_model`` (a window of features -> class probabilities)."""
        described = self._encoder_description()
        encoder = rebuild_frame_encoder(described)
        assert encoder.model is not None and self.net is not None
        size = encoder.frame_size
        frames = FrameFeatures(encoder.model, encoder._mean, encoder._std).eval()
        sequence = SequenceScores(copy.deepcopy(self.net).cpu()).eval()
        clip_len, dim = (int(n) for n in self.spec.input.shape)
        generator = torch.Generator().manual_seed(0)
        frame_example = torch.randint(0, 256, (2, 3, size, size), generator=generator).float()
        with torch.no_grad():  # not inference_mode: the export traces this tensor
            feature_example = frames(frame_example).mean(0, keepdim=True).expand(2, clip_len, dim).clone()
        return [
            ExportGraph("frame_encoder", frames, frame_example, input_name="frames", output_names=("features",),
                        description=f"RGB frames 0-255 [N, 3, {size}, {size}] -> {dim}-d features "
                                    f"({described.get('backbone')})"),
            ExportGraph("sequence_model", sequence, feature_example, input_name="features",
                        output_names=("scores",),
                        description=f"features [N, {clip_len}, {dim}] -> probabilities of {list(self.class_names)}"),
        ]

    def export_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The batch's feature windows for the sequence model. Batches hold cached features, not frames, so
        the frame encoder is checked on a fixed seeded draw of frames of its input size."""
        size = int(self._encoder_description()["frame_size"])
        generator = torch.Generator().manual_seed(0)
        frames = torch.randint(0, 256, (4, 3, size, size), generator=generator).float()
        windows = batch["tta"].flatten(0, 1) if "tta" in batch else batch["features"]
        return {"frame_encoder": frames, "sequence_model": windows.detach().float().cpu()}

    def inference_options(self) -> dict[str, Any]:
        """How the data samples a video: ``num_frames`` frames spread evenly over it at ``frame_size`` px,
        windows of ``clip_len`` of them, ``tta_crops`` windows spread over the frames, averaged."""
        described = self._encoder_description()
        assert self.spec is not None
        extras = self.spec.extras
        return {
            "num_frames": int(extras.get("num_frames") or DEFAULT_NUM_FRAMES),
            "clip_len": int(self.spec.input.shape[0]),
            "tta_crops": int(extras.get("tta_crops") or DEFAULT_TTA_CROPS),
            "aggregation": "mean", "threshold": 0.5,
            "frame_size": int(described["frame_size"]), "feature_dim": int(described["feature_dim"]),
            # the feature cache keeps float16: the predictor rounds its features the same way
            "feature_dtype": "float16", "positive": self.positive,
        }

    # -- network ---------------------------------------------------------------------------------
    @property
    def input_dim(self) -> int | None:
        return getattr(self.net, "input_dim", None)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.net is None:
            raise ContractError("ViolenceModule builds its network in configure(spec): call it with the data's "
                                "spec before the first forward")
        if features.dim() != 3:
            raise DataError(f"expected features [batch, time, dim], got shape {tuple(features.shape)}")
        if self.input_dim is not None and features.shape[-1] != self.input_dim:
            raise DataError(f"features are {features.shape[-1]}-d but the network expects {self.input_dim} "
                            "(model.net.input_dim / the frame encoder's feature_dim)")
        # fp32 logits under bf16 autocast too: the loss, softmax and metrics read them
        return self.net(features).float()

    def l2_penalty(self) -> torch.Tensor:
        """Sum of squares of the kernels (input-to-hidden and dense weights). Like Keras's
        ``kernel_regularizer``, the recurrent weights ``w_hh`` and biases are not penalised."""
        assert self.net is not None
        weights = [p for name, p in self.net.named_parameters()
                   if p.dim() >= 2 and "norm" not in name and not name.endswith("w_hh")]
        return sum((w.pow(2).sum() for w in weights), torch.zeros((), device=self.device))

    # -- steps -----------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        target = batch["label"]
        logits = self(batch["features"])
        task_loss = self.loss_fn(logits, target)
        loss = task_loss
        if self.l2 > 0:
            penalty = self.l2 * self.l2_penalty()
            loss = loss + penalty
            self.log("train/l2", penalty, on_step=False, on_epoch=True, batch_size=len(target))
        prob = torch.softmax(logits.detach(), dim=1)[:, self.positive]
        self.train_metrics.update(logits.detach().argmax(1), target)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(target))
        self.log("train/focal", task_loss, on_step=False, on_epoch=True, batch_size=len(target))
        self.log("train/acc", self.train_metrics, on_step=False, on_epoch=True, batch_size=len(target))
        return StepOutput(loss=loss, pred_mean=prob.mean(), target_mean=(target == self.positive).float().mean()
                          ).for_training()

    def _tta_prob(self, tta: torch.Tensor) -> torch.Tensor:
        """Softmax averaged over the ``tta [N, crops, T, D]`` windows of each video."""
        n, c = tta.shape[:2]
        logits = self(tta.flatten(0, 1))
        return aggregate_tta(torch.softmax(logits, dim=1).view(n, c, -1), "mean")

    def _eval_step(self, batch: dict[str, Any], stage: str) -> tuple[StepOutput, torch.Tensor]:
        """The centre window's output (loss, preds, target, prob) and the TTA probabilities."""
        target = batch["label"]
        logits = self(batch["features"])
        loss = self.loss_fn(logits, target)
        prob = torch.softmax(logits, dim=1)
        tta_prob = self._tta_prob(batch["tta"])
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        tta_metrics = self.val_tta if stage == "val" else self.test_tta
        for coll, p in ((metrics, prob), (tta_metrics, tta_prob)):
            coll["acc"].update(p, target)
            coll["balanced_acc"].update(p, target)
            coll["f1"].update(p[:, self.positive], (target == self.positive).long())
        n = len(target)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=n)
        self.log_dict(tta_metrics, on_step=False, on_epoch=True, batch_size=n)
        return StepOutput(loss=loss, preds=prob.argmax(1), target=target, prob=prob), tta_prob

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        return self._eval_step(batch, "val")[0]

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        out, tta_prob = self._eval_step(batch, "test")
        tta_preds = tta_prob.argmax(1)
        self.test_per_class.update(out.preds, out.target)
        self.test_tta_per_class.update(tta_preds, out.target)
        out.rows = [self._row(batch, i, out, tta_prob[i], int(tta_preds[i])) for i in range(len(out.target))]
        return out

    def _row(self, batch: dict[str, Any], i: int, out: StepOutput, tta_prob: torch.Tensor,
             tta_pred: int) -> PredictionRow:
        """One test video: the centre window's prediction and scores; the TTA ones in the extras."""
        names = self.class_names
        label, pred = int(out.target[i]), int(out.preds[i])
        positive = names[self.positive]
        return PredictionRow(
            item_id=str(batch["item_id"][i]), group=str(batch["group"][i]), label=names[label], pred=names[pred],
            scores={name: float(p) for name, p in zip(names, out.prob[i].tolist(), strict=True)},
            extras={f"prob_{positive}_tta": round(float(tta_prob[self.positive]), 6), "pred_tta": names[tta_pred],
                    "correct": int(pred == label), "correct_tta": int(tta_pred == label)},
        )

    def on_test_epoch_end(self) -> None:
        for prefix, metric in (("test/", self.test_per_class), ("test/tta_", self.test_tta_per_class)):
            if not metric.update_called:
                continue
            per_class = metric.compute()
            for name, acc in zip(self.class_names, per_class, strict=True):
                self.log(f"{prefix}acc_{name}", acc)
            self.log(f"{prefix}class_gap", per_class.max() - per_class.min())
            metric.reset()

"""Violence detection (seed 001): a sequence model over cached frame features, focal loss, Keras-style
L2, per-class accuracies and test-time augmentation over temporal crops."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, MulticlassAccuracy

from lightning_modules.base import SuiteModule
from lightning_modules.nets.violence import parameter_count
from suite.errors import ConfigError, DataError

# Parameter counts the seed quotes for its two models (its own figures; ours are printed beside them).
SEED_PARAMETERS = {"StackedBiLSTM": "2.5M", "HybridBiLSTM": "1.2M"}


def _metrics(prefix: str, num_classes: int) -> MetricCollection:
    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
        "balanced_acc": MulticlassAccuracy(num_classes=num_classes, average="macro"),
        "f1": BinaryF1Score(),
    }, prefix=prefix)


class ViolenceModule(SuiteModule):
    """``features [N, T, D] -> logits [N, 2]`` (class 0 non-violent, 1 violent).

    ``l2`` adds ``l2 * sum(w^2)`` over every weight matrix to the loss, as a Keras
    ``kernel_regularizer=l2(l2)`` does (seed: 0.01 failed, 0.003 optimal); the optimizer's own
    weight decay stays 0 so the two are not counted twice. ``acc``, ``balanced_acc`` and ``f1`` are
    fractions (0-1); per-class accuracies and their gap are in points (0-100), from the ClassGap
    callback (validation) and from this module (test).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        l2: float = 0.0,
        class_names: Sequence[str] = ("non_violent", "violent"),
        pretrained: bool = False,
        weights: str | None = None,
    ):
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         pretrained=pretrained, weights=weights)
        if l2 < 0:
            raise ConfigError(f"model.l2 must be >= 0, got {l2}")
        # plain strings: checkpoints are loaded with weights_only=True, which refuses OmegaConf lists
        class_names = [str(c) for c in class_names]
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"])
        self.net = net
        self.loss_fn = loss
        self.l2 = l2
        self.class_names = list(class_names)
        n = len(self.class_names)
        self.train_metrics = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_metrics = _metrics("val/", n)
        self.val_tta = _metrics("val/tta_", n)
        self.test_metrics = _metrics("test/", n)
        self.test_tta = _metrics("test/tta_", n)
        self.test_per_class = MulticlassAccuracy(num_classes=n, average=None)
        self.test_tta_per_class = MulticlassAccuracy(num_classes=n, average=None)
        self._announced = False

    # -- checks --------------------------------------------------------------------------
    @property
    def input_dim(self) -> int | None:
        return getattr(self.net, "input_dim", None)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_dim = getattr(datamodule, "feature_dim", None)
        if data_dim is not None and self.input_dim is not None and data_dim != self.input_dim:
            raise ConfigError(f"model.net.input_dim={self.input_dim} but the cached features are {data_dim}-d "
                              f"(data.feature_dim); set model.net.input_dim={data_dim}")
        if not self._announced and self.trainer.is_global_zero:
            self._announced = True
            name = type(self.net).__name__
            claim = SEED_PARAMETERS.get(name)
            print(f"{name}: {parameter_count(self.net):,} parameters"
                  + (f" (the seed quotes {claim})" if claim else ""))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3:
            raise DataError(f"expected features [batch, time, dim], got shape {tuple(features.shape)}")
        if self.input_dim is not None and features.shape[-1] != self.input_dim:
            raise DataError(f"features are {features.shape[-1]}-d but the network expects {self.input_dim} "
                            "(model.net.input_dim / data.feature_dim)")
        return self.net(features)

    def l2_penalty(self) -> torch.Tensor:
        """Sum of squares of the kernels (input-to-hidden and dense weights). Like Keras's
        ``kernel_regularizer``, the recurrent weights ``w_hh`` and biases are not penalised."""
        weights = [p for name, p in self.net.named_parameters()
                   if p.dim() >= 2 and "norm" not in name and not name.endswith("w_hh")]
        return sum((w.pow(2).sum() for w in weights), torch.zeros((), device=self.device))

    # -- steps ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        target = batch["label"]
        logits = self(batch["features"])
        task_loss = self.loss_fn(logits, target)
        loss = task_loss
        if self.l2 > 0:
            penalty = self.l2 * self.l2_penalty()
            loss = loss + penalty
            self.log("train/l2", penalty, on_step=False, on_epoch=True, batch_size=len(target))
        prob = torch.softmax(logits.detach(), dim=1)[:, 1]
        self.train_metrics.update(logits.detach().argmax(1), target)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(target))
        self.log("train/focal", task_loss, on_step=False, on_epoch=True, batch_size=len(target))
        self.log("train/acc", self.train_metrics, on_step=False, on_epoch=True, batch_size=len(target))
        return {"loss": loss, "pred_mean": prob.mean(), "target_mean": target.float().mean()}

    def _tta_prob(self, tta: torch.Tensor) -> torch.Tensor:
        n, c = tta.shape[:2]
        logits = self(tta.flatten(0, 1))
        return torch.softmax(logits, dim=1).view(n, c, -1).mean(1)

    def _eval_step(self, batch: dict[str, Any], stage: str) -> dict[str, Any]:
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
            coll["f1"].update(p[:, 1], target)
        n = len(target)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=n)
        self.log_dict(tta_metrics, on_step=False, on_epoch=True, batch_size=n)
        return {"preds": prob.argmax(1), "tta_preds": tta_prob.argmax(1), "target": target, "prob": prob,
                "tta_prob": tta_prob}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        out = self._eval_step(batch, "val")
        return {"preds": out["preds"], "target": out["target"], "prob": out["prob"]}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out = self._eval_step(batch, "test")
        self.test_per_class.update(out["preds"], out["target"])
        self.test_tta_per_class.update(out["tta_preds"], out["target"])
        rows = []
        for i, video in enumerate(batch["video"]):
            label = int(out["target"][i])
            pred, tta_pred = int(out["preds"][i]), int(out["tta_preds"][i])
            rows.append({
                "video": video, "group": batch["group"][i], "label": self.class_names[label],
                "prob_violent": round(float(out["prob"][i, 1]), 6), "pred": self.class_names[pred],
                "prob_violent_tta": round(float(out["tta_prob"][i, 1]), 6), "pred_tta": self.class_names[tta_pred],
                "correct": int(pred == label), "correct_tta": int(tta_pred == label),
            })
        return {"rows": rows}

    def on_test_epoch_end(self) -> None:
        for prefix, metric in (("test/", self.test_per_class), ("test/tta_", self.test_tta_per_class)):
            if not metric.update_called:
                continue
            per_class = metric.compute() * 100.0
            for name, acc in zip(self.class_names, per_class, strict=True):
                self.log(f"{prefix}acc_{name}", acc)
            self.log(f"{prefix}class_gap", per_class.max() - per_class.min())
            metric.reset()

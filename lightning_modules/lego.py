"""LEGO part + colour classifier (seed 004): multi-task training, seed metrics, confusion analysis.

The heads' sizes come from the data (the DataModule's label maps), so the network is built in
:meth:`setup` from a ``_partial_`` network config and the class names are stored in every
checkpoint. Metrics (torchmetrics): part top-1 and top-5, colour accuracy over known colours only,
each also per subset (the manifest's raw source value) on validation and test; the test split's
most-confused part pairs go to ``confused_parts.csv`` and the confusion matrix to TensorBoard.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lightning_modules.base import SuiteModule
from lightning_modules.multitask_loss import MultiTaskLoss
from suite.io import atomic_write_csv, atomic_write_json


def warmup_cosine(
    optimizer: torch.optim.Optimizer, max_epochs: int = 30, warmup_epochs: int = 3, warmup_start_factor: float = 0.1,
) -> SequentialLR | CosineAnnealingLR:
    """Linear warm-up for ``warmup_epochs`` then cosine annealing to the end (seed: 3 + cosine, 30 epochs)."""
    warmup = min(warmup_epochs, max(0, max_epochs - 1))
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, max_epochs - warmup))
    if warmup == 0:
        return cosine
    return SequentialLR(optimizer, [LinearLR(optimizer, warmup_start_factor, 1.0, total_iters=warmup), cosine],
                        milestones=[warmup])


def _key(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", name)


class LegoModule(SuiteModule):
    def __init__(
        self,
        net: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        loss: nn.Module | None = None,
        tasks: list[str] | None = None,
        top_k: int = 5,
        confusion_min_count: int = 1,
        log_confusion: bool = True,
        pretrained: bool = False,
        weights: str | None = None,
    ):
        super().__init__(optimizer=optimizer, scheduler=scheduler, pretrained=pretrained, weights=weights)
        # ``tasks`` arrives as an OmegaConf list, which a weights-only checkpoint load refuses.
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "tasks"])
        self.net_factory = net
        self.loss_fn = loss if loss is not None else MultiTaskLoss()
        self.tasks = [t for t in ("part", "color") if t in (tasks or ["part", "color"])]
        self.top_k = top_k
        self.confusion_min_count = confusion_min_count
        self.log_confusion = log_confusion
        self.net: nn.Module | None = None
        self.part_names: list[str] = []
        self.color_names: list[str] = []
        self.subsets: list[str] = []
        self.metrics = nn.ModuleDict()

    # -- building ----------------------------------------------------------------------------
    def build(self, part_names: list[str], color_names: list[str], subsets: list[str]) -> None:
        """Create the network and metrics for these classes (idempotent for the same classes)."""
        if self.net is not None:
            if (part_names, color_names) != (self.part_names, self.color_names):
                raise ValueError("LegoModule was built for other classes than the data's")
            return
        self.part_names, self.color_names, self.subsets = list(part_names), list(color_names), list(subsets)
        heads = [t for t in self.tasks if (t == "part" and part_names) or (t == "color" and color_names)]
        self.net = self.net_factory(num_parts=len(part_names) if "part" in heads else 0,
                                    num_colors=len(color_names) if "color" in heads else 0, heads=heads)
        for stage in ("train", "val", "test"):
            for scope in ["all"] + ([] if stage == "train" else [_key(s) for s in self.subsets]):
                for name, metric in self._new_metrics().items():
                    self.metrics[f"{stage}__{scope}__{name}"] = metric
        for head in heads:
            names = part_names if head == "part" else color_names
            for stage in ("val", "test"):
                self.metrics[f"{stage}__{head}_confusion"] = MulticlassConfusionMatrix(num_classes=len(names))

    def _new_metrics(self) -> dict[str, MulticlassAccuracy]:
        out = {}
        if self.part_names and "part" in self.tasks:
            n = len(self.part_names)
            out["part_acc"] = MulticlassAccuracy(num_classes=n, top_k=1, average="micro")
            if n > 2:
                out["part_top5"] = MulticlassAccuracy(num_classes=n, top_k=min(self.top_k, n), average="micro")
        if self.color_names and "color" in self.tasks:
            out["color_acc"] = MulticlassAccuracy(num_classes=len(self.color_names), top_k=1, average="micro")
        return out

    def build_from_datamodule(self, datamodule: Any) -> None:
        """Build for the classes of a set-up LegoDataModule."""
        self.build(datamodule.part_names, datamodule.color_names, datamodule.subsets)

    def setup(self, stage: str) -> None:
        if self.net is None:
            datamodule = self.trainer.datamodule
            datamodule.setup(stage)
            self.build_from_datamodule(datamodule)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lego_classes"] = {"part_names": self.part_names, "color_names": self.color_names,
                                      "subsets": self.subsets}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        classes = checkpoint.get("lego_classes")
        if classes and self.net is None:
            self.build(classes["part_names"], classes["color_names"], classes["subsets"])

    def on_fit_start(self) -> None:
        if self.trainer.is_global_zero:
            out = Path(self.trainer.default_root_dir)
            atomic_write_json(out / "part_names.json", self.part_names)
            atomic_write_json(out / "color_names.json", self.color_names)

    # -- steps -------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | None]:
        outputs = self.net(images)
        heads = self.net.heads
        logits = dict(zip(heads, outputs, strict=True))
        return {"part": logits.get("part"), "color": logits.get("color")}

    def _update(self, stage: str, scope: str, logits: dict[str, torch.Tensor | None], batch: dict[str, Any],
                rows: torch.Tensor | None = None) -> None:
        for task, names in (("part", ("part_acc", "part_top5")), ("color", ("color_acc",))):
            pred = logits[task]
            if pred is None:
                continue
            target = batch[task]
            known = target >= 0 if rows is None else (target >= 0) & rows
            if not bool(known.any()):
                continue
            for name in names:
                key = f"{stage}__{scope}__{name}"
                if key in self.metrics:
                    self.metrics[key].update(pred[known].detach(), target[known])
                    if stage == "train":  # logged as an object so that callbacks see it at epoch end
                        self.log(f"train/{name}", self.metrics[key], on_step=False, on_epoch=True)

    def _step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
        logits = self(batch["image"])
        terms = self.loss_fn.terms(logits["part"], logits["color"], batch["part"], batch["color"])
        n = len(batch["image"])
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, prog_bar=name == "loss", batch_size=n,
                     sync_dist=True)
        self._update(stage, "all", logits, batch)
        if stage != "train":
            subsets = list(batch["subset"])
            for subset in set(subsets):
                mask = torch.tensor([s == subset for s in subsets], device=batch["part"].device)
                self._update(stage, _key(subset), logits, batch, rows=mask)
            for head in ("part", "color"):
                confusion = self.metrics[f"{stage}__{head}_confusion"] if f"{stage}__{head}_confusion" in \
                    self.metrics else None
                known = batch[head] >= 0
                if confusion is not None and logits[head] is not None and bool(known.any()):
                    confusion.update(logits[head][known].argmax(1), batch[head][known])
        return terms["loss"], logits

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, _ = self._step(batch, "train")
        return {"loss": loss}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        _, logits = self._step(batch, "test")
        rows: list[dict[str, Any]] = [
            {"item": name, "subset": subset, "source": source}
            for name, subset, source in zip(batch["name"], batch["subset"], batch["source"], strict=True)
        ]
        for task, names in (("part", self.part_names), ("color", self.color_names)):
            pred = logits[task]
            if pred is None:
                continue
            prob = pred.detach().softmax(1)
            conf, idx = prob.max(1)
            for row, t, i, c in zip(rows, batch[task].tolist(), idx.tolist(), conf.tolist(), strict=True):
                row[f"{task}_true"] = names[t] if t >= 0 else ""
                row[f"{task}_pred"] = names[i]
                row[f"{task}_confidence"] = round(float(c), 5)
                row[f"{task}_correct"] = "" if t < 0 else int(t == i)
        return {"rows": rows}

    # -- epoch ends --------------------------------------------------------------------------
    def _log_metrics(self, stage: str) -> None:
        for key, metric in self.metrics.items():
            if not key.startswith(f"{stage}__") or key.endswith("_confusion"):
                continue
            _, scope, name = key.split("__")
            if metric.update_called:
                label = f"{stage}/{name}" if scope == "all" else f"{stage}/{name}/{scope}"
                self.log(label, metric.compute(), prog_bar=scope == "all" and stage != "train")
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        self._confusion("val", write_table=False)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")
        self._confusion("test", write_table=True)

    def confused_pairs(self, matrix: torch.Tensor) -> list[dict[str, Any]]:
        """Seed 4.3: off-diagonal (true, predicted) part pairs, most frequent first."""
        pairs = []
        for i, j in (matrix >= max(1, self.confusion_min_count)).nonzero().tolist():
            if i != j:
                pairs.append({"true_part": self.part_names[i], "predicted_part": self.part_names[j],
                              "count": int(matrix[i, j]), "true_total": int(matrix[i].sum())})
        return sorted(pairs, key=lambda r: (-r["count"], r["true_part"], r["predicted_part"]))

    def _confusion(self, stage: str, write_table: bool) -> None:
        for head in ("part", "color"):
            key = f"{stage}__{head}_confusion"
            if key in self.metrics:
                self._head_confusion(stage, head, self.metrics[key], write_table and head == "part")

    def _head_confusion(self, stage: str, head: str, metric: MulticlassConfusionMatrix, write_table: bool) -> None:
        if not metric.update_called or self.trainer.sanity_checking:
            metric.reset()
            return
        matrix = metric.compute().cpu()
        names = self.part_names if head == "part" else self.color_names
        if write_table and self.trainer.is_global_zero:
            atomic_write_csv(Path(self.trainer.default_root_dir) / "confused_parts.csv", self.confused_pairs(matrix),
                             fieldnames=["true_part", "predicted_part", "count", "true_total"])
        logger = self.logger
        if self.log_confusion and logger is not None and hasattr(logger.experiment, "add_figure"):
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            size = max(4.0, 0.3 * len(names))
            fig, ax = plt.subplots(figsize=(size, size))
            metric.plot(val=matrix, ax=ax, labels=names)
            logger.experiment.add_figure(f"{stage}/{head}_confusion", fig, global_step=self.current_epoch)
            plt.close(fig)
        metric.reset()

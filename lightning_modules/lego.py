"""LEGO part + colour classifier (seed 004): multi-task training, seed metrics, confused part pairs.

The heads' sizes come from the data: :meth:`LegoModule.configure` builds the network (a
``_partial_`` network config) for the spec's ``part`` and ``color`` heads, and the base stores the
spec in every checkpoint. Metrics (torchmetrics): part top-1 and top-5, colour accuracy over known
colours only, each also per subset (the manifest's raw source value, ``spec.extras["subsets"]``)
on validation and test. The steps give the callbacks the primary head's predictions (part when
the model has a part head, else colour): the confusion matrix is drawn by
``callbacks.tensorboard_panels.TensorBoardPanels``. The test split's most-confused part pairs
become ``confused_parts.csv`` and the class lists ``part_names.json``/``color_names.json``, both
through :meth:`artifacts`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lightning_modules.base import SPEC_KEY, SuiteModule
from lightning_modules.multitask_loss import MultiTaskLoss
from suite.contracts import ContractError, DataSpec, Head, InputSpec, PredictionRow, StepOutput
from suite.errors import ConfigError
from suite.inference import ExportGraph

log = logging.getLogger(__name__)

HEADS = ("part", "color")
#: the checkpoint entry of runs made before the data spec was stored (class lists only)
LEGACY_CLASSES_KEY = "lego_classes"


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


def checkpoint_spec(checkpoint: Mapping[str, Any]) -> DataSpec | None:
    """The data spec a lego checkpoint was trained with: the suite's stored spec, or for older runs
    the class lists they kept under ``lego_classes``; None when the file has neither."""
    stored = checkpoint.get(SPEC_KEY)
    if stored is not None:
        return DataSpec.from_dict(stored)
    classes = checkpoint.get(LEGACY_CLASSES_KEY)
    if not classes:
        return None
    names = {"part": classes.get("part_names") or [], "color": classes.get("color_names") or []}
    return DataSpec(
        task="lego",
        heads=tuple(Head(head, tuple(names[head])) for head in HEADS if names[head]),
        input=InputSpec("image", (3, None, None)),
        extras={"subsets": list(classes.get("subsets") or [])},
    )


def _key(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", name)


class LegoProbabilities(nn.Module):
    """The exported graph: raw RGB images (float 0-255, ``[N, 3, S, S]``) -> one probability tensor per
    head (``part_prob``, ``color_prob``). The classifier normalises its input itself; softmax is added."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(logits.softmax(dim=1) for logits in self.net(image))


class LegoModule(SuiteModule):
    step_outputs = {
        "train": ("loss",),
        "val": ("loss", "preds", "target", "prob"),
        "test": ("loss", "preds", "target", "prob", "rows"),
    }

    def __init__(
        self,
        net: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        loss: nn.Module | None = None,
        top_k: int = 5,
        confusion_min_count: int = 1,
        pretrained: bool = False,
        weights: str | None = None,
        compile: bool | dict[str, Any] = False,
        tasks: list[str] | None = None,
        log_confusion: bool | None = None,
    ):
        super().__init__(optimizer=optimizer, scheduler=scheduler, pretrained=pretrained, weights=weights,
                         compile=compile)
        # ``tasks`` is deprecated (the heads come from the spec): not recorded in the checkpoint
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "tasks"])
        self.net_factory = net
        self.loss_fn = loss if loss is not None else MultiTaskLoss()
        self.top_k = top_k
        self.confusion_min_count = confusion_min_count
        # Deprecated keys, kept so that configs of earlier runs still load.
        self.tasks: list[str] | None = None
        if tasks is not None:
            log.warning("model.tasks is deprecated: the heads come from data.tasks through the data spec; "
                        "remove model.tasks (it now only narrows the data's heads)")
            self.tasks = [t for t in HEADS if t in tasks]
        if log_confusion is not None:
            log.warning("model.log_confusion is deprecated and no longer read: the confusion matrix is "
                        "callbacks.confusion_matrix (remove it with ~callbacks.confusion_matrix)")
        self.net: nn.Module | None = None
        self.heads: list[str] = []
        self.subsets: list[str] = []
        self.metrics = nn.ModuleDict()
        self.confused: list[dict[str, Any]] | None = None

    # -- contract ------------------------------------------------------------------------------
    def configure(self, spec: DataSpec) -> None:
        """Build the network and metrics for the spec's ``part``/``color`` heads (once; the same
        classes again are a no-op, other classes an error)."""
        heads = [h.name for h in spec.heads if h.name in HEADS and (self.tasks is None or h.name in self.tasks)]
        if not heads:
            raise ConfigError(f"the lego data gives no part or color head to train (heads: "
                              f"{[h.name for h in spec.heads]}); check data.tasks and the manifest's labels")
        if self.net is not None:
            if self.spec is not None and [(h, spec.head(h).classes) for h in heads] != \
                    [(h, self.spec.head(h).classes) for h in self.heads]:
                raise ConfigError("the lego model was built for other classes than this data's "
                                  f"({self.heads} heads); train a new model for these classes")
            return
        super().configure(spec)
        self.heads = heads
        self.subsets = [str(s) for s in spec.extras.get("subsets", [])]
        self.net = self.net_factory(
            num_parts=spec.head("part").num_classes if "part" in heads else 0,
            num_colors=spec.head("color").num_classes if "color" in heads else 0,
            heads=heads,
        )
        for stage in ("train", "val", "test"):
            for scope in ["all"] + ([] if stage == "train" else [_key(s) for s in self.subsets]):
                for name, metric in self._new_metrics().items():
                    self.metrics[f"{stage}__{scope}__{name}"] = metric
        if "part" in heads:
            self.metrics["test__part_confusion"] = MulticlassConfusionMatrix(num_classes=len(self.part_names))

    def _new_metrics(self) -> dict[str, MulticlassAccuracy]:
        out = {}
        if "part" in self.heads:
            n = len(self.part_names)
            out["part_acc"] = MulticlassAccuracy(num_classes=n, top_k=1, average="micro")
            if n > 2:
                out["part_top5"] = MulticlassAccuracy(num_classes=n, top_k=min(self.top_k, n), average="micro")
        if "color" in self.heads:
            out["color_acc"] = MulticlassAccuracy(num_classes=len(self.color_names), top_k=1, average="micro")
        return out

    def logged_metrics(self) -> set[str]:
        """Before the data is read the heads are unknown: every metric a head may log. Once configured,
        those of the model's heads (``part_top5`` needs more than two parts)."""
        losses = {"val/loss", "val/loss_part", "val/loss_color"}
        if self.net is None:
            heads = self.tasks or list(HEADS)
            return losses | {f"val/{m}" for h in heads for m in (("part_acc", "part_top5") if h == "part"
                                                                 else ("color_acc",))}
        return losses | {f"val/{key.split('__')[2]}" for key in self.metrics if key.startswith("val__all__")}

    @classmethod
    def spec_from_checkpoint(cls, checkpoint: dict[str, Any]) -> DataSpec | None:
        return checkpoint_spec(checkpoint)  # also the class lists of runs made before the spec was stored

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.spec is None and SPEC_KEY not in checkpoint:
            spec = checkpoint_spec(checkpoint)  # a run made before the spec was stored
            if spec is not None:
                self.configure(spec)
                return
        super().on_load_checkpoint(checkpoint)

    @property
    def primary(self) -> str:
        """The head whose predictions the callbacks see: part when the model has one, else colour."""
        return self.heads[0]

    @property
    def part_names(self) -> list[str]:
        return list(self.spec.head("part").classes) if self.spec is not None and "part" in self.heads else []

    @property
    def color_names(self) -> list[str]:
        return list(self.spec.head("color").classes) if self.spec is not None and "color" in self.heads else []

    def names(self, head: str) -> list[str]:
        return self.part_names if head == "part" else self.color_names

    def artifacts(self, stage: str) -> dict[str, Any]:
        if stage == "fit":
            return {"part_names.json": self.part_names, "color_names.json": self.color_names}
        if stage == "test" and self.confused:  # a table without rows would lose its header: no file
            return {"confused_parts.csv": self.confused}
        return {}

    # -- inference (suite/inference.py) -------------------------------------------------------
    def _image_size(self) -> int:
        size = self.spec.input.shape[-1] if self.spec is not None else None
        size = size or (self.spec.extras.get("image_size") if self.spec is not None else None)
        if not size:
            raise ContractError("the lego checkpoint does not record its image size (a run made before the "
                                "data spec was stored): retrain, or export it with export.py")
        return int(size)

    def export_graphs(self) -> list[ExportGraph]:
        if self.net is None:
            raise ContractError("LegoModule has no network yet: configure(spec) builds it from the data's heads")
        size = self._image_size()
        outputs = tuple(f"{head}_prob" for head in self.net.heads)
        return [ExportGraph(name="model", network=LegoProbabilities(self.net).eval(),
                            example=torch.rand(2, 3, size, size) * 255, input_name="image", output_names=outputs,
                            dynamic_axes=(0,),
                            description=f"raw RGB images 0-255 [N, 3, {size}, {size}] (a square resize) -> "
                                        f"softmax per head: {', '.join(outputs)}")]

    def export_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # the lego transform already gives float RGB 0-255 (normalisation is inside the network)
        return {"model": batch["image"].detach().float().cpu()}

    def inference_options(self) -> dict[str, Any]:
        return {"image_size": self._image_size(), "resize": "stretch to a square", "interpolation": "linear",
                "top_k": int(self.top_k), "heads": list(self.heads)}

    # -- steps -------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | None]:
        if self.net is None:
            raise ConfigError("LegoModule has no network yet: configure(spec) builds it from the data's heads")
        logits = dict(zip(self.net.heads, self.net(images), strict=True))
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
        return terms["loss"], logits

    def _primary_output(self, loss: torch.Tensor, logits: dict[str, torch.Tensor | None],
                        batch: dict[str, Any]) -> StepOutput:
        """Predictions, targets and probabilities of the primary head, for the items whose label is known."""
        head_logits = logits[self.primary]
        assert head_logits is not None  # the primary head is one of the network's heads
        known = batch[self.primary] >= 0
        prob = head_logits.detach()[known].float().softmax(1)
        return StepOutput(loss=loss, preds=prob.argmax(1), target=batch[self.primary][known], prob=prob)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        loss, _ = self._step(batch, "train")
        return StepOutput(loss=loss).for_training()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        loss, logits = self._step(batch, "val")
        return self._primary_output(loss, logits, batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        loss, logits = self._step(batch, "test")
        output = self._primary_output(loss, logits, batch)
        if "test__part_confusion" in self.metrics and logits["part"] is not None:
            known = batch["part"] >= 0
            if bool(known.any()):
                self.metrics["test__part_confusion"].update(logits["part"][known].argmax(1), batch["part"][known])
        output.rows = self.prediction_rows(logits, batch)
        return output

    def prediction_rows(self, logits: dict[str, torch.Tensor | None], batch: dict[str, Any]) -> list[PredictionRow]:
        """One row per image: label/pred/scores of the primary head; per head ``<head>_true``, ``_pred``,
        ``_confidence`` and ``_correct`` (empty when the label is unknown), then subset and source."""
        n = len(batch["name"])
        extras: list[dict[str, Any]] = [{} for _ in range(n)]
        primary: dict[str, Any] = {}
        for head in self.heads:
            names, head_logits = self.names(head), logits[head]
            if head_logits is None:  # every head of self.heads is one of the network's outputs
                continue
            prob = head_logits.detach().float().softmax(1).cpu()
            conf, idx = prob.max(1)
            target = batch[head].tolist()
            for row, t, i, c in zip(extras, target, idx.tolist(), conf.tolist(), strict=True):
                row[f"{head}_true"] = names[t] if t >= 0 else ""
                row[f"{head}_pred"] = names[i]
                row[f"{head}_confidence"] = round(float(c), 5)
                row[f"{head}_correct"] = "" if t < 0 else int(t == i)
            if head == self.primary:
                primary = {"prob": prob, "target": target, "idx": idx.tolist(), "names": names}
        rows = []
        for k in range(n):
            t = primary["target"][k]
            names = primary["names"]
            rows.append(PredictionRow(
                item_id=batch["name"][k], group=batch["group"][k] or None,
                label=names[t] if t >= 0 else None, pred=names[primary["idx"][k]],
                scores=dict(zip(names, primary["prob"][k].tolist(), strict=True)),
                extras={**extras[k], "subset": batch["subset"][k], "source": batch["source"][k]},
            ))
        return rows

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

    def on_test_epoch_start(self) -> None:
        self.confused = None

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")
        confusion = self.metrics["test__part_confusion"] if "test__part_confusion" in self.metrics else None
        if confusion is not None and confusion.update_called:
            # compute() gathers every rank's counts, so each rank holds the whole test split's pairs
            self.confused = self.confused_pairs(confusion.compute().cpu())
            confusion.reset()

    def confused_pairs(self, matrix: torch.Tensor) -> list[dict[str, Any]]:
        """Seed 4.3: off-diagonal (true, predicted) part pairs seen at least ``confusion_min_count``
        times, most frequent first."""
        pairs = []
        for i, j in (matrix >= max(1, self.confusion_min_count)).nonzero().tolist():
            if i != j:
                pairs.append({"true_part": self.part_names[i], "predicted_part": self.part_names[j],
                              "count": int(matrix[i, j]), "true_total": int(matrix[i].sum())})
        return sorted(pairs, key=lambda r: (-r["count"], r["true_part"], r["predicted_part"]))

"""Per-epoch TensorBoard panels: the confusion matrix and PR curve of classification tasks
(:class:`TensorBoardPanels`), and the pictures a module offers through ``visualize()`` (:class:`ImagePanel`).

:class:`TensorBoardPanels` reads the validation step outputs ``preds`` and ``target`` (class
indices) and, when the step gives it, ``prob`` ([N] positive-class or [N, C] class probabilities)
for the precision-recall curve of binary tasks. Rows of every rank are gathered first, so the
panels show the whole validation set under DDP; rank zero draws them.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from suite.contracts import step_output


class TensorBoardPanels(L.Callback):
    needs = {"val": ("preds", "target")}

    def __init__(self, num_classes: int | None = None, class_names: list[str] | None = None,
                 pr_curve: bool = True, stage: str = "val", head: str | None = None):
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else None
        self.head = head
        self.pr_curve = pr_curve
        self.stage = stage
        self._preds: list[torch.Tensor] = []
        self._target: list[torch.Tensor] = []
        self._prob: list[torch.Tensor] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._preds, self._target, self._prob = [], [], []

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        out = step_output(outputs, "callbacks.TensorBoardPanels")
        self._preds.append(out.require("preds", "TensorBoardPanels").detach().flatten().cpu())
        self._target.append(out.require("target", "TensorBoardPanels").detach().flatten().cpu())
        prob = out.prob
        if isinstance(prob, torch.Tensor):
            prob = prob.detach().float().cpu()
            self._prob.append(prob[:, -1] if prob.ndim == 2 else prob.flatten())

    def _gathered(self, trainer: L.Trainer, parts: list[torch.Tensor]) -> torch.Tensor | None:
        local = torch.cat(parts) if parts else torch.empty(0)
        if trainer.world_size > 1:
            import torch.distributed as dist

            everything: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(everything, local)
            local = torch.cat(everything)
        return local if local.numel() else None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        preds, target = self._gathered(trainer, self._preds), self._gathered(trainer, self._target)
        prob = self._gathered(trainer, self._prob) if self._prob else None
        if not trainer.is_global_zero or preds is None or target is None:
            return
        writers = [lg.experiment for lg in trainer.loggers if hasattr(lg.experiment, "add_figure")]
        if not writers:
            return
        from torchmetrics.functional.classification import multiclass_confusion_matrix

        spec = getattr(pl_module, "spec", None)
        names = self.class_names or []
        if not names and spec is not None and spec.heads:
            names = list((spec.head(self.head) if self.head else spec.heads[0]).classes)
        # the head's class count, not the largest index seen: a class absent from validation keeps its row
        n = self.num_classes or len(names) or int(max(preds.max(), target.max())) + 1
        matrix = multiclass_confusion_matrix(preds.long(), target.long(), num_classes=max(n, 2))
        if len(names) != len(matrix):
            names = [str(i) for i in range(len(matrix))]
        step = trainer.current_epoch
        for writer in writers:
            writer.add_figure(f"{self.stage}/confusion_matrix", _matrix_figure(matrix, names, step), step)
            if self.pr_curve and prob is not None and len(matrix) == 2 and len(prob) == len(target):
                writer.add_pr_curve(f"{self.stage}/pr_curve", target.long().numpy(), prob.numpy(), step)


class ImagePanel(L.Callback):
    """The first validation batch of each epoch through the module's ``visualize()``, to every logger
    that takes images (TensorBoard), as ``val/<name>``."""

    def __init__(self, every_n_epochs: int = 1):
        self.every_n_epochs = max(1, every_n_epochs)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs:
            return
        writers = [lg.experiment for lg in trainer.loggers if hasattr(lg.experiment, "add_image")]
        if not writers:
            return
        with torch.no_grad():
            pictures = pl_module.visualize(batch, step_output(outputs, "callbacks.ImagePanel"))
        for name, image in pictures.items():
            for writer in writers:
                writer.add_image(f"val/{name}", image, global_step=trainer.current_epoch)


def _matrix_figure(matrix: torch.Tensor, names: list[str], epoch: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.numpy()
    rows = counts.sum(axis=1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(names), 1.0 + 0.7 * len(names)))
    ax.imshow(counts / rows, cmap="Blues", vmin=0, vmax=1)  # colour: share of the true class
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{counts[i, j]}", ha="center", va="center",
                    color="white" if counts[i, j] / rows[i, 0] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix, epoch {epoch}")
    fig.tight_layout()
    return fig

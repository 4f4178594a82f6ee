"""training_history.json: one record per epoch with every logged train/val metric.

With ``summary`` the same records also go into a run summary written after fit and after test:
``summary_fields`` (e.g. the phase), the fit's seconds, the epochs, the first and last train loss and
their relative improvement, and the test metrics (the relevance task's ``training_log_<phase>.json``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L

from suite.io import atomic_write_json


def _as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def epoch_record(trainer: L.Trainer, prefixes: tuple[str, ...]) -> dict[str, Any]:
    """The epoch's logged metrics whose keys start with ``prefixes`` (epoch values, ``_epoch`` suffix
    dropped, non-finite values as None), with the epoch and global step: one training_history.json record."""
    record: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
    for key, value in sorted(trainer.callback_metrics.items()):
        if key.startswith(prefixes) and not key.endswith("_step"):
            record[key.removesuffix("_epoch")] = _as_float(value)
    return record


class TrainingHistory(L.Callback):
    """Append the epoch's metrics to ``filename`` (atomically rewritten every epoch).

    The records are part of the callback state, so a run resumed from ``last.ckpt`` keeps the
    history it had and continues it, instead of starting a new file.
    """

    def __init__(self, filename: str = "training_history.json", prefixes: tuple[str, ...] = ("train/", "val/"),
                 summary: str | None = None, summary_fields: dict[str, Any] | None = None,
                 loss_key: str = "train/loss"):
        self.filename = filename
        self.prefixes = tuple(prefixes)
        self.records: list[dict[str, Any]] = []
        self.summary = summary
        self.summary_fields = dict(summary_fields or {})
        self.loss_key = loss_key
        self.seconds: float | None = None
        self._fit_started: float | None = None
        self.test_metrics: dict[str, float | None] = {}

    def _path(self, trainer: L.Trainer, filename: str | None = None) -> Path:
        path = Path(filename or self.filename)
        return path if path.is_absolute() else Path(trainer.default_root_dir) / path

    def summary_record(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.summary_fields, "seconds": self.seconds, "epochs": list(self.records)}
        losses = [r[self.loss_key] for r in self.records if r.get(self.loss_key) is not None]
        if losses:
            out.update({"initial_loss": losses[0], "final_loss": losses[-1],
                        "improvement": (losses[0] - losses[-1]) / losses[0] if losses[0] else 0.0})
        if self.test_metrics:
            out["test"] = dict(self.test_metrics)
        return out

    def _write_summary(self, trainer: L.Trainer) -> None:
        if self.summary and trainer.is_global_zero:
            atomic_write_json(self._path(trainer, self.summary), self.summary_record())

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_started = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fit_started is not None:
            self.seconds = round(time.perf_counter() - self._fit_started, 1)
        self._write_summary(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test_metrics = {k: _as_float(v) for k, v in sorted(trainer.callback_metrics.items())
                             if k.startswith("test/")}
        self._write_summary(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        record = epoch_record(trainer, self.prefixes)
        self.records = [r for r in self.records if r["epoch"] != record["epoch"]] + [record]
        if trainer.is_global_zero:
            atomic_write_json(self._path(trainer), self.records)

    def state_dict(self) -> dict[str, Any]:
        return {"records": list(self.records)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = list(state_dict.get("records", []))

"""training_history.json: one record per epoch with every logged train/val metric."""

from __future__ import annotations

import math
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


class TrainingHistory(L.Callback):
    """Append the epoch's metrics to ``filename`` (atomically rewritten every epoch).

    The records are part of the callback state, so a run resumed from ``last.ckpt`` keeps the
    history it had and continues it, instead of starting a new file.
    """

    def __init__(self, filename: str = "training_history.json", prefixes: tuple[str, ...] = ("train/", "val/")):
        self.filename = filename
        self.prefixes = tuple(prefixes)
        self.records: list[dict[str, Any]] = []

    def _path(self, trainer: L.Trainer) -> Path:
        path = Path(self.filename)
        return path if path.is_absolute() else Path(trainer.default_root_dir) / path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        record: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.startswith(self.prefixes) and not key.endswith("_step"):
                record[key.removesuffix("_epoch")] = _as_float(value)
        self.records = [r for r in self.records if r["epoch"] != record["epoch"]] + [record]
        if trainer.is_global_zero:
            atomic_write_json(self._path(trainer), self.records)

    def state_dict(self) -> dict[str, Any]:
        return {"records": list(self.records)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = list(state_dict.get("records", []))

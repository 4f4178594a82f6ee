"""predictions_agg.csv: one row per evaluated item, written atomically at the end of test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from suite.io import atomic_write_csv


class PredictionWriter(L.Callback):
    """Collect ``outputs["rows"]`` (a list of dicts) from ``test_step`` and write them once.

    Under DDP every rank's rows are gathered, then merged by the module's optional
    ``aggregate_prediction_rows`` (per-event TTA, for instance); rank zero alone writes.
    """

    def __init__(self, filename: str = "predictions_agg.csv"):
        self.filename = filename
        self.rows: list[dict[str, Any]] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if isinstance(outputs, dict) and "rows" in outputs:
            self.rows.extend(outputs["rows"])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = self.rows
        if trainer.world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(gathered, rows)
            rows = [row for part in gathered for row in part]
            # DistributedSampler pads the last batch by repeating items: drop the exact repeats.
            seen: set[tuple] = set()
            unique = []
            for row in rows:
                key = tuple(sorted((k, repr(v)) for k, v in row.items()))
                if key not in seen:
                    seen.add(key)
                    unique.append(row)
            rows = unique
        # Items split over ranks (e.g. TTA clips of one event) are merged after gathering.
        if hasattr(pl_module, "aggregate_prediction_rows"):
            rows = pl_module.aggregate_prediction_rows(rows)
        if trainer.is_global_zero and rows:
            path = Path(self.filename)
            if not path.is_absolute():
                path = Path(trainer.default_root_dir) / path
            atomic_write_csv(path, rows)

"""predictions_agg.csv: one row per evaluated item, written atomically at the end of test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from suite.contracts import PredictionRow, step_output
from suite.io import atomic_write_csv


class PredictionWriter(L.Callback):
    """Collect the test steps' :class:`~suite.contracts.PredictionRow` s and write them once.

    Under DDP every rank's rows are gathered, then merged by the module's ``aggregate_rows``
    (per-event TTA, for instance); rank zero alone writes. The columns are the one schema of
    :class:`~suite.contracts.PredictionRow`: ``item_id, group, label, pred, score_<class>...`` and
    then the task's extras.
    """

    needs = {"test": ("rows",)}

    def __init__(self, filename: str = "predictions_agg.csv"):
        self.filename = filename
        self.rows: list[PredictionRow] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        self.rows.extend(step_output(outputs, "callbacks.PredictionWriter").require("rows", "PredictionWriter"))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        records = [row.as_record() for row in self.rows]
        if trainer.world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(gathered, records)
            # DistributedSampler pads the last batch by repeating items: drop the exact repeats.
            seen: set[tuple] = set()
            records = []
            for record in (r for part in gathered for r in part):
                key = tuple(sorted((k, repr(v)) for k, v in record.items()))
                if key not in seen:
                    seen.add(key)
                    records.append(record)
        # Items split over ranks (e.g. TTA clips of one event) are merged after gathering.
        records = pl_module.aggregate_records(records)
        if trainer.is_global_zero and records:
            path = Path(self.filename)
            if not path.is_absolute():
                path = Path(trainer.default_root_dir) / path
            atomic_write_csv(path, records)

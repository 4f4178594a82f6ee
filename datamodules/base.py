"""What every task's DataModule offers beyond Lightning's: label map and the inputs it read."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset, Sampler

from suite.errors import DataError


def existing_folder(value: str | Path, key: str = "data.root") -> Path:
    """The user's folder ``value`` (``~`` expanded, made absolute); a DataError naming ``key`` if it is missing."""
    folder = Path(os.path.expanduser(str(value))).resolve()
    if not folder.is_dir():
        raise DataError(f"{key}: folder not found: {folder}")
    return folder


class SuiteDataModule(L.LightningDataModule):
    """Base of the tasks' DataModules.

    Subclasses fill ``self.sources`` with ``(path, rows)`` pairs for ``manifests_used.txt`` and
    return their classes from :meth:`label_map` for ``label_map.json``.
    """

    def __init__(self, batch_size: int = 8, num_workers: int = 0, pin_memory: bool = False):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.sources: list[tuple[str, int]] = []

    def label_map(self) -> dict[str, Any]:
        raise NotImplementedError

    def manifests_used(self) -> list[tuple[str, int]]:
        return list(self.sources)

    def make_loader(
        self, dataset: Dataset, shuffle: bool = False, sampler: Sampler | None = None, drop_last: bool = False,
        batch_size: int | None = None,
    ) -> DataLoader:
        kwargs: dict[str, Any] = {}
        if self.num_workers > 0:
            # "fork" keeps loaders working inside joblib's (loky) sweep workers, whose default
            # start method cannot re-import the task; persistent workers avoid a restart per epoch.
            kwargs = {"multiprocessing_context": multiprocessing.get_context("fork"), "persistent_workers": True}
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=drop_last,
            **kwargs,
        )

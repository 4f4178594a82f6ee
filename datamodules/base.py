"""The base of every task's DataModule: it owns the lifecycle, the task fills in four hooks.

Lifecycle (the same for every task):

- ``prepare_data`` (rank zero, under a file lock): generate the synthetic default when
  ``data.root`` is unset, then the task's caches (:meth:`prepare_caches`).
- ``setup`` (idempotent: the suite calls it before fitting so bad data fails early, Lightning again):
  the task's :meth:`build_splits`, then in one place the ``data.dev_samples`` subset, the empty-split
  error and the check that the splits share no item.
- ``spec()``: the :class:`~suite.contracts.DataSpec` the suite hands to the module.

A task implements :meth:`build_splits`, :meth:`item_id`, :meth:`heads`, :meth:`input_spec` and
:meth:`dataset`; optionally :meth:`group_id`, :meth:`spec_extras` and :meth:`prepare_caches`.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import lightning as L
from torch.utils.data import DataLoader, Dataset, Sampler

from suite.contracts import DataSpec, Head, InputSpec, check_split_disjoint
from suite.errors import DataError

if TYPE_CHECKING:
    from datamodules.synthetic.common import SyntheticDataset

SPLITS = ("train", "val", "test")


def existing_folder(value: str | Path, key: str = "data.root") -> Path:
    """The user's folder ``value`` (``~`` expanded, made absolute); a DataError naming ``key`` if it is missing."""
    folder = Path(os.path.expanduser(str(value))).resolve()
    if not folder.is_dir():
        raise DataError(f"{key}: folder not found: {folder}")
    return folder


def dev_subset(splits: dict[str, list[Any]], total: int) -> dict[str, list[Any]]:
    """At most ``total`` items over all splits, shared in proportion to the splits' sizes (at least one
    each), taking each split's first items: the splits are already shuffled, and the same items come
    back every run (seed 002's dev mode)."""
    size = sum(len(items) for items in splits.values())
    if total >= size:
        return splits
    quota = {name: total * len(items) / size for name, items in splits.items()}
    keep = {name: max(1, int(q)) for name, q in quota.items()}
    # largest remainders first, so the counts add up to ``total``
    for name in sorted(quota, key=lambda n: quota[n] - int(quota[n]), reverse=True):
        if sum(keep.values()) >= total:
            break
        keep[name] += 1
    return {name: items[: keep[name]] for name, items in splits.items()}


class SuiteDataModule(L.LightningDataModule):
    """Base of the tasks' DataModules (see the module docstring for the lifecycle and the hooks)."""

    #: the task's name, as in ``conf/experiment`` and :data:`datamodules.synthetic.TASKS`
    task: ClassVar[str] = ""

    def __init__(
        self,
        root: str | None = None,
        synthetic_dir: str = "data/synthetic",
        dev_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.root = root
        self.synthetic_dir = synthetic_dir
        self.dev_samples = dev_samples
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.sources: list[tuple[str, int]] = []
        self.splits: dict[str, list[Any]] | None = None
        self._data_root: Path | None = None

    # -- hooks a task implements ---------------------------------------------------------------
    def synthetic(self) -> tuple[SyntheticDataset, dict[str, Any]]:
        """The task's generator and its parameters for the default data."""
        raise NotImplementedError

    def build_splits(self, root: Path) -> dict[str, list[Any]]:
        """Read ``root`` (the user's layout) into ``{"train": [...], "val": [...], "test": [...]}`` and
        fill ``self.sources`` with ``(path, rows)`` for ``manifests_used.txt``."""
        raise NotImplementedError

    def item_id(self, item: Any) -> str:
        """A stable id of one item (a path relative to the root, an event id ...) for ``splits.json``."""
        raise NotImplementedError

    def group_id(self, item: Any) -> str | None:
        """The group an item belongs to (a source video, a near-duplicate group), if the task has groups."""
        return None

    def heads(self) -> tuple[Head, ...]:
        raise NotImplementedError

    def input_spec(self) -> InputSpec:
        raise NotImplementedError

    def spec_extras(self) -> dict[str, Any]:
        """Task facts the module or the run's outputs need beyond the heads (JSON-able)."""
        return {}

    def dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def prepare_caches(self, root: Path) -> None:
        """Work to do once before training, on rank zero (feature extraction, decoding indexes ...)."""

    # -- lifecycle -----------------------------------------------------------------------------
    def data_root(self) -> Path:
        """The user's folder, or the synthetic default's; found once (item ids ask for it per item)."""
        if self._data_root is None:
            if self.root:
                self._data_root = existing_folder(self.root)
            else:
                generator, params = self.synthetic()
                self._data_root = generator.folder(self.synthetic_dir, self.seed, **params)
        return self._data_root

    def prepare_data(self) -> None:
        if not self.root:
            generator, params = self.synthetic()
            generator.ensure(self.data_root(), self.seed, **params)
        self.prepare_caches(self.data_root())

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        root = self.data_root()
        if not self.root and not root.is_dir():
            self.prepare_data()
        splits = self.build_splits(root)
        if self.dev_samples:
            full = {name: len(items) for name, items in splits.items()}
            splits = dev_subset(splits, self.dev_samples)
            kept = ", ".join(f"{name} {len(items)}/{full[name]}" for name, items in splits.items())
            self.sources.append((f"data.dev_samples={self.dev_samples}: {kept}", sum(map(len, splits.values()))))
        for name in SPLITS:
            if name in splits and not splits[name]:
                raise DataError(f"the {name} split of {root} is empty: add items or change the split fractions")
        check_split_disjoint({name: [self.item_id(it) for it in items] for name, items in splits.items()})
        self.splits = splits

    def split(self, name: str) -> list[Any]:
        self.setup()
        assert self.splits is not None
        if name not in self.splits:
            raise DataError(f"the {self.task} data has no {name} split (splits: {sorted(self.splits)})")
        return self.splits[name]

    def split_ids(self) -> dict[str, list[str]]:
        """``splits.json``: the item ids of each split, and their group ids when the task has groups."""
        self.setup()
        assert self.splits is not None
        out: dict[str, Any] = {name: [self.item_id(it) for it in items] for name, items in self.splits.items()}
        groups = {name: sorted({g for it in items if (g := self.group_id(it)) is not None})
                  for name, items in self.splits.items()}
        if any(groups.values()):
            out["groups"] = groups
        return out

    def spec(self) -> DataSpec:
        self.setup()
        assert self.splits is not None
        return DataSpec(
            task=self.task,
            heads=self.heads(),
            input=self.input_spec(),
            sources=tuple(self.sources),
            split_ids={name: tuple(self.item_id(it) for it in items) for name, items in self.splits.items()},
            extras=self.spec_extras(),
        )

    # -- what label_map.json and manifests_used.txt hold -----------------------------------------
    def label_map(self) -> dict[str, Any]:
        return self.spec().label_map()

    def manifests_used(self) -> list[tuple[str, int]]:
        return list(self.sources)

    # -- loaders -------------------------------------------------------------------------------
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

    def train_dataloader(self) -> DataLoader:
        train = self.dataset("train")
        return self.make_loader(train, shuffle=True, drop_last=len(train) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.make_loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self.make_loader(self.dataset("test"))


"""The base of every task's DataModule: it owns the lifecycle, the task fills in four hooks.

Lifecycle (the same for every task):

- ``prepare_data`` (rank zero, under a file lock): generate the synthetic default when
  ``data.root`` is unset, then the task's caches (:meth:`prepare_caches`).
- ``setup`` (idempotent: the suite calls it before fitting so bad data fails early, Lightning again):
  the task's :meth:`build_splits`, then in one place for every task: the empty-split error, the
  duplicates within a split (dropped, reported), the overlap between splits (an error unless
  ``data.allow_overlap=true``), the ``data.dev_samples`` subset and the classes of the train split
  (a head with fewer than two classes, or without its positive class, is refused).
- ``spec()``: the :class:`~suite.contracts.DataSpec` the suite hands to the module.

A task implements :meth:`build_splits`, :meth:`item_id`, :meth:`heads`, :meth:`input_spec` and
:meth:`dataset`; optionally :meth:`group_id`, :meth:`content_id`, :meth:`item_labels` (or
:meth:`train_class_counts`), :meth:`groups_shared_by_design`, :meth:`spec_extras` and
:meth:`prepare_caches`.

What identifies an item, for the split checks: its :meth:`item_id` (a path or an event id), its
:meth:`content_id` (the bytes of its file, :func:`file_digest`: the same image under two names is one
item) and its :meth:`group_id` (a source video, a capture). Duplicates within a split are dropped
rather than refused: a manifest listing an image twice means the image once, and counting it twice
would weigh it twice in training and in the metrics; the drop is reported (log and
``manifests_used.txt``). Two copies with different labels are refused: which label is right cannot
be guessed.
"""

from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import lightning as L
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules import loader_options
from datamodules.loader_options import LoaderOptions
from datamodules.video import set_decode_threads
from suite.contracts import DataSpec, Head, InputSpec, split_overlaps
from suite.errors import DataError
from suite.printing import warn_on_console

if TYPE_CHECKING:
    from datamodules.synthetic.common import SyntheticDataset

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: examples named per problem in a message
EXAMPLES = 3
#: files up to this size are hashed whole; larger ones (videos) by their size and three 1 MiB samples
#: (start, middle, end): identical copies still match and a few GB of video are not read at every setup
FULL_HASH_BYTES = 8 << 20
SAMPLE_BYTES = 1 << 20
_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """The content id of a file: its size and the sha1 of its bytes (sampled above :data:`FULL_HASH_BYTES`),
    cached per process by path, size and mtime (a setup after the first costs a ``stat`` per file)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return f"missing:{path}"  # the task's reader names missing files; here it only must not match others
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        sha = hashlib.sha1(usedforsecurity=False)
        with open(path, "rb") as fh:
            if stat.st_size <= FULL_HASH_BYTES:
                sha.update(fh.read())
            else:
                for offset in (0, stat.st_size // 2, stat.st_size - SAMPLE_BYTES):
                    fh.seek(offset)
                    sha.update(fh.read(SAMPLE_BYTES))
        _DIGESTS[key] = f"{stat.st_size}:{sha.hexdigest()}"
    return _DIGESTS[key]


def _examples(values: Collection[str]) -> str:
    shown = sorted(values)[:EXAMPLES]
    return ", ".join(shown) + (" ..." if len(values) > EXAMPLES else "")


def check_class_counts(counts: Mapping[str, Mapping[str, int]], heads: Sequence[Head], where: str,
                       items_name: str = "items") -> None:
    """Refuse a training split a classifier cannot learn from: per head (``counts``: class -> items, unknown
    labels left out), at least two classes present and the head's positive class among them. Classes of
    the head absent from training only warn: the others can still be learned."""
    by_name = {head.name: head for head in heads}
    for name, per_class in counts.items():
        head = by_name.get(name)
        classes = list(head.classes) if head is not None else sorted(per_class)
        found = {c: int(n) for c, n in per_class.items() if n > 0}
        listed = ", ".join(f"{c}: {found.get(c, 0)}" for c in dict.fromkeys([*classes, *found])) or "none"
        positive = classes[head.positive] if head is not None and head.positive is not None else None
        if positive is not None and positive not in found:
            raise DataError(
                f"{where} has no '{positive}' {items_name} (head '{name}': {listed}): the classifier cannot learn "
                "a class it never sees; add such items to training, check the labels or the class mapping, or "
                "change the split (data.seed, the split fractions)")
        if len(found) < 2:
            raise DataError(
                f"{where} holds {len(found)} class(es) for head '{name}' ({listed}): a classifier needs at least "
                "two; add items of other classes, check the labels, or drop the head (LEGO: data.tasks)")
        absent = [c for c in classes if c not in found]
        if absent:
            warn_on_console(log, f"{where}: head '{name}' has no {items_name} of class(es) {_examples(absent)} "
                                 f"({len(absent)} of {len(classes)}): the model cannot learn them")


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
    #: what an item is called in messages (images, events, videos)
    items_name: ClassVar[str] = "items"

    def __init__(
        self,
        root: str | None = None,
        synthetic_dir: str = "data/synthetic",
        dev_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 8,
        num_workers: int | str = 0,
        pin_memory: bool | str = False,
        allow_overlap: bool = False,
    ):
        super().__init__()
        self.root = root
        self.synthetic_dir = synthetic_dir
        self.dev_samples = dev_samples
        self.seed = seed
        self.batch_size = batch_size
        # "auto" or a count / true or false; checked now so a bad value fails before any data is read
        loader_options.parse_workers(num_workers)
        loader_options.parse_pin(pin_memory)
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self._loader_choices: set[str] = set()
        self.allow_overlap = allow_overlap
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

    def content_id(self, item: Any) -> str | None:
        """What an item holds (:func:`file_digest` of its file, plus the frames for an event cut from a video):
        two items with one content id are one item. ``None``: not compared (an oversampled copy the task made).
        By default an item that is a file, or a tuple starting with one (an image and its mask), is its bytes."""
        first = item[0] if isinstance(item, tuple) and item else item
        return file_digest(first) if isinstance(first, Path) else None

    def item_labels(self, item: Any) -> Mapping[str, str | None]:
        """The class name of an item per head (``None``: unknown), for the class check of the train split and
        to tell apart duplicates that disagree. Empty when labels are not per item (masks)."""
        return {}

    def train_class_counts(self, items: Sequence[Any]) -> Mapping[str, Mapping[str, int]] | None:
        """Per head, how many training items hold each class (unknown labels left out); ``None``: not checked.
        By default counted from :meth:`item_labels`; a task with pixel labels overrides it."""
        counts: dict[str, Counter[str]] = {}
        for item in items:
            for head, label in self.item_labels(item).items():
                counter = counts.setdefault(head, Counter())
                if label is not None:
                    counter[label] += 1
        return counts or None

    def groups_shared_by_design(self) -> Collection[tuple[str, str]]:
        """Pairs of splits that may share groups on purpose (seed 003's intra-video split: train and val)."""
        return ()

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
        for name in SPLITS:
            if name in splits and not splits[name]:
                raise DataError(f"the {name} split of {root} is empty: add items or change the split fractions")
        splits = self.drop_duplicates(splits)
        self.check_overlap(splits)
        if self.dev_samples:
            full = {name: len(items) for name, items in splits.items()}
            splits = dev_subset({name: self.classes_first(items) for name, items in splits.items()},
                                self.dev_samples)
            kept = ", ".join(f"{name} {len(items)}/{full[name]}" for name, items in splits.items())
            self.sources.append((f"data.dev_samples={self.dev_samples}: {kept}", sum(map(len, splits.values()))))
        if "train" in splits:
            counts = self.train_class_counts(splits["train"])
            if counts is not None:
                check_class_counts(counts, self.heads(), f"the train split of {root}", self.items_name)
        self.splits = splits

    def classes_first(self, items: list[Any]) -> list[Any]:
        """``items`` with the first item of each label (per :meth:`item_labels`) moved to the front, the rest
        in their order: a ``data.dev_samples`` subset, the first items, then holds every class it can."""
        firsts: dict[tuple, int] = {}
        for i, item in enumerate(items):
            firsts.setdefault(tuple(sorted(self.item_labels(item).items(), key=str)), i)
        front = sorted(firsts.values())
        chosen = set(front)
        return [items[i] for i in front] + [it for i, it in enumerate(items) if i not in chosen]

    # -- the split checks every task gets ------------------------------------------------------
    def drop_duplicates(self, splits: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Each split without its repeated items (same id, or same content): the first is kept, the drop
        reported; copies whose labels disagree are a DataError naming both."""
        out: dict[str, list[Any]] = {}
        dropped: dict[str, list[str]] = {}
        for name, items in splits.items():
            seen: dict[str, Any] = {}
            kept = []
            for item in items:
                keys = [f"id:{self.item_id(item)}"]
                content = self.content_id(item)
                if content is not None:
                    keys.append(f"content:{content}")
                first = next((seen[k] for k in keys if k in seen), None)
                if first is not None and content is not None and self.content_id(first) != content:
                    raise DataError(f"the {name} split has two different {self.items_name} with the id "
                                    f"{self.item_id(item)}: give each row its own id")
                if first is None:
                    seen.update(dict.fromkeys(keys, item))
                    kept.append(item)
                    continue
                if self.item_labels(first) != self.item_labels(item):
                    raise DataError(
                        f"the {name} split lists one {self.items_name[:-1]} twice with different labels: "
                        f"{self.item_id(first)} {dict(self.item_labels(first))} and {self.item_id(item)} "
                        f"{dict(self.item_labels(item))} (same file or same content); keep one row with its "
                        "right label")
                same = self.item_id(first) == self.item_id(item)
                dropped.setdefault(name, []).append(
                    self.item_id(item) if same else f"{self.item_id(item)} = {self.item_id(first)}")
            out[name] = kept
        if dropped:
            total = sum(map(len, dropped.values()))
            per_split = ", ".join(f"{name} {len(ids)}" for name, ids in dropped.items())
            examples = "; ".join(f"{name}: {_examples(ids)}" for name, ids in dropped.items())
            warn_on_console(log, f"dropped {total} duplicate {self.items_name} (same file or same content, kept "
                                 f"once): {per_split}; e.g. {examples}")
            self.sources.append((f"duplicates dropped (same file or content, kept once): {per_split}", total))
        return out

    def check_overlap(self, splits: Mapping[str, Sequence[Any]]) -> None:
        """Train, val and test must not share an item (by id or content) nor a group: an error naming the
        splits, the counts and examples, unless ``data.allow_overlap=true`` (then a warning, recorded in
        ``manifests_used.txt``). Groups shared by design (:meth:`groups_shared_by_design`) are allowed."""
        ids = {name: [self.item_id(it) for it in items] for name, items in splits.items()}
        contents: dict[str, dict[str, str]] = {}
        for name, items in splits.items():
            contents[name] = {}
            for it in items:
                if (content := self.content_id(it)) is not None:
                    contents[name].setdefault(content, self.item_id(it))
        groups = {name: [g for it in items if (g := self.group_id(it)) is not None] for name, items in splits.items()}
        problems = split_overlaps(ids, "item id(s)")
        problems += split_overlaps(contents, f"{self.items_name} of the same content under other names",
                                   renamed_only=True)
        problems += split_overlaps(groups, "group(s)", skip={frozenset(p) for p in self.groups_shared_by_design()})
        if not problems:
            return
        listing = "; ".join(problems)
        if self.allow_overlap:
            warn_on_console(log, f"splits overlap (data.allow_overlap=true): {listing}")
            self.sources.append((f"splits overlap, allowed by data.allow_overlap=true: {listing}", 0))
            return
        raise DataError(f"the splits overlap: {listing}. Evaluation on items seen in training is optimistic: fix "
                        "the split files or manifests (or give the rows a group column), or set "
                        "data.allow_overlap=true to accept it")

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
    def _trainer_facts(self, training: bool) -> tuple[bool, int, int | None]:
        """(steps on CUDA, trainer processes on this machine, batch limit per epoch) of the attached trainer;
        (False, 1, None) when the DataModule is used on its own."""
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            return False, 1, None
        from lightning.pytorch.accelerators import CUDAAccelerator

        on_cuda = isinstance(trainer.accelerator, CUDAAccelerator)
        processes = int(getattr(trainer, "num_devices", 1) or 1)
        names = ("limit_train_batches",) if training else ("limit_val_batches", "limit_test_batches")
        limits = [getattr(trainer, name, None) for name in names]
        counts = [v for v in limits if isinstance(v, int) and not isinstance(v, bool)]
        limit = max(counts) if len(counts) == len(limits) else None
        if getattr(trainer, "fast_dev_run", False):
            limit = int(trainer.fast_dev_run)
        return on_cuda, processes, limit

    def loader_options(self, dataset: Dataset, batch_size: int, training: bool) -> LoaderOptions:
        """Workers, prefetch, pinning and decode threads for a loader of ``dataset`` (datamodules/loader_options.py)."""
        on_cuda, processes, limit = self._trainer_facts(training)
        try:
            batches: int | None = math.ceil(len(dataset) / batch_size)  # type: ignore[arg-type]
        except TypeError:  # an iterable dataset without a length
            batches = None
        if batches is not None and limit is not None:
            batches = min(batches, limit)
        return loader_options.resolve(self.num_workers, self.pin_memory, batches=batches, on_cuda=on_cuda,
                                      share=loader_options.core_share(processes=processes),
                                      dev_mode=bool(self.dev_samples))

    def make_loader(
        self, dataset: Dataset, shuffle: bool = False, sampler: Sampler | None = None, drop_last: bool = False,
        batch_size: int | None = None, collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> DataLoader:
        batch_size = batch_size or self.batch_size
        opts = self.loader_options(dataset, batch_size, training=shuffle or sampler is not None)
        if opts.torch_threads is not None:
            import torch

            torch.set_num_threads(opts.torch_threads)  # the step keeps to the cores the workers leave it
        kwargs: dict[str, Any] = {}
        if opts.num_workers > 0:
            loader_options.prepare_fork()
            # "fork" keeps loaders working inside joblib's (loky) sweep workers, whose default start method
            # cannot re-import the task, and starts a worker in milliseconds where "spawn" re-imports torch;
            # worker_init gives each worker one thread per library (and Lightning's worker seeding).
            kwargs = {"multiprocessing_context": multiprocessing.get_context("fork"),
                      "persistent_workers": opts.persistent_workers, "prefetch_factor": opts.prefetch_factor,
                      "worker_init_fn": loader_options.worker_init}
        else:
            set_decode_threads(opts.decode_threads)
        described = opts.describe()
        if described not in self._loader_choices:  # said once per choice, not per epoch and loader
            self._loader_choices.add(described)
            log.info("%s loader: %s", self.task or type(self).__name__, described)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            num_workers=opts.num_workers,
            pin_memory=opts.pin_memory,
            drop_last=drop_last,
            collate_fn=collate_fn,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        train = self.dataset("train")
        return self.make_loader(train, shuffle=True, drop_last=len(train) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.make_loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self.make_loader(self.dataset("test"))

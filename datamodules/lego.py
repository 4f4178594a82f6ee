"""LEGO part + colour data from a manifest CSV of several sources (seed 004).

The manifest has one row per image: path, part id, colour id, source and (optionally) a group
column. Column names are configurable (``columns``) and raw source values are mapped onto the
seed's three sources ``legacy``/``b200c``/``real`` (``source_map``), so a labels file such as the
shared real data's ``labels.csv`` (``part_num``, ``color_id_rebrickable``, ``subset``, ``group_id``)
is read without conversion. Either label may be unknown (empty, or one of ``unknown_values`` such as
9999): it is then stored as -1 and masked from its loss and metric.

Split (seed 1.5): rows of the ``eval_sources`` (real captures) are split about 70/15/15 by
:func:`datamodules.grouped_split.grouped_split`: groups are the manifest's group column,
stratified by part (by colour where the part is unknown), seeded. Every other source goes 100 % to
training. Validation and test therefore hold real captures only, and near-duplicates (one
``group_id``) never straddle a split. Training draws from a :class:`SourceMixSampler`: per-source
weights (real 3.0) or the seed's curriculum of source proportions per epoch.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import Dataset, Sampler

from datamodules.augment import seeded_call
from datamodules.base import SuiteDataModule, file_digest
from datamodules.grouped_split import grouped_split
from datamodules.images import read_image
from datamodules.manifests import integer_id, normalize_id, read_id_list, read_table
from datamodules.synthetic.common import SyntheticDataset
from datamodules.synthetic.lego import GENERATOR
from suite.contracts import Head, InputSpec
from suite.errors import ConfigError, DataError
from suite.paths import confined_path
from suite.printing import warn_on_console

SOURCES = ("legacy", "b200c", "real")
DEFAULT_COLUMNS = {"path": "path", "part": "part_id", "color": "color_id", "source": "source", "group": "group_id"}
AUGMENT_PRESETS = ("strong", "light", "none")
# The network normalises (ImageNet mean/std of suite.backbones) inside forward, so the exported
# graph takes plain 0-255 RGB and cannot disagree with training about normalisation.
SEED_INPUT_SIZE = 224
UNKNOWN_INDEX = -1

log = logging.getLogger(__name__)


# -- transforms ----------------------------------------------------------------------------
def build_transform(image_size: int, augment: str = "none", grayscale_p: float = 0.0) -> A.Compose:
    """Resize to a square, the seed's augmentation (albumentations 2.x names), then a float tensor 0-255.

    ``strong`` is the seed's pipeline 1.4 with its 1.x arguments translated: ShiftScaleRotate ->
    Affine, GaussNoise var_limit (10, 50) on 0-255 -> std_range of the std as a fraction of 255,
    CoarseDropout 8 holes of 20 px at 224 -> fractions of the image side. ``light`` keeps only flips
    and 90-degree turns; ``none`` is the evaluation transform.
    """
    if augment not in AUGMENT_PRESETS:
        raise ConfigError(f"data.augment must be one of {AUGMENT_PRESETS}, got '{augment}'")
    ops: list[Any] = [A.Resize(height=image_size, width=image_size, interpolation=cv2.INTER_LINEAR)]
    if augment in ("strong", "light"):
        ops += [A.RandomRotate90(p=0.5), A.HorizontalFlip(p=0.5)]
    if augment == "strong":
        hole = 20 / SEED_INPUT_SIZE
        ops += [
            A.Affine(translate_percent=(-0.1, 0.1), scale=(0.8, 1.2), rotate=(-15, 15),
                     border_mode=cv2.BORDER_REFLECT_101, p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=20, p=0.3),
            A.GaussNoise(std_range=(float(np.sqrt(10) / 255), float(np.sqrt(50) / 255)), p=0.3),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
            A.CoarseDropout(num_holes_range=(8, 8), hole_height_range=(hole, hole), hole_width_range=(hole, hole),
                            fill=0, p=0.3),
        ]
    if grayscale_p > 0 and augment != "none":
        ops.append(A.ToGray(num_output_channels=3, p=grayscale_p))
    ops.append(ToTensorV2())
    return A.Compose(ops)


# -- sampling ------------------------------------------------------------------------------
class SourceMixSampler(Sampler[int]):
    """Draw ``num_samples`` indices per epoch (with replacement) so that sources come in set proportions.

    Without a curriculum a source's share is proportional to ``weight * count`` (the seed's sample
    weights: real 3.0). With a curriculum (a list of ``{"until_epoch": int | None, "mix": {source:
    fraction}}`` stages) the stage of the current epoch sets the shares directly; sources absent from
    the data are dropped and the rest renormalised. :meth:`set_epoch` picks the stage; the draw is
    seeded by ``(seed, epoch)``, so a resumed run draws what the uninterrupted run would have.
    """

    def __init__(
        self, sources: Sequence[str], num_samples: int | None = None, source_weights: Mapping[str, float] | None = None,
        curriculum: Sequence[Mapping[str, Any]] | None = None, seed: int = 0,
    ):
        self.sources = list(sources)
        if not self.sources:
            raise DataError("the training split is empty")
        self.num_samples = num_samples or len(self.sources)
        self.counts = Counter(self.sources)
        self.source_weights = {s: float(w) for s, w in (source_weights or {}).items()}
        self.curriculum = [dict(stage) for stage in curriculum] if curriculum else []
        self.seed = seed
        self.epoch = 0
        for i, stage in enumerate(self.curriculum):
            mix = stage.get("mix")
            if not isinstance(mix, Mapping) or not mix:
                raise ConfigError(f"data.curriculum[{i}].mix must map sources to fractions, got {mix!r}")
            bad = [s for s in mix if s not in SOURCES]
            if bad or any(float(v) < 0 for v in mix.values()):
                raise ConfigError(f"data.curriculum[{i}].mix: sources must be {SOURCES} with fractions >= 0, got {mix}")
        for key, value in self.source_weights.items():
            if key not in SOURCES or value < 0:
                raise ConfigError(f"data.source_weights: '{key}: {value}' (sources {SOURCES}, weights >= 0)")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def stage(self, epoch: int) -> Mapping[str, Any] | None:
        for stage in self.curriculum:
            until = stage.get("until_epoch")
            if until is None or epoch < int(until):
                return stage
        return self.curriculum[-1] if self.curriculum else None

    def mix(self, epoch: int | None = None) -> dict[str, float]:
        """Expected fraction of the epoch's draws from each source present in the data."""
        epoch = self.epoch if epoch is None else epoch
        stage = self.stage(epoch)
        if stage is not None:
            raw = {s: float(stage["mix"].get(s, 0.0)) for s in self.counts}
        else:
            raw = {s: self.source_weights.get(s, 1.0) * n for s, n in self.counts.items()}
        total = sum(raw.values())
        if total <= 0:
            raise ConfigError(f"data sampling gives zero weight to every source present ({sorted(self.counts)})")
        return {s: v / total for s, v in raw.items()}

    def weights(self, epoch: int | None = None) -> torch.Tensor:
        mix = self.mix(epoch)
        return torch.tensor([mix[s] / self.counts[s] for s in self.sources], dtype=torch.double)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.multinomial(self.weights(), self.num_samples, replacement=True, generator=generator).tolist()

    def __len__(self) -> int:
        return self.num_samples


# -- manifest --------------------------------------------------------------------------------
def read_manifest(
    path: Path, columns: Mapping[str, str | None], source_map: Mapping[str, str], unknown_values: Sequence[str],
    allow_outside_root: bool = False,
) -> list[dict[str, Any]]:
    """Rows as dicts with ``path`` (absolute), ``part``/``color`` (str or None), ``source``, ``subset``, ``group``.

    Read by :func:`datamodules.manifests.read_table` (UTF-8 checked, every row as wide as the header). Ids
    are normalised (``3001.0`` is part ``3001``: pandas writes float ids when a column has empty cells);
    colour ids must be integers (Rebrickable ids), a bad one is an error naming its line.
    """
    table = read_table(path, "manifest")
    required = {columns[k]: f"data.columns.{k}" for k in ("path", "part", "color", "source") if columns.get(k)}
    table.require(required)
    group_col = columns.get("group")
    if group_col and group_col not in table.header:
        raise DataError(f"{path}: missing group column '{group_col}' (data.columns.group; null = none)")
    unknown = {normalize_id(u) for u in unknown_values}
    rows = []
    for i, raw in enumerate(table.rows):
        where, line = table.where(i), table.lines[i]
        rel = raw[columns["path"]]
        if not rel:
            raise DataError(f"{where}: empty '{columns['path']}'")
        subset = raw[columns["source"]]
        source = source_map.get(subset, subset)
        if source not in SOURCES:
            raise DataError(
                f"{where}: source '{subset}' is not one of {SOURCES}; map it with "
                f"data.source_map (e.g. data.source_map.{subset or '<value>'}=real)"
            )
        part = normalize_id(raw[columns["part"]])
        color = normalize_id(raw[columns["color"]])
        image = confined_path(path.parent, os.path.expanduser(rel), allow_outside_root, where)
        rows.append({
            "path": image,
            "name": rel,
            "part": None if part in unknown or not part else part,
            "color": None if color in unknown or not color else integer_id(color, where, columns["color"]),
            "source": source,
            "subset": subset,
            "group": normalize_id(raw[group_col]) if group_col else "",
            "line": line,
        })
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    return rows


def read_target_parts(path: Path) -> list[str]:
    """The part ids of ``target_parts.txt``: one per line, normalised like the manifest's (``3001.0`` = ``3001``)."""
    return read_id_list(path, "target parts list (data.target_parts)")


def split_label(row: Mapping[str, Any]) -> str:
    """The stratum of a row for the split: its part, or its colour when the part is unknown (colour-only
    captures then still reach validation and test)."""
    return f"part:{row['part']}" if row["part"] is not None else f"color:{row['color']}"


def split_rows(
    rows: list[dict[str, Any]], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Rows into train/val/test by group (the manifest's group column; a row without one is its own
    group), stratified by :func:`split_label`, with :func:`~datamodules.grouped_split.grouped_split`."""
    groups = [row["group"] or f"row:{row['name']}" for row in rows]
    parts = grouped_split(len(rows), {"val": val_fraction, "test": test_fraction}, seed,
                          labels=[split_label(r) for r in rows], groups=groups, what="rows")
    return {name: [rows[i] for i in indices] for name, indices in parts.items()}


# -- dataset -------------------------------------------------------------------------------
class LegoDataset(Dataset):
    def __init__(self, items: list[dict[str, Any]], transform: A.Compose):
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        image = seeded_call(self.transform, image=read_image(item["path"]))["image"].float()
        return {
            "image": image,
            "part": torch.tensor(item["part_idx"], dtype=torch.long),
            "color": torch.tensor(item["color_idx"], dtype=torch.long),
            "source": item["source"],
            "subset": item["subset"],
            "group": item["group"],
            "name": item["name"],
        }


class LegoDataModule(SuiteDataModule):
    task = "lego"
    items_name = "images"

    def __init__(
        self,
        root: str | None = None,
        manifest: str = "manifest.csv",
        target_parts: str | None = "target_parts.txt",
        target_parts_required: bool = False,
        columns: dict[str, str | None] | None = None,
        source_map: dict[str, str] | None = None,
        unknown_values: list[str] | None = None,
        allow_outside_root: bool = False,
        tasks: list[str] | None = None,
        split_fractions: list[float] | None = None,
        eval_sources: list[str] | None = None,
        image_size: int | None = None,
        augment: str = "strong",
        grayscale_p: float = 0.0,
        sampling: str = "weighted",
        source_weights: dict[str, float] | None = None,
        curriculum: list[dict[str, Any]] | None = None,
        synthetic_dir: str = "data/synthetic",
        synthetic_size: int = 64,
        synthetic_real_captures: int = 40,
        dev_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int | str = 0,
        pin_memory: bool | str = False,
        allow_overlap: bool = False,
    ):
        super().__init__(root=root, synthetic_dir=synthetic_dir, dev_samples=dev_samples, seed=seed,
                         batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         allow_overlap=allow_overlap)
        self.manifest = manifest
        self.target_parts = target_parts
        self.target_parts_required = target_parts_required
        self.columns = {**DEFAULT_COLUMNS, **(dict(columns) if columns else {})}
        self.source_map = dict(source_map or {})
        self.unknown_values = [str(v) for v in (unknown_values if unknown_values is not None else ["9999"])]
        self.allow_outside_root = allow_outside_root
        self.tasks = list(tasks or ["part", "color"])
        if not self.tasks or any(t not in ("part", "color") for t in self.tasks):
            raise ConfigError(f"data.tasks must be a non-empty subset of [part, color], got {self.tasks}")
        self.split_fractions = list(split_fractions or [0.7, 0.15, 0.15])
        if len(self.split_fractions) != 3 or any(f <= 0 for f in self.split_fractions) or \
                abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ConfigError(f"data.split_fractions must be 3 fractions > 0 summing to 1 (train, val, test), "
                              f"got {self.split_fractions}")
        self.eval_sources = list(eval_sources or ["real"])
        if sampling not in ("weighted", "curriculum", "uniform"):
            raise ConfigError(f"data.sampling must be weighted, curriculum or uniform, got '{sampling}'")
        if sampling == "curriculum" and not curriculum:
            raise ConfigError("data.sampling=curriculum needs data.curriculum (a list of stages)")
        if augment not in AUGMENT_PRESETS:
            raise ConfigError(f"data.augment must be one of {AUGMENT_PRESETS}, got '{augment}'")
        self.image_size_cfg = image_size
        self.augment, self.grayscale_p = augment, grayscale_p
        self.sampling = sampling
        self.source_weights = dict(source_weights or {})
        self.curriculum = [dict(s) for s in curriculum] if curriculum else None
        self.synthetic_size, self.synthetic_real_captures = synthetic_size, synthetic_real_captures
        self.eval_batch_size = eval_batch_size
        self.part_names: list[str] = []
        self.color_names: list[str] = []
        self.subsets: list[str] = []
        self.train_sampler: SourceMixSampler | None = None
        self.targets_missing: list[str] = []

    @property
    def image_size(self) -> int:
        """The configured size; unset: the synthetic images' size, or the seed's 224 for user data."""
        if self.image_size_cfg:
            return int(self.image_size_cfg)
        return self.synthetic_size if not self.root else SEED_INPUT_SIZE

    def manifest_path(self) -> Path:
        path = Path(os.path.expanduser(self.manifest))
        return path if path.is_absolute() else self.data_root() / path

    # -- reading -----------------------------------------------------------------------------
    def _target_list(self) -> list[str] | None:
        """``data.target_parts``: the part ids to learn, or None (no list). A folder given there is an error;
        a missing file is one only with ``data.target_parts_required=true``."""
        if not self.target_parts:
            return None
        path = Path(os.path.expanduser(self.target_parts))
        path = path if path.is_absolute() else self.data_root() / path
        if path.is_dir():
            raise DataError(f"data.target_parts: {path} is a folder; give the file listing the part ids "
                            "(one per line), or data.target_parts=null to keep every part")
        if not path.is_file():
            if self.target_parts_required:
                raise DataError(f"data.target_parts: file not found: {path}")
            return None
        targets = read_target_parts(path)
        self.sources.append((str(path), len(targets)))
        return targets

    def _filter_targets(self, rows: list[dict[str, Any]], targets: list[str]) -> list[dict[str, Any]]:
        """Rows of the target parts (and rows of unknown part: they still teach the colour head). The rows
        dropped are reported with counts; target parts without a row warn (they are recorded in
        ``manifests_used.txt`` and ``label_map.json``): the list is often a catalogue wider than the data at
        hand, and refusing would mean editing it for every subset. No row of any target part is an error."""
        manifest = self.manifest_path()
        wanted = set(targets)
        kept = [r for r in rows if r["part"] is None or r["part"] in wanted]
        dropped = Counter(r["part"] for r in rows if r["part"] is not None and r["part"] not in wanted)
        present = {r["part"] for r in rows if r["part"] is not None}
        if "part" in self.tasks and present and not present & wanted:
            raise DataError(
                f"{manifest}: no row has a part of the target list {self.target_parts} (its ids: "
                f"{', '.join(targets[:5])}{' ...' if len(targets) > 5 else ''}; the manifest's: "
                f"{', '.join(sorted(present)[:5])}{' ...' if len(present) > 5 else ''}); fix the list, or "
                "data.target_parts=null to keep every part")
        if dropped:
            listed = ", ".join(f"{p} ({n})" for p, n in dropped.most_common(5))
            message = (f"{sum(dropped.values())} row(s) of {len(dropped)} part(s) not in {self.target_parts} "
                       f"dropped, e.g. {listed}")
            warn_on_console(log, f"{manifest}: {message}")
            self.sources.append((f"{message} (data.target_parts)", sum(dropped.values())))
        self.targets_missing = [p for p in targets if p not in present]
        if self.targets_missing and "part" in self.tasks:
            message = (f"{len(self.targets_missing)} target part(s) of {self.target_parts} have no row in {manifest} "
                       f"and cannot be learned: {', '.join(self.targets_missing[:10])}"
                       f"{' ...' if len(self.targets_missing) > 10 else ''}")
            warn_on_console(log, message)
            self.sources.append((message, 0))
        return kept

    def _read(self) -> list[dict[str, Any]]:
        manifest = self.manifest_path()
        rows = read_manifest(manifest, self.columns, self.source_map, self.unknown_values, self.allow_outside_root)
        self.sources = [(str(manifest), len(rows))]
        targets = self._target_list()
        if targets is not None:
            rows = self._filter_targets(rows, targets)
        missing = [r for r in rows if not r["path"].is_file()]
        if missing:
            listed = ", ".join(f"{r['path']} (line {r['line']})" for r in missing[:3])
            raise DataError(f"{manifest}: {len(missing)} image(s) not found, e.g. {listed}")
        if "part" not in self.tasks:
            for r in rows:
                r["part"] = None
        if "color" not in self.tasks:
            for r in rows:
                r["color"] = None
        labelled = [r for r in rows if r["part"] is not None or r["color"] is not None]
        if not labelled:
            raise DataError(f"{manifest}: no row has a known label for data.tasks={self.tasks}")
        if len(labelled) < len(rows):
            unlabelled = [r for r in rows if r["part"] is None and r["color"] is None]
            message = (f"{len(unlabelled)} row(s) without a known label for data.tasks={self.tasks} left out, e.g. "
                       + ", ".join(f"line {r['line']}" for r in unlabelled[:3]))
            log.info("%s: %s", manifest, message)
            self.sources.append((message, len(unlabelled)))
        rows = labelled
        # the same image twice (one path, or a copy under another name) is one row: dropped before the
        # split, so that copies can never land on two sides of it
        rows = self.drop_duplicates({str(manifest): rows})[str(manifest)]
        known_parts = {r["part"] for r in rows if r["part"] is not None}
        self.part_names = [p for p in targets if p in known_parts] if targets else sorted(known_parts)
        self.color_names = sorted({r["color"] for r in rows if r["color"] is not None}, key=int)
        part_idx = {p: i for i, p in enumerate(self.part_names)}
        color_idx = {c: i for i, c in enumerate(self.color_names)}
        for r in rows:
            r["part_idx"] = part_idx[r["part"]] if r["part"] is not None else UNKNOWN_INDEX
            r["color_idx"] = color_idx[r["color"]] if r["color"] is not None else UNKNOWN_INDEX
        return rows

    # -- contract hooks ------------------------------------------------------------------------
    def synthetic(self) -> tuple[SyntheticDataset, dict[str, Any]]:
        return GENERATOR, {"size": self.synthetic_size, "real_captures": self.synthetic_real_captures}

    def build_splits(self, root: Path) -> dict[str, list[dict[str, Any]]]:
        rows = self._read()
        evaluated = [r for r in rows if r["source"] in self.eval_sources]
        if not evaluated:
            raise DataError(
                f"{self.manifest_path()}: no rows of the evaluation sources {self.eval_sources} "
                "(validation and test use real captures only)"
            )
        _, val_fraction, test_fraction = self.split_fractions
        splits = split_rows(evaluated, val_fraction, test_fraction, self.seed)
        splits["train"] += [r for r in rows if r["source"] not in self.eval_sources]
        # Shuffled once, seeded: the sampler draws by source anyway, and data.dev_samples keeps the
        # first items of each split, which must then be a mix of parts, colours and sources.
        rng = np.random.default_rng(self.seed)
        splits = {name: [items[i] for i in rng.permutation(len(items))] for name, items in splits.items()}
        self.subsets = sorted({r["subset"] for r in rows})
        return splits

    def item_id(self, item: dict[str, Any]) -> str:
        return str(item["name"])

    def group_id(self, item: dict[str, Any]) -> str | None:
        return item["group"] or None

    def content_id(self, item: dict[str, Any]) -> str | None:
        return file_digest(item["path"])

    def item_labels(self, item: dict[str, Any]) -> dict[str, str | None]:
        # unknown labels (None) are left out of the class counts; only the heads this run learns count
        return {task: item[task] for task in ("part", "color") if task in self.tasks}

    def heads(self) -> tuple[Head, ...]:
        names = {"part": self.part_names, "color": self.color_names}
        # a head without a known label in the data cannot be trained: it is left out of the spec
        return tuple(Head(task, tuple(names[task])) for task in ("part", "color")
                     if task in self.tasks and names[task])

    def input_spec(self) -> InputSpec:
        # RGB 0-255: the network normalises inside (see SEED_INPUT_SIZE's comment), nothing before it
        return InputSpec("image", (3, self.image_size, self.image_size))

    def spec_extras(self) -> dict[str, Any]:
        return {"unknown_label_index": UNKNOWN_INDEX, "sources": list(SOURCES),
                "target_parts_without_rows": list(self.targets_missing), "subsets": list(self.subsets),
                "image_size": self.image_size, "value_range": [0, 255],
                "normalization": "inside the network (ImageNet mean/std)"}

    def split_counts(self) -> dict[str, dict[str, int]]:
        self.setup()
        assert self.splits is not None
        return {name: dict(Counter(r["subset"] for r in items)) for name, items in self.splits.items()}

    # -- loaders -----------------------------------------------------------------------------
    def dataset(self, split: str, augment: bool | None = None) -> LegoDataset:
        """The split's images; training augments unless ``augment`` says otherwise (export calibrates on
        un-augmented training images)."""
        train = split == "train" if augment is None else augment
        transform = build_transform(self.image_size, self.augment if train else "none", self.grayscale_p)
        return LegoDataset(self.split(split), transform)

    def train_dataloader(self):
        train = self.dataset("train")
        if self.sampling == "uniform":
            self.train_sampler = None
            return self.make_loader(train, shuffle=True, drop_last=len(train) > self.batch_size)
        self.train_sampler = SourceMixSampler(
            [r["source"] for r in train.items], len(train),
            source_weights=self.source_weights, curriculum=self.curriculum if self.sampling == "curriculum" else None,
            seed=self.seed,
        )
        return self.make_loader(train, sampler=self.train_sampler, drop_last=len(train) > self.batch_size)

    def val_dataloader(self):
        return self.make_loader(self.dataset("val"), batch_size=self.eval_batch_size)

    def test_dataloader(self):
        return self.make_loader(self.dataset("test"), batch_size=self.eval_batch_size)

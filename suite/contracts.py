"""The task contract: what a task's DataModule and LightningModule hand the suite and its callbacks.

A task plugs in through three types and nothing else (``docs/adding_a_task.md``):

- :class:`DataSpec`, returned by ``datamodule.spec()`` after ``setup``: the heads and their class
  names, the network's input, the sources read, and the ids of each split. The suite hands it to
  the module with ``module.configure(spec)`` before fitting, so a module never reads the
  DataModule through the trainer.
- :class:`StepOutput`, returned by every ``*_step``: typed fields that callbacks read. A module
  declares the fields it fills per stage (``SuiteModule.step_outputs``) and a callback the fields it
  needs (``needs``); :func:`check_callback_needs` compares the two before any data is read, and
  :meth:`StepOutput.require` fails loudly when a declared field is missing at run time.
- :class:`PredictionRow`, one per evaluated item in ``StepOutput.rows``: the one schema of
  ``predictions_agg.csv`` (item id, group, label, pred, a score per class, then the task's extras).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from suite.errors import ConfigError, DataError

#: the fixed leading columns of ``predictions_agg.csv``, in order
PREDICTION_COLUMNS = ("item_id", "group", "label", "pred")
SCORE_PREFIX = "score_"


class ContractError(ConfigError):
    """A module, callback or DataModule does not give what the contract (or a callback) needs."""


@dataclass(frozen=True)
class Head:
    """One output of a task: its name (``mask``, ``label``, ``part`` ...) and class names by index.

    ``positive`` is the index of the positive class of binary metrics (the tail class, violent ...).
    """

    name: str
    classes: tuple[str, ...]
    positive: int | None = None

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise ContractError(f"head '{self.name}': class names repeat: {list(self.classes)}")
        if self.positive is not None and not 0 <= self.positive < len(self.classes):
            raise ContractError(f"head '{self.name}': positive index {self.positive} outside {list(self.classes)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}


@dataclass(frozen=True)
class InputSpec:
    """What the network reads: ``kind`` (image, clip, clips, features, frames), its shape without the
    batch dimension (``None`` for a size that varies), and the normalisation applied before it."""

    kind: str
    shape: tuple[int | None, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class DataSpec:
    """What a set-up DataModule tells the suite and the module; JSON-able through :meth:`to_dict`."""

    task: str
    heads: tuple[Head, ...]
    input: InputSpec
    sources: tuple[tuple[str, int], ...] = ()
    split_ids: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)

    def head(self, name: str) -> Head:
        for head in self.heads:
            if head.name == name:
                return head
        raise ContractError(f"the {self.task} data has no head '{name}' (heads: {[h.name for h in self.heads]})")

    @property
    def split_sizes(self) -> dict[str, int]:
        return {split: len(ids) for split, ids in self.split_ids.items()}

    def label_map(self) -> dict[str, Any]:
        """``label_map.json``: class name -> index for every head, plus the task's extras."""
        out: dict[str, Any] = {head.name: head.index() for head in self.heads}
        out.update({k: v for k, v in self.extras.items() if k not in out})
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only: checkpoints load with ``weights_only=True``."""
        return {
            "task": self.task,
            "heads": [{"name": h.name, "classes": list(h.classes), "positive": h.positive} for h in self.heads],
            "input": {"kind": self.input.kind, "shape": list(self.input.shape),
                      "mean": list(self.input.mean) if self.input.mean else None,
                      "std": list(self.input.std) if self.input.std else None},
            "sources": [[path, rows] for path, rows in self.sources],
            "split_sizes": self.split_sizes,
            "extras": dict(self.extras),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSpec:
        """The spec stored in a checkpoint (split ids are not stored there: only their sizes)."""
        inp = data["input"]
        return cls(
            task=str(data["task"]),
            heads=tuple(Head(h["name"], tuple(h["classes"]), h.get("positive")) for h in data["heads"]),
            input=InputSpec(inp["kind"], tuple(inp["shape"]),
                            tuple(inp["mean"]) if inp.get("mean") else None,
                            tuple(inp["std"]) if inp.get("std") else None),
            sources=tuple((str(p), int(n)) for p, n in data.get("sources", [])),
            extras=dict(data.get("extras", {})),
        )


@dataclass
class PredictionRow:
    """One evaluated item. ``scores`` maps class name -> probability; ``extras`` holds task columns."""

    item_id: str
    label: str | None = None
    pred: str | None = None
    group: str | None = None
    scores: Mapping[str, float] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        leading = (self.item_id, self.group, self.label, self.pred)
        record: dict[str, Any] = {c: "" if v is None else v for c, v in zip(PREDICTION_COLUMNS, leading, strict=True)}
        record.update({f"{SCORE_PREFIX}{name}": round(float(p), 6) for name, p in self.scores.items()})
        clashes = set(self.extras) & set(record)
        if clashes:
            raise ContractError(f"prediction row extras reuse schema columns: {sorted(clashes)}")
        record.update(self.extras)
        return record


def score_columns(columns: Iterable[str]) -> dict[str, str]:
    """Class name -> column, for the ``score_<class>`` columns of a predictions file."""
    return {c[len(SCORE_PREFIX):]: c for c in columns if c.startswith(SCORE_PREFIX)}


@dataclass
class StepOutput:
    """What a ``training_step``/``validation_step``/``test_step`` gives the callbacks.

    - ``loss``: the loss of the batch (required from ``training_step``);
    - ``preds``/``target``: class indices ``[N]`` of the headline head (``target`` may be a mask);
    - ``prob``: probabilities, ``[N]`` of the positive class or ``[N, C]``;
    - ``pred_mean``/``target_mean``: mean predicted probability and target of the batch (collapse alarm);
    - ``rows``: one :class:`PredictionRow` per evaluated item (test).
    """

    loss: Any = None
    preds: Any = None
    target: Any = None
    prob: Any = None
    pred_mean: Any = None
    target_mean: Any = None
    # None, not an empty list, when unfilled: a test step that forgot its rows must fail, not write nothing
    rows: list[PredictionRow] | None = None

    FIELDS: ClassVar[tuple[str, ...]] = ("loss", "preds", "target", "prob", "pred_mean", "target_mean", "rows")

    def for_training(self) -> dict[str, Any]:
        """Lightning needs a dict with ``loss`` from ``training_step``; the callbacks find the rest inside."""
        if self.loss is None:
            raise ContractError("training_step's StepOutput has no loss")
        return {"loss": self.loss, "step_output": self}

    def require(self, name: str, reader: str) -> Any:
        """The field ``name``; a ContractError naming ``reader`` when the step left it unfilled."""
        value = getattr(self, name)
        if value is None:
            raise ContractError(f"{reader} needs the step output field '{name}', which this step did not fill")
        return value


def step_output(outputs: Any, reader: str) -> StepOutput:
    """The :class:`StepOutput` inside what Lightning passes to ``on_*_batch_end``; loud when absent."""
    if isinstance(outputs, StepOutput):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("step_output"), StepOutput):
        return outputs["step_output"]
    raise ContractError(
        f"{reader} expected a StepOutput from the module's step, got {type(outputs).__name__}: every task "
        "module returns suite.contracts.StepOutput (see docs/adding_a_task.md)"
    )


def check_callback_needs(
    callbacks: Mapping[str, Any], provides: Mapping[str, Iterable[str]], module_name: str
) -> None:
    """Refuse, before any data is read, a callback that needs a step output the module never fills.

    ``callbacks`` maps the config key (``callbacks.<name>``) to the callback; a callback declares
    ``needs = {"val": ("preds", "target")}``. ``provides`` is the module's ``step_outputs``.
    """
    problems = []
    for key, callback in callbacks.items():
        for stage, fields in dict(getattr(callback, "needs", {}) or {}).items():
            missing = sorted(set(fields) - set(provides.get(stage, ())))
            if missing:
                problems.append(
                    f"callbacks.{key} ({type(callback).__name__}) needs {missing} from the {stage} step, "
                    f"which {module_name} does not give (it gives {sorted(provides.get(stage, ()))})"
                )
    if problems:
        raise ContractError("; ".join(problems) + ". Remove the callback from the config (callbacks=<preset> or "
                                                  "~callbacks.<name>) or use a task that gives those outputs.")


def split_overlaps(
    split_keys: Mapping[str, Mapping[str, str] | Sequence[str]], what: str,
    skip: Collection[frozenset[str]] = (), renamed_only: bool = False,
) -> list[str]:
    """One line per pair of splits sharing a key: ``the train and test splits share 3 <what> (e.g. ...)``.

    ``split_keys`` gives each split's keys (ids, content hashes, groups), as a sequence or as a mapping
    key -> the name shown (an item id for a content hash). ``skip``: pairs of splits allowed to share.
    ``renamed_only``: count only keys shown under different names on the two sides (the same name is
    reported as a shared id already).
    """
    keyed = {name: keys if isinstance(keys, Mapping) else {k: k for k in keys} for name, keys in split_keys.items()}
    names = list(keyed)
    lines = []
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if frozenset((first, second)) in skip:
                continue
            shown = []
            for key in keyed[first].keys() & keyed[second].keys():
                a, b = keyed[first][key], keyed[second][key]
                if a != b:
                    shown.append(f"{a} = {b}")
                elif not renamed_only:
                    shown.append(a)
            if shown:
                examples = ", ".join(sorted(shown)[:5]) + (" ..." if len(shown) > 5 else "")
                lines.append(f"the {first} and {second} splits share {len(shown)} {what} (e.g. {examples})")
    return lines


def check_split_disjoint(split_ids: Mapping[str, Sequence[str]], what: str = "items") -> None:
    """Train, val and test must not share an id: selection and reporting would be optimistic."""
    lines = split_overlaps(split_ids, what)
    if lines:
        raise DataError(f"{'; '.join(lines)}: fix the split files or manifests so that each item is on one side only")

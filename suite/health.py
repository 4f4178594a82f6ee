"""Run-health rules: declared in config (conf/health/<task>.yaml), evaluated on a run's metric history.

The history is a list of per-epoch records like ``training_history.json``
(``{"epoch": 3, "step": 120, "train/loss": 0.41, "val/acc_violent": 0.62, ...}``). A :class:`Rule` names a
condition from :data:`CONDITIONS`, the metric(s) it reads, a window of epochs and the condition's
parameters; :class:`HealthMonitor` evaluates every rule after each epoch and returns the alarms that are
NEW: a rule fires once when its condition starts to hold and again only after it stopped holding (one
alarm per episode, not one per epoch). This module is pure Python (no torch, no Lightning) so that the
rules are tested on recorded histories and a report can re-evaluate a finished run.

Nothing in the field's libraries evaluates declarative rules on an epoch history (Lightning's EarlyStopping
watches one metric against one threshold), hence these few functions.
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Record = Mapping[str, Any]
Values = dict[str, float]
ConditionFn = Callable[[Sequence[Record], "Rule"], Values | None]

SEVERITIES = ("warn", "critical")
ACTIONS = ("warn", "stop")
# keys of a rule's YAML node that are not parameters of its condition
RULE_FIELDS = ("condition", "metric", "other", "window", "severity", "action", "seed", "message", "hint", "enabled")


@dataclass(frozen=True)
class Condition:
    fn: ConditionFn
    params: tuple[str, ...]  # required parameters
    optional: Mapping[str, Any] = field(default_factory=dict)  # optional parameters and their defaults
    needs_other: bool = False
    min_window: int = 1


CONDITIONS: dict[str, Condition] = {}


def condition(name: str, params: tuple[str, ...] = (), optional: Mapping[str, Any] | None = None,
              needs_other: bool = False, min_window: int = 1) -> Callable[[ConditionFn], ConditionFn]:
    """Register ``fn`` as the condition ``name`` a rule's ``condition:`` key picks."""
    def register(fn: ConditionFn) -> ConditionFn:
        CONDITIONS[name] = Condition(fn, params, dict(optional or {}), needs_other, min_window)
        return fn
    return register


@dataclass(frozen=True)
class Rule:
    """One health rule. ``metric`` is a key, a glob pattern (``val/pred_share_*``) or a list of keys;
    ``other`` the second metric of two-metric conditions; ``window`` the epochs the condition looks at
    (in a row for the threshold conditions, the span for trends)."""

    name: str
    condition: str
    metric: str | tuple[str, ...]
    other: str | None = None
    window: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)
    severity: str = "warn"
    action: str = "warn"
    seed: str | None = None
    message: str = ""
    hint: str | None = None
    enabled: bool = True

    def param(self, key: str) -> Any:
        if key in self.params:
            return self.params[key]
        return CONDITIONS[self.condition].optional[key]

    @classmethod
    def from_config(cls, name: str, node: Mapping[str, Any], seed: str | None = None) -> Rule:
        """A rule from its YAML node; every key that is not a rule field is a parameter of the condition.
        Raises ValueError naming the rule and the key for what the condition cannot use."""
        where = f"health rule '{name}'"
        cond = node.get("condition")
        if cond not in CONDITIONS:
            raise ValueError(f"{where}: condition must be one of {sorted(CONDITIONS)}, got {cond!r}")
        spec = CONDITIONS[cond]
        params = {k: v for k, v in node.items() if k not in RULE_FIELDS}
        missing = [p for p in spec.params if p not in params]
        unknown = [p for p in params if p not in spec.params and p not in spec.optional]
        if missing or unknown:
            raise ValueError(f"{where}: condition '{cond}' takes {list(spec.params)} (optional "
                             f"{list(spec.optional)}); missing {missing}, unknown {unknown}")
        metric = node.get("metric")
        if not metric:
            raise ValueError(f"{where}: 'metric' is required (a key, a glob pattern or a list of keys)")
        if spec.needs_other and not node.get("other"):
            raise ValueError(f"{where}: condition '{cond}' compares two metrics: set 'other'")
        window = int(node.get("window", spec.min_window))
        if window < spec.min_window:
            raise ValueError(f"{where}: condition '{cond}' needs window >= {spec.min_window}, got {window}")
        severity, action = node.get("severity", "warn"), node.get("action", "warn")
        if severity not in SEVERITIES or action not in ACTIONS:
            raise ValueError(f"{where}: severity must be one of {SEVERITIES} and action one of {ACTIONS}, "
                             f"got severity={severity!r}, action={action!r}")
        seed_value = node.get("seed", seed)
        return cls(name=name, condition=cond, metric=metric if isinstance(metric, str) else tuple(metric),
                   other=node.get("other"), window=window, params=params, severity=severity, action=action,
                   seed=None if seed_value is None else str(seed_value), message=str(node.get("message") or ""),
                   hint=node.get("hint"), enabled=bool(node.get("enabled", True)))


def rules_from_config(rules: Mapping[str, Mapping[str, Any]] | None, seed: str | None = None) -> list[Rule]:
    """The enabled rules of a ``health.rules`` mapping (name -> node); a null node switches a rule off."""
    out = [Rule.from_config(str(name), node, seed) for name, node in (rules or {}).items() if node is not None]
    return [r for r in out if r.enabled]


# -- reading the history ----------------------------------------------------------------------------------
def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def last_values(history: Sequence[Record], key: str, n: int) -> list[float] | None:
    """The last ``n`` values of ``key``, oldest first; None unless the latest epoch logged it and
    ``n`` epochs did (a metric of an earlier phase must not keep a rule firing)."""
    if not history or _finite(history[-1].get(key)) is None:
        return None
    values = [v for v in (_finite(r.get(key)) for r in history) if v is not None]
    return values[-n:] if len(values) >= n else None


def matching_keys(history: Sequence[Record], metric: str | Sequence[str]) -> list[str]:
    """The keys of the latest epoch that ``metric`` names: itself, its glob matches, or the listed keys."""
    if not history:
        return []
    latest = sorted(k for k in history[-1] if k not in ("epoch", "step"))
    patterns = [metric] if isinstance(metric, str) else list(metric)
    return [k for k in latest if any(fnmatch.fnmatchcase(k, p) for p in patterns)]


def _each(history: Sequence[Record], rule: Rule) -> Iterable[tuple[str, list[float]]]:
    for key in matching_keys(history, rule.metric):
        values = last_values(history, key, rule.window)
        if values is not None:
            yield key, values


def _pair(history: Sequence[Record], rule: Rule) -> tuple[list[float], list[float]] | None:
    assert rule.other is not None and isinstance(rule.metric, str)
    a, b = last_values(history, rule.metric, rule.window), last_values(history, rule.other, rule.window)
    return (a, b) if a is not None and b is not None else None


# -- conditions: each returns the values it fired on, or None -----------------------------------------------
@condition("above", params=("threshold",))
def above(history: Sequence[Record], rule: Rule) -> Values | None:
    """A metric (any key matching it) above ``threshold`` for ``window`` epochs in a row ("consistently")."""
    for key, values in _each(history, rule):
        if all(v > rule.param("threshold") for v in values):
            return {key: values[-1]}
    return None


@condition("below", params=("threshold",))
def below(history: Sequence[Record], rule: Rule) -> Values | None:
    """A metric (any key matching it) below ``threshold`` for ``window`` epochs in a row."""
    for key, values in _each(history, rule):
        if all(v < rule.param("threshold") for v in values):
            return {key: values[-1]}
    return None


@condition("plateau_below", params=("threshold",), optional={"eps": 0.01}, min_window=2)
def plateau_below(history: Sequence[Record], rule: Rule) -> Values | None:
    """No gain larger than ``eps`` over the first epoch of the window while every value stays below
    ``threshold`` (a higher-is-better metric that stopped climbing short of its target)."""
    for key, values in _each(history, rule):
        if max(values) < rule.param("threshold") and max(values[1:]) - values[0] <= rule.param("eps"):
            return {key: values[-1]}
    return None


@condition("dropping", params=("delta",), min_window=2)
def dropping(history: Sequence[Record], rule: Rule) -> Values | None:
    """The latest value is more than ``delta`` below the window's best (a higher-is-better metric falling)."""
    for key, values in _each(history, rule):
        if max(values) - values[-1] > rule.param("delta"):
            return {key: values[-1], f"{key} (window best)": max(values)}
    return None


@condition("oscillating", params=("threshold",), min_window=3)
def oscillating(history: Sequence[Record], rule: Rule) -> Values | None:
    """The mean absolute change from one epoch to the next over the window is above ``threshold``."""
    for key, values in _each(history, rule):
        swing = statistics.fmean(abs(b - a) for a, b in zip(values, values[1:], strict=False))
        if swing > rule.param("threshold"):
            return {key: values[-1], "mean_abs_change": swing}
    return None


@condition("stuck_while_other_improves", optional={"eps": 0.01, "delta": 0.05}, min_window=2)
def stuck_while_other_improves(history: Sequence[Record], rule: Rule) -> Values | None:
    """Among the metrics named (two or more, e.g. the per-class accuracies), one gains no more than
    ``eps`` over the window while another gains more than ``delta``."""
    series = dict(_each(history, rule))
    for stuck, a in series.items():
        if max(a[1:]) - a[0] > rule.param("eps"):
            continue
        for other, b in series.items():
            if other != stuck and b[-1] - b[0] > rule.param("delta"):
                return {stuck: a[-1], other: b[-1]}
    return None


@condition("far_below", optional={"ratio": None, "diff": None}, needs_other=True)
def far_below(history: Sequence[Record], rule: Rule) -> Values | None:
    """``metric`` below ``ratio`` x ``other`` (or more than ``diff`` below it) for ``window`` epochs in a
    row, e.g. a train loss far below the val loss (memorising)."""
    pair = _pair(history, rule)
    ratio, diff = rule.param("ratio"), rule.param("diff")
    if pair is None or (ratio is None and diff is None):
        return None
    a, b = pair
    far = [(ratio is not None and x < ratio * y) or (diff is not None and y - x > diff)
           for x, y in zip(a, b, strict=True)]
    return {rule.metric: a[-1], rule.other: b[-1]} if all(far) else None  # type: ignore[dict-item]


@condition("near_zero_while_low", params=("threshold",), optional={"eps": 0.01}, needs_other=True)
def near_zero_while_low(history: Sequence[Record], rule: Rule) -> Values | None:
    """``metric`` at most ``eps`` (a loss near 0) while ``other`` stays below ``threshold`` (F1 low), for
    ``window`` epochs in a row: the loss is being minimised on something other than the task."""
    pair = _pair(history, rule)
    if pair is None:
        return None
    a, b = pair
    if all(x <= rule.param("eps") and y < rule.param("threshold") for x, y in zip(a, b, strict=True)):
        return {rule.metric: a[-1], rule.other: b[-1]}  # type: ignore[dict-key]
    return None


@condition("zero_while_falling", optional={"eps": 1e-3, "delta": 0.0}, needs_other=True, min_window=2)
def zero_while_falling(history: Sequence[Record], rule: Rule) -> Values | None:
    """``metric`` at most ``eps`` over the whole window (IoU stuck at 0) while ``other`` falls by more
    than ``delta`` over it (the loss goes down): the loss improves without the output improving."""
    pair = _pair(history, rule)
    if pair is None:
        return None
    a, b = pair
    if all(x <= rule.param("eps") for x in a) and b[0] - b[-1] > rule.param("delta"):
        return {rule.metric: a[-1], rule.other: b[-1]}  # type: ignore[dict-key]
    return None


@condition("group_gap", params=("threshold",), optional={"min_best": None})
def group_gap(history: Sequence[Record], rule: Rule) -> Values | None:
    """The largest minus the smallest of the metrics matching ``metric`` (e.g. per-source accuracies)
    above ``threshold`` for ``window`` epochs in a row; with ``min_best``, only while the largest is at
    least ``min_best`` (one group clearly learned: a model that predicts one class for everything also
    spreads per-group accuracies, by each group's share of that class, without having learned any)."""
    series = dict(_each(history, rule))
    if len(series) < 2:
        return None
    columns = list(zip(*series.values(), strict=True))
    gaps = [max(col) - min(col) for col in columns]
    min_best = rule.param("min_best")
    if min_best is not None and any(max(col) < float(min_best) for col in columns):
        return None
    if all(g > rule.param("threshold") for g in gaps):
        return {**{k: v[-1] for k, v in series.items()}, "gap": gaps[-1]}
    return None


@condition("exploding", optional={"factor": 10.0})
def exploding(history: Sequence[Record], rule: Rule) -> Values | None:
    """A finite loss above ``factor`` x its smallest value so far, ``window`` epochs in a row (NaN/inf
    are the non-finite guard's)."""
    for key, values in _each(history, rule):
        lowest = min(v for v in (_finite(r.get(key)) for r in history) if v is not None)
        if lowest > 0 and all(v > rule.param("factor") * lowest for v in values):
            return {key: values[-1], f"{key} (lowest)": lowest}
    return None


@condition("far_from", params=("target",), optional={"tolerance": 0.1})
def far_from(history: Sequence[Record], rule: Rule) -> Values | None:
    """A metric (any key matching it) more than ``tolerance`` away from ``target`` for ``window`` epochs
    in a row, e.g. the drawn class share of a balanced sampler against the share it should draw."""
    target = float(rule.param("target"))
    for key, values in _each(history, rule):
        if all(abs(v - target) > rule.param("tolerance") for v in values):
            return {key: values[-1], "target": target}
    return None


# -- alarms -------------------------------------------------------------------------------------------------
class _Missing:
    def __format__(self, spec: str) -> str:
        return "?"


class _Fields(dict):
    def __missing__(self, key: str) -> _Missing:
        return _Missing()


def format_message(rule: Rule, values: Mapping[str, float], epoch: int | None) -> str:
    """The rule's ``message`` with ``{value}`` (the first value), ``{<metric key>}``, ``{epoch}``,
    ``{window}`` and the condition's parameters filled in; without a message, the rule and its values."""
    shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    if not rule.message:
        return f"{rule.name}: {shown}"
    first = next(iter(values.values()), None)
    fields = _Fields({**rule.params, **values, "value": first, "epoch": epoch, "window": rule.window,
                      "metric": rule.metric, "other": rule.other, "name": rule.name})
    try:
        return rule.message.format_map(fields)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):  # a bad format spec must not end a run
        return f"{rule.message} ({shown})"


def make_alert(rule: str, message: str, *, step: int, epoch: int | None = None, batch: int | None = None,
               severity: str = "warn", action: str = "warn", seed: str | None = None,
               values: Mapping[str, float] | None = None, hint: str | None = None) -> dict[str, Any]:
    """One alarm in the alerts.json format."""
    if severity not in SEVERITIES or action not in ACTIONS:
        raise ValueError(f"alert {rule}: severity {severity!r} / action {action!r} not in {SEVERITIES}/{ACTIONS}")
    return {"epoch": epoch, "step": int(step), "batch": batch, "rule": rule, "severity": severity,
            "action": action, "seed": seed, "message": message,
            # NaN/inf are not JSON: they are kept as null (the message says what the value was)
            "values": {k: _short(v) for k, v in (values or {}).items()}, "hint": hint}


def _short(value: Any) -> float | None:
    """A finite value at 6 significant digits (float32 metrics print as 0.20000000298 otherwise)."""
    out = _finite(value)
    return None if out is None else float(f"{out:.6g}")


class HealthMonitor:
    """Evaluates rules on a growing history and remembers which are firing (one alarm per episode)."""

    def __init__(self, rules: Sequence[Rule]):
        self.rules = list(rules)
        self.active: set[str] = set()

    def firing(self, history: Sequence[Record]) -> dict[str, Values]:
        """Every rule whose condition holds on ``history`` now, with its values."""
        out = {}
        for rule in self.rules:
            values = CONDITIONS[rule.condition].fn(history, rule)
            if values is not None:
                out[rule.name] = values
        return out

    def evaluate(self, history: Sequence[Record]) -> list[dict[str, Any]]:
        """The alarms of the rules that START firing at the latest epoch of ``history``."""
        if not history:
            return []
        now = self.firing(history)
        latest = history[-1]
        epoch = latest.get("epoch")
        alerts = []
        for rule in self.rules:
            if rule.name in now and rule.name not in self.active:
                alerts.append(make_alert(
                    rule.name, format_message(rule, now[rule.name], epoch), step=int(latest.get("step", 0)),
                    epoch=epoch, severity=rule.severity, action=rule.action, seed=rule.seed,
                    values=now[rule.name], hint=rule.hint))
        self.active = set(now)
        return alerts

    def state_dict(self) -> dict[str, Any]:
        return {"active": sorted(self.active)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.active = set(state.get("active", []))


def evaluate_history(rules: Sequence[Rule], history: Sequence[Record]) -> list[dict[str, Any]]:
    """Replay a finished run's history epoch by epoch: the alarms the rules would have fired, in order."""
    monitor = HealthMonitor(rules)
    out = []
    for n in range(1, len(history) + 1):
        out.extend(monitor.evaluate(history[:n]))
    return out

"""The verdict of a run: its metrics against the success criteria of the task's seed.

A preset's ``verdict`` node (``conf/verdict/<task>.yaml``) lists criteria — a name, the metric, an operator
(``>``, ``>=``, ``<``, ``<=``), a target and a note. :func:`evaluate` checks them against a metrics dict and
returns the ``verdict`` block of ``metrics.json``. A metric the run did not produce makes its criterion
*unknown* (``met: null``), never an error: a synthetic run has no real-capture subset, a run without labels no
alert accuracy.

Besides the logged test metrics, :func:`run_metrics` derives figures from the run dir that the seeds' criteria
need ("F1 rises over the epochs", "no collapse alarm", "latency < 100 ms"):

- ``history/<key>/first``, ``/last``, ``/min``, ``/max`` of every numeric key of ``training_history.json``, and
  ``history/<key>/rise`` (last minus first; only with two epochs or more);
- ``alerts/total`` and ``alerts/<severity>`` (``warn``, ``critical``) counted in ``alerts.json``, and
  ``alerts/rule/<word>``: the alarms whose rule name contains ``<word>``. A run without ``alerts.json`` was not
  watched: these stay unknown rather than 0;
- ``export/latency_ms``: median ms per item at one thread of the run's ONNX export (the int8/fp32 model of
  ``export/int8/latency.json`` when export.py wrote one, else the graphs of ``export/parity.json``), measured on
  the machine that exported.

Torch-free and Lightning-free, so tools can recompute a verdict from a run dir.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.errors import ConfigError

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}


@dataclass(frozen=True)
class Criterion:
    """``metric op target``. ``metric`` may list alternatives: the first one the run has is used (a real-capture
    subset metric, then the overall one). ``target`` is a number, or the name of another metric to beat."""

    name: str
    metric: tuple[str, ...]
    op: str
    target: float | str
    note: str = ""

    def resolve(self, metrics: Mapping[str, Any]) -> tuple[str, float | None]:
        """The metric name used and its value (None when the run has none of the alternatives)."""
        for name in self.metric:
            value = finite(metrics.get(name))
            if value is not None:
                return name, value
        return self.metric[0], None

    def target_value(self, metrics: Mapping[str, Any]) -> float | None:
        return finite(metrics.get(self.target)) if isinstance(self.target, str) else float(self.target)


def finite(value: Any) -> float | None:
    """``value`` as a finite float, else None (NaN, a string, a missing key)."""
    if isinstance(value, bool):
        return float(value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def parse_criteria(nodes: Iterable[Mapping[str, Any]] | None, where: str = "verdict.criteria") -> list[Criterion]:
    """Criteria from config dicts; a malformed one is a ConfigError naming its position and key."""
    out = []
    for i, node in enumerate(nodes or []):
        key = f"{where}[{i}]"
        if not isinstance(node, Mapping):
            raise ConfigError(f"{key}: expected a mapping with name, metric, op, target; got {node!r}")
        missing = [k for k in ("metric", "op", "target") if node.get(k) in (None, "", [])]
        if missing:
            raise ConfigError(f"{key}: missing {', '.join(missing)} (each criterion needs metric, op and target)")
        op = str(node["op"])
        if op not in OPERATORS:
            raise ConfigError(f"{key}.op: '{op}' is not one of {', '.join(OPERATORS)}")
        metric = node["metric"]
        metrics = (str(metric),) if isinstance(metric, str) else tuple(str(m) for m in metric)
        target = node["target"]
        if not isinstance(target, str):
            if finite(target) is None:
                raise ConfigError(f"{key}.target: {target!r} is neither a number nor a metric name")
            target = float(target)
        out.append(Criterion(name=str(node.get("name") or f"{metrics[0]} {op} {target}"), metric=metrics, op=op,
                             target=target, note=str(node.get("note") or "")))
    return out


def check(criterion: Criterion, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One criterion's entry of the verdict block."""
    name, value = criterion.resolve(metrics)
    target = criterion.target_value(metrics)
    met = None if value is None or target is None else bool(OPERATORS[criterion.op](value, target))
    note = criterion.note
    if value is None:
        note = _join(note, f"unknown: the run has no {' or '.join(criterion.metric)}")
    elif target is None:
        note = _join(note, f"unknown: the run has no {criterion.target} to compare with")
    entry: dict[str, Any] = {"name": criterion.name, "metric": name, "op": criterion.op,
                             "target": criterion.target, "value": value, "met": met, "note": note}
    if isinstance(criterion.target, str):
        entry["target_value"] = target
    return entry


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def evaluate(criteria: Sequence[Criterion], metrics: Mapping[str, Any], seed: str | None = None,
             split: str = "test") -> dict[str, Any]:
    """The ``verdict`` block: every criterion checked, the counts, and ``passed`` (every criterion met;
    ``None`` when none is missed but some are unknown, so an unknown never reads as a pass)."""
    entries = [check(c, metrics) for c in criteria]
    met = sum(e["met"] is True for e in entries)
    missed = sum(e["met"] is False for e in entries)
    unknown = sum(e["met"] is None for e in entries)
    passed: bool | None = False if missed else (None if unknown or not entries else True)
    return {"seed": seed, "split": split, "criteria": entries, "met": met, "missed": missed, "unknown": unknown,
            "passed": passed}


# -- figures derived from the run dir ----------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def history_metrics(records: Any) -> dict[str, float]:
    """first/last/min/max (and rise, with two epochs or more) of every numeric key of the epoch records."""
    series: dict[str, list[float]] = {}
    for record in records if isinstance(records, list) else []:
        if not isinstance(record, Mapping):
            continue
        for key, value in record.items():
            number = finite(value)
            if number is not None and key not in ("epoch", "step"):
                series.setdefault(key, []).append(number)
    out = {}
    for key, values in series.items():
        out.update({f"history/{key}/first": values[0], f"history/{key}/last": values[-1],
                    f"history/{key}/min": min(values), f"history/{key}/max": max(values)})
        if len(values) > 1:
            out[f"history/{key}/rise"] = values[-1] - values[0]
    return out


def alert_metrics(alerts: Any, wanted: Iterable[str] = ()) -> dict[str, float]:
    """Alarm counts of an ``alerts.json`` list; ``wanted`` names the ``alerts/rule/<word>`` figures to count."""
    if not isinstance(alerts, list):
        return {}
    items = [a for a in alerts if isinstance(a, Mapping)]
    out = {"alerts/total": float(len(items))}
    for severity in ("warn", "critical"):
        out[f"alerts/{severity}"] = float(sum(a.get("severity") == severity for a in items))
    for name in wanted:
        if name.startswith("alerts/rule/"):
            word = name.removeprefix("alerts/rule/")
            out[name] = float(sum(word in str(a.get("rule", "")) for a in items))
    return out


def export_latency(export_dir: Path) -> dict[str, Any]:
    """``export/latency_ms`` from the run's export, with where it came from (``export/latency_source``)."""
    pi = _read_json(export_dir / "int8" / "latency.json")
    if isinstance(pi, Mapping) and isinstance(pi.get("models"), Mapping):
        models = pi["models"]
        model = f"ort_int8_{pi['chosen_int8']}" if pi.get("chosen_int8") else "ort_fp32"
        ms = finite((models.get(model) or {}).get("1"))
        if ms is not None:
            return {"export/latency_ms": ms, "export/latency_source": f"export/int8/latency.json {model}, 1 thread"}
    parity = _read_json(export_dir / "parity.json")
    graphs = parity.get("graphs") if isinstance(parity, Mapping) else None
    if isinstance(graphs, Mapping):
        times = [finite((g.get("latency") or {}).get("onnxruntime")) for g in graphs.values() if isinstance(g, Mapping)]
        if times and all(t is not None for t in times):
            # an item goes through every graph of the bundle, one after the other
            return {"export/latency_ms": float(sum(times)),
                    "export/latency_source": f"export/parity.json, ONNX Runtime fp32, 1 thread, {len(times)} graph(s)"}
    return {}


def run_metrics(run_dir: str | Path, wanted: Iterable[str] = ()) -> dict[str, Any]:
    """The figures derived from the run dir's files (see the module doc)."""
    run = Path(run_dir)
    out: dict[str, Any] = {}
    out.update(history_metrics(_read_json(run / "training_history.json")))
    out.update(alert_metrics(_read_json(run / "alerts.json"), wanted))
    out.update(export_latency(run / "export"))
    return out


def machine() -> str:
    """The CPU this process runs on, for the note of a latency criterion."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown machine"


@dataclass
class VerdictConfig:
    """The ``verdict`` config node: the seed it comes from, the split it judges and its criteria."""

    seed: str | None = None
    split: str = "test"
    criteria: list[Criterion] = field(default_factory=list)

    @classmethod
    def from_node(cls, node: Mapping[str, Any] | None) -> VerdictConfig:
        node = node or {}
        seed = node.get("seed")
        return cls(seed=None if seed is None else str(seed), split=str(node.get("split") or "test"),
                   criteria=parse_criteria(node.get("criteria")))

    def metric_names(self) -> set[str]:
        names = {m for c in self.criteria for m in c.metric}
        return names | {c.target for c in self.criteria if isinstance(c.target, str)}


def run_verdict(node: Mapping[str, Any] | None, metrics: Mapping[str, Any], run_dir: str | Path | None = None,
                split: str | None = None) -> dict[str, Any] | None:
    """The verdict block of a run (its test metrics plus the figures of its run dir), or None without criteria."""
    config = VerdictConfig.from_node(node)
    if not config.criteria:
        return None
    derived = run_metrics(run_dir, config.metric_names()) if run_dir is not None else {}
    block = evaluate(config.criteria, {**derived, **metrics}, seed=config.seed, split=split or config.split)
    for entry in block["criteria"]:
        if entry["metric"] == "export/latency_ms" and entry["value"] is not None:
            entry["note"] = _join(entry["note"], f"{derived.get('export/latency_source')}, read on {machine()}")
    return block


def _fmt(target: Any) -> str:
    return f"{target:g}" if isinstance(target, float) else str(target)


def verdict_text(block: Mapping[str, Any]) -> str:
    """The block as Markdown lines (trackers' text panels, reports)."""
    passed = {True: "PASSED", False: "NOT PASSED", None: "UNDECIDED"}[block.get("passed")]
    lines = [f"**Verdict (seed {block.get('seed')}, {block.get('split')}): {passed}** — met {block.get('met')}, "
             f"missed {block.get('missed')}, unknown {block.get('unknown')}", "",
             "| criterion | metric | target | value | met |", "| --- | --- | --- | --- | --- |"]
    for e in block.get("criteria", []):
        value = "—" if e["value"] is None else f"{e['value']:.4g}"
        met = {True: "yes", False: "NO", None: "unknown"}[e["met"]]
        lines.append(f"| {e['name']} | {e['metric']} | {e['op']} {_fmt(e['target'])} | {value} | {met} |")
    return "\n".join(lines)


def print_verdict(block: Mapping[str, Any], title: str = "verdict") -> None:
    """The block as a small rich table on the console."""
    from rich.console import Console
    from rich.table import Table

    passed = {True: "[green]passed[/]", False: "[red]not passed[/]", None: "[yellow]undecided[/]"}[block["passed"]]
    table = Table(title=f"{title}: seed {block.get('seed')} targets on {block.get('split')} — {passed} "
                        f"(met {block['met']}, missed {block['missed']}, unknown {block['unknown']})")
    for column in ("criterion", "metric", "target", "value", "met"):
        table.add_column(column, justify="right" if column in ("value", "target") else "left",
                         overflow="fold")
    style = {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]unknown[/]"}
    for e in block["criteria"]:
        # the notes (why a target, why unknown) are in metrics.json and report.md: the console keeps to figures
        value = "—" if e["value"] is None else f"{e['value']:.4g}"
        table.add_row(e["name"], e["metric"], f"{e['op']} {_fmt(e['target'])}", value, style[e["met"]])
    Console().print(table)

"""Compare the runs of a sweep: a Markdown report, CSV/JSON tables and PNG plots.

    python -m tools.compare outputs/sweeps/behavior_splits/2026-01-01_10-00-00
    python -m tools.compare <run dir> <run dir> ... --out reports/splits --metrics test/f1_tail test/auroc

Runs are grouped by experiment: every override that differs between the runs, except ``seed``,
names the group (``experiment=intravideo``, ``model.lr=0.001`` ...). Each metric is reported as
mean ± sample std over the group's seeds. Each run's ``.hydra/overrides.yaml``,
``.hydra/config.yaml``, ``metrics/metrics.json``, ``training_history.json`` and
``predictions_agg.csv`` are read (through ``suite.run_dir.RunDir``); a run without a readable
``metrics/metrics.json`` is listed as unfinished.
Every output is written atomically into ``<sweep dir>/report/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.contracts import score_columns
from suite.errors import DataError, UserError, run_guarded
from suite.outputs import OUTPUT_MARKER, make_output_dir, output_dir_arg
from suite.run_dir import FINISHED_MARKER, RunDir

# Overrides that never tell experiments apart.
IGNORED_OVERRIDE_KEYS = {"seed", "hydra.run.dir", "hydra.sweep.dir", "overwrite"}
IGNORED_PREFIXES = ("hydra.", "+sweep", "sweep", "paths.")
NON_METRIC_KEYS = {"epochs_trained"}


@dataclass
class Run:
    path: Path
    overrides: list[str]
    config: dict[str, Any]
    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = True
    group: str = ""

    @property
    def seed(self) -> Any:
        for item in self.overrides:
            key, _, value = item.partition("=")
            if key.lstrip("+~") == "seed":
                return value
        return self.config.get("seed")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def task(self) -> str:
        return str(self.config.get("task_name") or "?")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric entries of metrics.json (nested ``final_val`` too); strings such as paths are skipped."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            for sub, v in flat_metrics(value).items():
                out.setdefault(sub if "/" in sub else f"{key}.{sub}", v)
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int | float) and key not in NON_METRIC_KEYS:
            out[key] = float(value)
    return out


def is_run_dir(path: Path) -> bool:
    """A training run's dir; an evaluation's output folder (``<run>/eval/<time>``, marked) is not one."""
    run = RunDir(path)
    if (run.path / OUTPUT_MARKER).is_file():
        return False
    return run.is_finished or run.overrides_yaml.is_file()


def find_runs(paths: list[Path]) -> list[Path]:
    """Run dirs under each path (a run dir itself, a sweep dir, or a folder of sweeps), in job order."""
    found: list[Path] = []
    for root in paths:
        if not root.exists():
            raise DataError(f"no such run or sweep dir: {root}")
        if is_run_dir(root):
            found.append(root)
            continue
        candidates = {p.parent.parent for p in root.rglob(FINISHED_MARKER.as_posix())}
        candidates |= {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
        # DDP helper processes and report folders are not runs.
        found.extend(sorted((c for c in candidates if is_run_dir(c)), key=_job_order))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def _job_order(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in path.parts)


def _or_warn(read: Any, default: Any) -> Any:
    """One unreadable file of one run must not stop a sweep's report: say which, and go on without it."""
    try:
        return read()
    except DataError as err:
        print(f"warning: {err}", file=sys.stderr)
        return default


def load_run(path: Path) -> Run:
    from omegaconf import OmegaConf

    run = RunDir(path)
    overrides = _or_warn(run.launch_overrides, [])
    config = {}
    if run.config_yaml.is_file():  # a run dir of metrics only has no config
        config = _or_warn(lambda: OmegaConf.to_container(run.config(), resolve=False), {})
    metrics = _or_warn(run.metrics, None)  # unreadable metrics: listed as unfinished
    history = _load_json(run.history_json) or []
    return Run(path=path, overrides=overrides, config=config,
               metrics=flat_metrics(metrics) if isinstance(metrics, dict) else {},
               history=history if isinstance(history, list) else [], finished=isinstance(metrics, dict))


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def _short_number(value: str) -> str:
    """Sampled floats (Optuna) printed with 4 significant digits, so group names stay readable."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if "." not in value and "e" not in value.lower() else f"{number:.4g}"


MAX_LABEL = 40


def short_labels(runs: list[Run], groups: list[str]) -> dict[str, str]:
    """Long group names (many swept keys) become G1, G2 ... in tables and plots; returns label -> full name."""
    if all(len(g) <= MAX_LABEL for g in groups):
        return {g: g for g in groups}
    labels = {g: f"G{i + 1}" for i, g in enumerate(groups)}
    for run in runs:
        run.group = labels[run.group]
    return {label: full for full, label in labels.items()}


def assign_groups(runs: list[Run]) -> list[str]:
    """Name each run's group by the overrides that differ between runs (seed excluded)."""
    def relevant(run: Run) -> dict[str, str]:
        items = {}
        for item in run.overrides:
            key = _key(item)
            if key in IGNORED_OVERRIDE_KEYS or key.startswith(IGNORED_PREFIXES):
                continue
            items[key] = _short_number(item.partition("=")[2])
        return items

    per_run = [relevant(r) for r in runs]
    keys = list(dict.fromkeys(k for items in per_run for k in items))
    varying = [k for k in keys if len({items.get(k) for items in per_run}) > 1]
    # "experiment" first: it is what the seeds' tables compare.
    varying.sort(key=lambda k: (k != "experiment", keys.index(k)))
    order: list[str] = []
    for run, items in zip(runs, per_run, strict=True):
        # a run launched without experiment= ran the default experiment of its task
        experiment = items.get("experiment") or f"{run.config.get('task_name') or 'default'} (default)"
        if varying:
            parts = [experiment if k == "experiment" else f"{k}={items.get(k, '-')}" for k in varying]
            run.group = " ".join(parts)
        else:
            run.group = str(items.get("experiment") or run.config.get("task_name") or "runs")
        if run.group not in order:
            order.append(run.group)
    return order


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------
def tasks_of(runs: list[Run]) -> dict[str, list[str]]:
    """Run names by task (``task_name`` of each run's config)."""
    tasks: dict[str, list[str]] = {}
    for run in runs:
        tasks.setdefault(run.task, []).append(run.name)
    return tasks


def tasks_note(runs: list[Run]) -> str | None:
    """One line when the runs belong to several tasks: their metrics differ, so most cells stay empty."""
    tasks = tasks_of(runs)
    if len(tasks) < 2:
        return None
    listed = "; ".join(f"{task}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
                       for task, names in tasks.items())
    return (f"these runs belong to {len(tasks)} tasks ({listed}); each task logs its own metrics, so a "
            "metric is compared only between the runs that log it ('–' elsewhere)")


def key_metrics(runs: list[Run], requested: list[str] | None) -> list[str]:
    """The metrics compared: the requested ones, else the selection metric's best and every test metric."""
    present = list(dict.fromkeys(k for r in runs for k in r.metrics))
    if requested:
        missing = [m for m in requested if m not in present]
        if missing:
            by_task = {task: sorted({k for r in runs if r.task == task for k in r.metrics})
                       for task in tasks_of(runs)}
            listed = "; ".join(f"{task}: {', '.join(keys) or 'none'}" for task, keys in by_task.items())
            raise UserError(f"--metrics: {', '.join(missing)} logged by no run; the runs log {listed}")
        return requested
    best = [k for k in present if k.startswith("best_")]
    test = sorted(k for k in present if k.startswith("test/"))
    chosen = best + test
    return chosen or [k for k in present if k.startswith("val/")]


def mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    mean = statistics.fmean(finite)
    std = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return mean, std


def summarise(runs: list[Run], groups: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    rows = []
    for group in groups:
        members = [r for r in runs if r.group == group and r.finished]
        for metric in metrics:
            values = [r.metrics[metric] for r in members if metric in r.metrics]
            mean, std = mean_std(values)
            rows.append({"experiment": group, "metric": metric, "mean": mean, "std": std, "n": len(values),
                         "values": values, "seeds": [r.seed for r in members if metric in r.metrics]})
    return rows


def _fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or not math.isfinite(mean):
        return "–"
    text = f"{mean:.4f}"
    if math.isfinite(std):
        text += f" ± {std:.4f}"
    return f"{text} (n={n})"


def _lower_is_better(metric: str) -> bool:
    name = metric.lower()
    return any(w in name for w in ("loss", "gap", "error", "ece", "calibration"))


def val_vs_test(runs: list[Run], groups: list[str], metrics: list[str]) -> list[str]:
    """Final-epoch validation next to test for the same metric: seed 003's point is that they can disagree."""
    pairs = [(m.replace("test/", "val/", 1), m) for m in metrics if m.startswith("test/")]
    pairs = [(v, t) for v, t in pairs if any(v in r.metrics for r in runs) and not t.endswith("/loss")]
    if not pairs:
        return []
    lines = ["", "## Validation (last epoch) vs test", "", "| metric | " + " | ".join(groups) + " |",
             "|" + "---|" * (len(groups) + 1)]
    for val_key, test_key in pairs:
        cells = []
        for group in groups:
            members = [r for r in runs if r.group == group and r.finished]
            v = mean_std([r.metrics[val_key] for r in members if val_key in r.metrics])[0]
            t = mean_std([r.metrics[test_key] for r in members if test_key in r.metrics])[0]
            cells.append(f"{v:.3f} → {t:.3f}" if math.isfinite(v) and math.isfinite(t) else "–")
        lines.append(f"| `{test_key.split('/', 1)[1]}` (val → test) | " + " | ".join(cells) + " |")
    return lines


def markdown_report(runs: list[Run], groups: list[str], metrics: list[str], summary: list[dict[str, Any]],
                    sources: list[Path], plots: list[str], legend: dict[str, str] | None = None,
                    out: Path | None = None) -> str:
    lookup = {(row["experiment"], row["metric"]): row for row in summary}
    lines = ["# Sweep comparison", "", "Sources: " + ", ".join(f"`{s}`" for s in sources), "",
             f"{sum(r.finished for r in runs)} finished runs of {len(runs)}, {len(groups)} experiments; "
             "cells are mean ± sample std over seeds (n = runs). Best mean per metric in bold.", ""]
    note = tasks_note(runs)
    if note:
        lines += [f"**Note:** {note[0].upper()}{note[1:]}.", ""]
    if legend and any(k != v for k, v in legend.items()):
        lines += ["| group | overrides |", "|---|---|"] + [f"| {k} | `{v}` |" for k, v in legend.items()] + [""]
    header = ["metric", *groups]
    two = len(groups) == 2
    if two:
        header.append(f"Δ ({groups[1]} − {groups[0]})")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in metrics:
        cells = [lookup[(g, metric)] for g in groups]
        means = [c["mean"] for c in cells if c["n"] and math.isfinite(c["mean"])]
        best = (min(means) if _lower_is_better(metric) else max(means)) if len(set(means)) > 1 else None
        row = [f"`{metric}`"]
        for c in cells:
            text = _fmt(c["mean"], c["std"], c["n"])
            row.append(f"**{text}**" if best is not None and c["mean"] == best else text)
        if two:
            a, b = cells[0]["mean"], cells[1]["mean"]
            row.append(f"{b - a:+.4f}" if math.isfinite(a) and math.isfinite(b) else "–")
        lines.append("| " + " | ".join(row) + " |")
    lines += val_vs_test(runs, groups, metrics)
    lines += ["", "## Runs", "", "| run | experiment | seed | status | " + " | ".join(f"`{m}`" for m in metrics) + " |",
              "|" + "---|" * (4 + len(metrics))]
    for run in runs:
        status = "finished" if run.finished else "**unfinished** (no metrics/metrics.json)"
        values = [f"{run.metrics[m]:.4f}" if m in run.metrics else "–" for m in metrics]
        lines.append(f"| {_run_cell(run, out)} | {run.group} | {run.seed} | {status} | " + " | ".join(values) + " |")
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------
def _save(fig: Any, path: Path) -> str:
    from suite.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path.name


def _colors(groups: list[str]) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    return {g: cmap(i % 10) for i, g in enumerate(groups)}


def plot_bars(summary: list[dict[str, Any]], groups: list[str], metrics: list[str], out: Path) -> str | None:
    """One small panel per metric (each on its own scale): a bar per experiment, mean ± std, seeds as dots."""
    import matplotlib.pyplot as plt

    shown = metrics[:12]
    if not shown:
        return None
    lookup = {(row["experiment"], row["metric"]): row for row in summary}
    colors = _colors(groups)
    cols = min(4, len(shown))
    rows_n = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 2.8 * rows_n), squeeze=False)
    for ax, metric in zip(axes.flat, shown, strict=False):
        for i, group in enumerate(groups):
            r = lookup[(group, metric)]
            mean = r["mean"] if math.isfinite(r["mean"]) else 0.0
            std = r["std"] if math.isfinite(r["std"]) else 0.0
            ax.bar(i, mean, 0.7, yerr=std, capsize=3, color=colors[group], label=group)
            ax.scatter([i] * len(r["values"]), r["values"], color="black", s=10, zorder=3)
        values = [v for g in groups for v in lookup[(g, metric)]["values"] if math.isfinite(v)]
        if values and min(values) >= 0:
            ax.set_ylim(0, max(max(values) * 1.15, 1e-3 if max(values) > 0 else 1.0))
        ax.set_title(metric + (" (lower is better)" if _lower_is_better(metric) else ""), fontsize=9)
        ax.set_xticks([])
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[g]) for g in groups]
    fig.legend(handles, groups, loc="lower center", ncol=min(4, len(groups)), fontsize=9,
               bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(groups) / 4)))
    fig.suptitle("Key metrics per experiment: mean ± std over seeds (dots: seeds)")
    fig.tight_layout()
    name = _save(fig, out / "metrics_bars.png")
    plt.close(fig)
    return name


def plot_curves(runs: list[Run], groups: list[str], out: Path) -> str | None:
    """The selection metric and the losses per epoch, one line per run, one colour per experiment."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = [r for r in runs if r.history]
    if not runs:
        return None
    selection = str(runs[0].config.get("selection_metric", "val/loss"))
    panels = list(dict.fromkeys([selection, "val/loss", "train/loss"]))
    panels = [p for p in panels if any(p in rec for r in runs for rec in r.history)]
    if not panels:
        return None
    colors = _colors(groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], panels, strict=True):
        labelled: set[str] = set()
        for run in runs:
            pts = [(rec.get("epoch", i), rec[metric]) for i, rec in enumerate(run.history)
                   if isinstance(rec.get(metric), int | float)]
            if not pts:
                continue
            label = run.group if run.group not in labelled else None
            labelled.add(run.group)
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color=colors[run.group], alpha=0.8, label=label)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    name = _save(fig, out / "curves.png")
    plt.close(fig)
    return name


def plot_per_class(summary: list[dict[str, Any]], groups: list[str], out: Path) -> str | None:
    """Per-class accuracy (``*/acc_<class>`` metrics, as logged by the ClassGap callback)."""
    import matplotlib.pyplot as plt

    metrics = sorted({r["metric"] for r in summary if "/acc_" in r["metric"] and r["n"]})
    if not metrics:
        return None
    stage = "test/" if any(m.startswith("test/") for m in metrics) else metrics[0].split("/")[0] + "/"
    metrics = [m for m in metrics if m.startswith(stage)]
    lookup = {(row["experiment"], row["metric"]): row for row in summary}
    colors = _colors(groups)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(metrics) * len(groups) / 2), 3.8))
    width = 0.8 / len(groups)
    for i, group in enumerate(groups):
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(metrics))]
        rows = [lookup[(group, m)] for m in metrics]
        ax.bar(xs, [r["mean"] if math.isfinite(r["mean"]) else 0 for r in rows], width,
               yerr=[r["std"] if math.isfinite(r["std"]) else 0 for r in rows], capsize=3,
               color=colors[group], label=group)
    ax.set_xticks(range(len(metrics)), [m.split("/acc_", 1)[1] for m in metrics])
    # some tasks log per-class accuracy in percent
    top = max((v for g in groups for m in metrics for v in lookup[(g, m)]["values"]), default=1.0)
    ax.set_ylim(0, 105 if top > 1.5 else 1.05)
    ax.set_ylabel(f"{stage}accuracy per class")
    ax.set_title("Per-class accuracy (mean ± std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    name = _save(fig, out / "per_class_accuracy.png")
    plt.close(fig)
    return name


def binary_predictions(run: Run) -> tuple[list[float], list[int]] | None:
    """(probability, target) pairs from predictions_agg.csv of a binary task, when it has such columns."""
    import pandas as pd

    path = RunDir(run.path).predictions_csv
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    # the suite's prediction schema: label, pred and one score_<class> column per class, in class-index
    # order; binary tasks put their positive class (tail, violent, relevant) at index 1
    scores = score_columns(frame.columns)
    if len(scores) != 2 or "label" not in frame.columns:
        return None
    positive, prob_col = list(scores.items())[1]
    target = (frame["label"].astype(str) == positive).astype(int)
    prob = pd.to_numeric(frame[prob_col], errors="coerce")
    ok = target.isin([0, 1]) & prob.between(0, 1)
    if ok.sum() == 0:
        return None
    return prob[ok].tolist(), target[ok].astype(int).tolist()


def plot_reliability(runs: list[Run], groups: list[str], out: Path, bins: int = 10) -> str | None:
    """Reliability diagram per experiment (seeds pooled), with torchmetrics' binary ECE in the legend."""
    import matplotlib.pyplot as plt
    import numpy as np

    pooled: dict[str, tuple[list[float], list[int]]] = {}
    for run in runs:
        pairs = binary_predictions(run)
        if pairs:
            probs, targets = pooled.setdefault(run.group, ([], []))
            probs.extend(pairs[0])
            targets.extend(pairs[1])
    if not pooled:
        return None
    import torch
    from torchmetrics.functional.classification import binary_calibration_error

    colors = _colors(groups)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    edges = np.linspace(0, 1, bins + 1)
    for group, (probs, targets) in pooled.items():
        p, t = np.asarray(probs), np.asarray(targets)
        idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
        xs, ys = [], []
        for b in range(bins):
            mask = idx == b
            if mask.any():
                xs.append(p[mask].mean())
                ys.append(t[mask].mean())
        ece = float(binary_calibration_error(torch.tensor(p, dtype=torch.float32), torch.tensor(t), n_bins=bins))
        ax.plot(xs, ys, marker="o", color=colors[group], label=f"{group} (ECE {ece:.3f})")
    ax.set_xlabel("predicted probability of the positive class")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability (test predictions, seeds pooled)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    name = _save(fig, out / "reliability.png")
    plt.close(fig)
    return name


# ---------------------------------------------------------------------------------------------
# Entry point
def _run_cell(run: Run, out: Path | None) -> str:
    """The run's name, linked to its report.md (python -m tools.report) when it has one: relative to the
    comparison's folder, so the link survives moving the sweep as a whole."""
    report = run.path / "report.md"
    if not report.is_file():
        return f"`{run.name}`"
    target = os.path.relpath(report.resolve(), Path(out).resolve()) if out is not None else str(report)
    return f"[`{run.name}`]({Path(target).as_posix()})"


# ---------------------------------------------------------------------------------------------
def build_report(paths: list[Path], out: Path | None = None, metrics: list[str] | None = None,
                 plots: bool = True) -> dict[str, Any]:
    """Read the runs under ``paths`` and write report.md, summary.csv/json, runs.csv (+ PNGs) to ``out``."""
    from suite.io import atomic_write_csv, atomic_write_json, atomic_write_text

    run_dirs = find_runs(paths)
    if not run_dirs:
        where = ", ".join(map(str, paths))
        raise DataError(f"no runs (dirs with metrics/metrics.json or .hydra/) under {where}")
    runs = [load_run(p) for p in run_dirs]
    note = tasks_note(runs)
    if note:
        print(f"note: {note}", file=sys.stderr)
    legend = short_labels(runs, assign_groups(runs))
    groups = list(legend)
    chosen = key_metrics(runs, metrics)
    summary = summarise(runs, groups, chosen)
    out = out or (paths[0] / "report" if len(paths) == 1 and not is_run_dir(paths[0]) else Path("report"))
    make_output_dir(out, "--out")
    pictures: list[str] = []
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        for make in (lambda: plot_bars(summary, groups, chosen, out), lambda: plot_curves(runs, groups, out),
                     lambda: plot_per_class(summary, groups, out), lambda: plot_reliability(runs, groups, out)):
            name = make()
            if name:
                pictures.append(name)
    atomic_write_csv(out / "summary.csv", [
        {k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in row.items()} for row in summary])
    atomic_write_json(out / "summary.json", {"sources": [str(p) for p in paths], "experiments": groups,
                                             "legend": legend,
                                             "metrics": chosen, "rows": summary})
    atomic_write_csv(out / "runs.csv", [
        {"run": str(r.path), "experiment": r.group, "seed": r.seed, "finished": r.finished,
         "overrides": " ".join(r.overrides), **{m: r.metrics.get(m) for m in chosen}} for r in runs])
    report = markdown_report(runs, groups, chosen, summary, paths, pictures, legend, out)
    atomic_write_text(out / "report.md", report)
    return {"out": out, "report": report, "summary": summary, "groups": groups, "runs": runs, "plots": pictures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.compare",
        description="Compare the runs of a sweep (or several run dirs): Markdown report with mean ± std over "
                    "seeds per experiment, summary.csv/json, runs.csv and PNG plots.")
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep dir, or several run dirs / sweep dirs")
    parser.add_argument("--out", type=output_dir_arg, default=None,
                        help="output folder (default: <sweep dir>/report)")
    parser.add_argument("--metrics", nargs="+", default=None,
                        help="metrics to compare (default: best_<selection metric> and every test/ metric)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    try:
        result = build_report(args.paths, args.out, args.metrics, plots=not args.no_plots)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result["report"])
    print(f"written: {result['out']}/report.md, summary.csv, summary.json, runs.csv"
          + (", " + ", ".join(result["plots"]) if result["plots"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))  # Ctrl-C: exit 130 without a traceback

"""Training curves (training_history.json) and the alarms of alerts.json on a timeline over the selection metric."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from suite.report.figures import Section, figure_md, fmt, save, table
from suite.report.run import RunFacts

SEVERITY_STYLE = {"warn": ("^", "tab:orange"), "critical": ("X", "tab:red")}


def series(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one metric over the history; epochs where it is missing or not finite are skipped."""
    xs, ys = [], []
    for i, record in enumerate(history):
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(float(record.get("epoch", i)))
            ys.append(float(value))
    return xs, ys


def _alert_epoch(alert: dict[str, Any], history: list[dict[str, Any]]) -> float:
    """The alarm's epoch; an alarm raised by step (inside an epoch) sits at the first epoch whose end step reaches."""
    if isinstance(alert.get("epoch"), int | float):
        return float(alert["epoch"])
    step = alert.get("step")
    if isinstance(step, int | float):
        for i, record in enumerate(history):
            if isinstance(record.get("step"), int | float) and record["step"] >= step:
                return float(record.get("epoch", i))
    return float(len(history))


def alarms_section(run: RunFacts, folder: Path) -> Section:
    alerts, history, metric = run.alerts, run.history, run.selection_metric
    if alerts is None:
        return Section("Alarms", "The run was not watched: it has no alerts.json (runs before the run-health "
                                 "alarms, or trained without them).")
    counts = Counter((a.get("rule", "?"), a.get("severity", "?")) for a in alerts)
    xs, ys = series(history, metric) if metric else ([], [])
    if not alerts and not xs:
        return Section("Alarms", "No alarms: alerts.json is empty.")
    if not alerts:
        fig, ax = plt.subplots(figsize=(7.5, 2.4))
        ax.plot(xs, ys, "o-", color="tab:blue", label=metric)
        ax.set_ylabel(metric or "selection metric")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.set_title("no alarms fired", fontsize=10)
        link = save(fig, folder, "alarms")
        caption = (f"No alarms: alerts.json is empty; {metric} per epoch for reference "
                   f"(last value {fmt(ys[-1])}, {len(ys)} epoch(s)).")
        return Section("Alarms", figure_md(link, caption))
    rules = sorted({str(a.get("rule", "?")) for a in alerts})
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7.5, 2.6 + 0.35 * len(rules)),
                                      gridspec_kw={"height_ratios": [2.2, 0.4 + 0.35 * len(rules)]})
    if xs:
        top.plot(xs, ys, "o-", color="tab:blue", label=metric)
        top.legend(loc="best", fontsize=8)
    top.set_ylabel(metric or "selection metric")
    top.grid(alpha=0.3)
    for alert in alerts:
        x = _alert_epoch(alert, history)
        marker, colour = SEVERITY_STYLE.get(str(alert.get("severity", "warn")), ("o", "tab:gray"))
        top.axvline(x, color=colour, alpha=0.35, lw=1)
        stop = alert.get("action") == "stop"
        bottom.scatter([x], [rules.index(str(alert.get("rule", "?")))], marker=marker, color=colour,
                       s=90 if stop else 45, edgecolors="black" if stop else "none", zorder=3)
    bottom.set_yticks(range(len(rules)), rules, fontsize=8)
    bottom.set_ylim(-0.6, len(rules) - 0.4)
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    # whole epochs on the axis, also for a run of one epoch (matplotlib would zoom to +-0.05 around it)
    last = max([*xs, *(_alert_epoch(a, history) for a in alerts), 1])
    bottom.set_xlim(-0.5, last + 0.5)
    bottom.grid(alpha=0.3, axis="x")
    for severity, (marker, colour) in SEVERITY_STYLE.items():
        bottom.scatter([], [], marker=marker, color=colour, label=severity)
    bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    top.set_title("alarms over the selection metric", fontsize=10)
    link = save(fig, folder, "alarms")
    parts = ", ".join(f"{rule} ({severity}) ×{n}" for (rule, severity), n in sorted(counts.items()))
    stops = sum(a.get("action") == "stop" for a in alerts)
    caption = (f"{len(alerts)} alarm(s) fired: {parts}; {stops} stopped the run. Top: {metric} per epoch, "
               "a vertical line per alarm; bottom: one row per rule, triangle = warn, cross = critical, "
               "black edge = the alarm stopped training.")
    listing = table(["epoch", "step", "rule", "severity", "action", "seed", "message", "hint"],
                    [[a.get("epoch"), a.get("step"), a.get("rule"), a.get("severity"), a.get("action"),
                      a.get("seed"), a.get("message"), a.get("hint")] for a in alerts])
    return Section("Alarms", figure_md(link, caption) + "\n" + listing)


def _metric_names(history: list[dict[str, Any]], stage: str) -> list[str]:
    names: dict[str, None] = {}
    for record in history:
        for key, value in record.items():
            if key.startswith(f"{stage}/") and isinstance(value, int | float) and not isinstance(value, bool):
                names[key] = None
    return list(names)


def curves_section(run: RunFacts, folder: Path) -> Section:
    history = run.history
    if not history:
        return Section("Training curves", "No training_history.json: the run recorded no per-epoch metrics.")
    val_names = [k for k in _metric_names(history, "val") if not k.endswith("/loss")]
    losses = sorted({k for k in _metric_names(history, "train") + _metric_names(history, "val") if k.endswith("loss")})
    panels = [("loss", losses)] + [(name, [name.replace("val/", "train/", 1), name]) for name in val_names]
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 2.5 * nrows), squeeze=False)
    last_epoch = max((float(r.get("epoch", i)) for i, r in enumerate(history)), default=0.0)
    last = []
    for ax, (title, keys) in zip(axes.flat, panels, strict=False):
        for key in keys:
            xs, ys = series(history, key)
            if xs:
                train = key.startswith("train/")
                ax.plot(xs, ys, ("o" if len(xs) < 20 else "") + ("--" if train else "-"), ms=3, label=key,
                        color="tab:gray" if train else "tab:blue")
                if key.startswith("val/"):
                    last.append(f"{key} {fmt(ys[-1], 3)}")
        if title == run.selection_metric:
            xs, ys = series(history, title)
            if ys:  # the epoch the best checkpoint comes from
                best = int(np.argmin(ys) if run.config.get("selection_mode") == "min" else np.argmax(ys))
                ax.plot([xs[best]], [ys[best]], "*", ms=12, color="tab:red", label=f"best {fmt(ys[best], 3)}")
                ax.legend(fontsize=6, loc="best")
            title = f"{title} (selection)"
        ax.set_title(title, fontsize=9, fontweight="bold" if title.endswith("(selection)") else "normal")
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-0.5, max(1.0, last_epoch) + 0.5)  # whole epochs, also for a one-epoch run
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.supxlabel("epoch", fontsize=8)
    fig.tight_layout()
    link = save(fig, folder, "curves")
    caption = (f"Loss and every validation metric (solid blue) with its training counterpart (dashed gray), "
               f"per epoch, over {len(history)} epoch(s); the selection metric's panel is in bold, its best epoch "
               f"starred. Last validation values: {', '.join(last) or 'none logged'}.")
    return Section("Training curves", figure_md(link, caption))

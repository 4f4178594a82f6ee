"""The report's head: what ran (task, experiment, data, seed, epochs, checkpoint, wall time) and the verdict."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from suite.report.figures import Section, fmt, table
from suite.report.run import RunFacts


def wall_time_s(run: RunFacts) -> tuple[float, str] | None:
    """Seconds from start to end when the run recorded them: launch.json's times, else train.log's first and
    last timestamped lines; None when neither is there (a run trained outside train.py)."""
    launch = run.path / "launch.json"
    if launch.is_file():
        try:
            record = json.loads(launch.read_text())
        except ValueError:
            record = {}
        start, end = record.get("started"), record.get("ended") or record.get("finished")
        if isinstance(start, int | float) and isinstance(end, int | float) and end >= start:
            return float(end - start), "launch.json"
    log = run.path / "train.log"
    if log.is_file():
        stamps = re.findall(r"^\[?(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)", log.read_text(errors="replace"), re.M)
        if len(stamps) >= 2:
            first, last = (datetime.fromisoformat(s.replace(" ", "T")) for s in (stamps[0], stamps[-1]))
            return (last - first).total_seconds(), "train.log, first to last line"
    return None


def _duration(measured: tuple[float, str] | None) -> str:
    if measured is None:
        return "not recorded"
    seconds, source = measured
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
    return f"{text} ({source})"


def summary_section(run: RunFacts) -> Section:
    metrics, cfg = run.metrics, run.config
    selection = run.selection_metric
    best_key = f"best_{selection}" if selection else None
    checkpoint = metrics.get("evaluated_checkpoint")
    rows = [
        ["task", run.task],
        ["experiment", run.experiment],
        ["data root", str(run.data_root) if run.data_root else "not recorded"],
        ["seed", cfg.get("seed")],
        ["epochs trained", metrics.get("epochs_trained")],
        ["selection metric", f"{selection} ({cfg.get('selection_mode', 'max')})" if selection else "not recorded"],
        ["best selection value", metrics.get(best_key) if best_key else None],
        ["best checkpoint", Path(str(checkpoint)).name if checkpoint else "not recorded"],
        ["wall time", _duration(wall_time_s(run))],
    ]
    # per-video/per-class entries (test/per_video/<id>/...) are the breakdown tables' business
    tests = [[key, value] for key, value in metrics.items()
             if key.startswith("test/") and "/per_" not in key
             and isinstance(value, int | float) and not isinstance(value, bool)]
    body = table(["", ""], rows)
    if tests:
        body += "\n**Test metrics** (the best checkpoint on the test split):\n\n" + table(["metric", "value"], tests)
    return Section("Summary", body)


def verdict_section(run: RunFacts) -> Section:
    """metrics.json's ``verdict``: each criterion with its target and value, met / missed / unknown."""
    verdict = run.metrics.get("verdict")
    if not isinstance(verdict, dict):
        return Section("Verdict", "No verdict recorded: metrics.json holds no `verdict` block for this run.")
    criteria = [c for c in verdict.get("criteria") or [] if isinstance(c, dict)]
    rows = []
    for c in criteria:
        met = c.get("met")
        status = "met" if met is True else "missed" if met is False else "unknown"
        rows.append([c.get("name"), c.get("metric"), f"{c.get('op', '')} {fmt(c.get('target'))}", c.get("value"),
                     status, c.get("note") or ""])
    passed = verdict.get("passed")
    head = (f"Verdict on the {verdict.get('split', 'test')} split (seed {verdict.get('seed') or '—'}): "
            f"**{'passed' if passed else 'not passed' if passed is False else 'undecided'}** — "
            f"{verdict.get('met', 0)} met, {verdict.get('missed', 0)} missed, {verdict.get('unknown', 0)} unknown.\n\n")
    body = head + (table(["criterion", "metric", "target", "value", "status", "note"], rows) if rows
                   else "The verdict lists no criteria.\n")
    return Section("Verdict", body)

"""``write_run_report``: report.md and its pictures, built in a temp folder and swapped in as a unit."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from suite.io import atomic_write_text
from suite.report.breakdown import breakdown_section
from suite.report.classification import calibration_section, confusion_section
from suite.report.curves import alarms_section, curves_section
from suite.report.figures import Section
from suite.report.run import RunFacts, load_run
from suite.report.summary import summary_section, verdict_section
from suite.report.worst import worst_section

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_DIR = "report"


def _sections(run: RunFacts, folder: Path) -> list[Section]:
    makers: list[Callable[[], Section | None]] = [
        lambda: summary_section(run),
        lambda: verdict_section(run),
        lambda: alarms_section(run, folder),
        lambda: curves_section(run, folder),
        lambda: confusion_section(run, folder),
        lambda: calibration_section(run, folder),
        lambda: breakdown_section(run),
        lambda: worst_section(run, folder),
    ]
    sections = []
    for make in makers:
        try:
            section = make()
        except Exception as err:  # one unreadable picture or odd column must not cost the rest of the report
            log.warning("report section failed: %s: %s", type(err).__name__, err)
            section = Section("Section not drawn", f"A section could not be drawn: {type(err).__name__}: {err}")
        if section is not None:
            sections.append(section)
    return sections


def render(run: RunFacts, folder: Path) -> str:
    """report.md's text; the pictures go into ``folder`` (named ``report/`` in the run dir)."""
    head = f"# Run report: {run.experiment} ({run.task})\n\n`{run.path.name}`\n"
    return head + "\n" + "\n".join(s.markdown() for s in _sections(run, folder))


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``<run dir>/report.md`` and ``<run dir>/report/*.png``; returns the report's path.

    The new report is drawn in a temp folder inside the run dir, then the pictures' folder is swapped in and
    report.md replaced atomically: a crash leaves the previous report, never half of a new one.
    """
    run = load_run(run_dir)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=run.path))
    try:
        text = render(run, tmp / REPORT_DIR)
        (tmp / REPORT_DIR).mkdir(exist_ok=True)
        final_dir, old = run.path / REPORT_DIR, tmp / "previous"
        if final_dir.exists():
            os.replace(final_dir, old)
        os.replace(tmp / REPORT_DIR, final_dir)
        path = atomic_write_text(run.path / REPORT_MD, text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path

"""Write the report of finished runs: ``<run dir>/report.md`` with its pictures in ``<run dir>/report/``.

    python -m tools.report <run dir> [<run dir> ...]
    python -m tools.report outputs/sweeps/behavior_splits/2026-01-01_10-00-00    # one report per job

Training writes the report at the end of every run; this rebuilds it for older runs (or after alerts.json or
the verdict changed). A sweep dir (or any folder of runs) gets one report per finished job under it. Exit
code 2 when a path is neither a finished run nor a folder holding one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from suite.errors import DataError, UserError, run_guarded
from suite.run_dir import FINISHED_MARKER, PREVIOUS_DIR, is_training_run


def finished_runs(path: Path) -> list[Path]:
    """``path`` itself when it is a finished run, else the finished runs under it (a sweep's jobs), in job order;
    earlier launches kept in ``previous/`` and evaluation folders are not runs of their own."""
    if not path.exists():
        raise DataError(f"{path}: no such run or sweep dir")
    if (path / FINISHED_MARKER).is_file() and is_training_run(path):
        return [path]
    if not path.is_dir():
        raise DataError(f"{path} is a file, not a run dir (give the folder train.py wrote)")
    found = []
    for marker in path.rglob(FINISHED_MARKER.as_posix()):
        run = marker.parent.parent
        relative = run.relative_to(path).parts
        if PREVIOUS_DIR in relative or any(p.startswith(".") for p in relative) or not is_training_run(run):
            continue
        found.append(run)
    if not found:
        raise DataError(f"{path} is not a finished training run (no {FINISHED_MARKER}) and holds none: give a run dir "
                        "train.py finished, or a sweep dir of such runs")
    return sorted(found, key=lambda p: tuple(int(s) if s.isdigit() else s for s in p.parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs, or sweep dirs (one report per job)")
    args = parser.parse_args(argv)
    try:
        runs = [run for path in args.paths for run in finished_runs(path)]
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from suite.report import write_run_report  # matplotlib and friends only once the paths are known to be runs

    for run in dict.fromkeys(runs):
        print(f"written: {write_run_report(run)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))  # Ctrl-C: exit 130 without a traceback; a user error on the way: exit 2

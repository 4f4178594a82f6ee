"""Evaluate a trained run on its test split or on other data.

    python evaluate.py <run dir> [--ckpt best|last|<file>] [--out <dir>] [key=value ...]

Overrides use the run's config keys in Hydra's grammar, e.g. ``data.root=/data/new_camera``. Writes
``metrics/metrics.json``, ``predictions_agg.csv``, ``label_map.json`` and ``manifests_used.txt``
under ``<run dir>/eval/<timestamp>/`` (or ``--out``).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main(argv: list[str] | None = None) -> None:
    from suite.cli import parse_run_command
    from suite.errors import run_guarded
    from suite.evaluation import evaluate

    command = parse_run_command(sys.argv[1:] if argv is None else argv, prog="python evaluate.py",
                                description=__doc__.splitlines()[0],
                                epilog="the output folder defaults to <run dir>/eval/<timestamp>")
    run_guarded(evaluate, command.run, ckpt=command.ckpt, overrides=command.overrides, out_dir=command.out)


if __name__ == "__main__":
    main()

"""Evaluate a trained run on its test split or on other data.

    python evaluate.py <run dir> [--ckpt best|last|<file>] [--out <dir>] [key=value ...]

Overrides use the run's config keys, e.g. ``data.root=/data/new_camera``. Writes
``metrics/metrics.json``, ``predictions_agg.csv``, ``label_map.json`` and ``manifests_used.txt``
under ``<run dir>/eval/<timestamp>/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python evaluate.py", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory written by train.py")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. data.root=<dir>)")
    parser.add_argument("--ckpt", default="best", help="best, last, or a checkpoint file (default: best)")
    parser.add_argument("--out", default=None, help="output folder (default: <run dir>/eval/<timestamp>)")
    args = parser.parse_args(argv)

    from suite.errors import run_guarded
    from suite.evaluation import evaluate

    run_guarded(evaluate, args.run_dir, ckpt=args.ckpt, overrides=args.overrides, out_dir=args.out)


if __name__ == "__main__":
    main(sys.argv[1:])

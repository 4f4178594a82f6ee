"""Predict with a trained run or an exported bundle on new, unlabelled inputs.

    python predict.py <run dir | bundle> <inputs ...> [--out DIR] [--ckpt best|last|<file>] [--threads N]
                      [key=value ...]

``<inputs>`` are files or folders of the task's kind (images, videos, event folders). ``key=value`` items
are the task predictor's options (``python predict.py <run> --options`` lists them). Writes, as a unit,
``predictions.csv`` (item_id, group, label, pred, score_<class> ..., the task's extras), ``summary.json``
and ``pictures/`` to ``--out`` (default ``<run dir>/predict/<timestamp>``, or ``predictions/<timestamp>``
beside a bundle).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python predict.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a run directory written by train.py, or an exported bundle folder")
    parser.add_argument("items", nargs="*", metavar="<inputs> [key=value]",
                        help="files or folders to predict on, then the predictor's key=value options")
    parser.add_argument("--out", type=Path, default=None, help="output folder (must not exist or be empty)")
    parser.add_argument("--ckpt", default="best", help="checkpoint of a run dir: best, last or a file")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of torch / ONNX Runtime")
    parser.add_argument("--options", action="store_true", help="list the predictor's options and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_intermixed_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    args.options_given = dict(item.split("=", 1) for item in args.items if "=" in item and not Path(item).exists())
    args.inputs = [item for item in args.items if not ("=" in item and not Path(item).exists())]
    if not args.inputs and not args.options:
        parser.error("give at least one input file or folder")
    return args


def default_out(source: Path, bundle: bool) -> Path:
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return (source.parent / "predictions" / stamp) if bundle else (source / "predict" / stamp)


def predict(argv: list[str]) -> dict:
    from deploy.backends import is_bundle, open_backend
    from deploy.predictors import predictor_for
    from suite.printing import print_metrics_table

    args = parse_args(argv)
    source = Path(args.source).expanduser()
    backend = open_backend(source, ckpt=args.ckpt, threads=args.threads)
    predictor = predictor_for(backend, args.options_given)
    if args.options:
        for key, value in sorted(predictor.options.items()):
            print(f"{key}={value}")
        return {}
    out = args.out or default_out(source, is_bundle(source))
    summary = predictor.run(args.inputs, out, progress=not args.no_progress)
    print_metrics_table({k: v for k, v in summary.items() if isinstance(v, int | float)},
                        title=f"{summary['task']} predictions ({backend.name}) -> {out}")
    return summary


def main(argv: list[str] | None = None) -> None:
    from suite.errors import run_guarded

    run_guarded(predict, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()

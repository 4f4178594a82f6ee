"""``python -m datamodules.synthetic <task> OUT [--seed N] [key=value ...]``: write a task's synthetic data."""

from __future__ import annotations

import argparse
import sys

from datamodules.synthetic import TASKS, generator


def _value(text: str) -> object:
    import yaml

    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.synthetic",
        description="Write a task's synthetic dataset in the on-disk layout a user would bring.",
        epilog="Parameters per task: python -m datamodules.synthetic <task> --list",
    )
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("out", nargs="?", help="folder to write (created; reused when it holds the same data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true", help="print the task's parameters and defaults")
    parser.add_argument("params", nargs="*", metavar="key=value", help="generator parameters")
    args = parser.parse_intermixed_args(argv)
    gen = generator(args.task)
    if args.list or not args.out:
        print(f"{args.task}: {gen.description}")
        for key, value in gen.defaults.items():
            print(f"  {key}={value}")
        return
    overrides = {}
    for item in args.params:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"parameters are key=value, got '{item}'")
        overrides[key] = _value(value)
    from suite.errors import run_guarded

    path = run_guarded(gen.ensure, args.out, args.seed, **overrides)
    print(f"wrote synthetic {args.task} data to {path}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The command line shared by the tools that work on a trained run (evaluate.py, export.py):

    python <tool>.py <run dir> [--ckpt best|last|<file>] [--out DIR] [key=value ...]

``key=value`` items use Hydra's override grammar (``data.root=<dir>``, ``+new.key=1``, lists, quoting),
the same as ``train.py``; they are checked here so that a typo fails before anything is loaded.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from suite.errors import ConfigError
from suite.run_dir import RunDir, parse_overrides

USAGE = "{prog} <run dir> [--ckpt best|last|<file>] [--out DIR] [key=value ...]"
# export.py's first spelling (``run_dir=<dir> checkpoint=last out=<dir>``) -> the option that replaced it
LEGACY_KEYS = {"run_dir": "run_dir", "checkpoint": "ckpt", "out": "out"}


@dataclass(frozen=True)
class RunCommand:
    run: RunDir
    ckpt: str = "best"
    out: Path | None = None
    overrides: list[str] = field(default_factory=list)


def parse_run_command(argv: Sequence[str], prog: str, description: str, epilog: str = "",
                      overrides_help: str = "config overrides in Hydra's grammar (e.g. data.root=<dir>)",
                      accept_legacy: bool = False) -> RunCommand:
    """Parse ``argv``; bad usage exits with code 2 (argparse's convention, the suite's user-error code).

    ``accept_legacy`` also takes ``run_dir=``/``checkpoint=``/``out=`` items and prints how to write them now.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     usage=USAGE.format(prog=prog),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="*", metavar="<run dir> [key=value ...]",
                        help=f"a run directory written by train.py, then {overrides_help}")
    parser.add_argument("--ckpt", default=None, help="best, last, or a checkpoint file (default: best)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    # intermixed: options may come between or after the key=value items
    args = parser.parse_intermixed_args(list(argv))
    items: list[str] = list(args.items)
    legacy = _take_legacy(items) if accept_legacy else {}
    for key in ("ckpt", "out"):
        if key in legacy and getattr(args, key) is not None:
            parser.error(f"--{key} and {_legacy_name(key)}= both given; keep --{key}")
    if "run_dir" in legacy:
        run_dir = legacy["run_dir"]
    elif items:
        run_dir = items.pop(0)
        if "=" in run_dir and not Path(run_dir).is_dir():
            parser.error(f"the first argument must be the run directory, got '{run_dir}'")
    else:
        parser.error("the run directory is required")
    ckpt = args.ckpt or legacy.get("ckpt") or "best"
    out = args.out or (Path(legacy["out"]) if "out" in legacy else None)
    try:
        parse_overrides(items)
    except ConfigError as err:
        parser.error(str(err))
    command = RunCommand(RunDir(run_dir), ckpt, out, items)
    if legacy:
        used = ", ".join(f"{_legacy_name(key)}=" for key in legacy)
        print(f"{prog}: {used} {'is' if len(legacy) == 1 else 'are'} deprecated; write: {_spelled(prog, command)}",
              file=sys.stderr)
    return command


def _take_legacy(items: list[str]) -> dict[str, str]:
    """Remove ``run_dir=``/``checkpoint=``/``out=`` items from ``items``; return their values by the new name.

    The value is taken verbatim, as the old spelling did: a path is not run through the override grammar.
    """
    found: dict[str, str] = {}
    for item in list(items):
        key, sep, value = item.partition("=")
        if sep and key in LEGACY_KEYS:
            found[LEGACY_KEYS[key]] = value
            items.remove(item)
    return found


def _legacy_name(key: str) -> str:
    return next(old for old, new in LEGACY_KEYS.items() if new == key)


def _spelled(prog: str, command: RunCommand) -> str:
    words = [prog, str(command.run)]
    if command.ckpt != "best":
        words += ["--ckpt", command.ckpt]
    if command.out is not None:
        words += ["--out", str(command.out)]
    return " ".join([*words[:1], *map(shlex.quote, words[1:]), *map(shlex.quote, command.overrides)])

"""Where outputs go: output paths checked before any work, and a folder of outputs written as a unit.

Kept apart from ``suite.io`` (the atomic file writers every module uses) because these checks know
about training runs (``suite.run_dir``) and raise the suite's user errors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from suite.errors import UserError
from suite.io import OUTPUT_MARKER, atomic_write_json
from suite.run_dir import training_run_holding

__all__ = ["OUTPUT_MARKER", "check_output_dir", "check_output_file", "make_output_dir", "output_dir_arg",
           "output_file_arg", "output_folder"]


# -- output paths ----------------------------------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def check_output_dir(path: str | Path, option: str) -> Path:
    """Refuse, naming ``option``, an output folder that cannot be made or written: a file on its way, a
    read-only or unwritable parent. Checked before any work, so that a run or a tool does not fail
    after its results were computed (or in Hydra's logging set-up, with a traceback).
    Creates nothing; returns the path."""

    path = Path(path).expanduser()
    existing = _nearest_existing(path.absolute())
    if existing.is_file() or (os.path.lexists(existing) and not existing.is_dir()):
        where = "is" if existing == path.absolute() else f"lies under {existing}, which is"
        raise UserError(f"{option}: {path} {where} a file, not a folder; give a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option}: cannot write in {existing} (permission denied or a read-only file system); "
                        f"give a folder you can write to")
    return path


def check_output_file(path: str | Path, option: str) -> Path:
    """Refuse an output file path that is a folder, or whose folder cannot be made or written (``option`` names it)."""

    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{option}: {path} is a folder; give a file path (e.g. {path / 'report.json'})")
    check_output_dir(path.parent, option)
    return path


def make_output_dir(path: str | Path, option: str) -> Path:
    """``check_output_dir``, then create the folder; an OS refusal (e.g. a special file system) names ``option``."""

    path = check_output_dir(path, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{option}: cannot create the folder {path}: {err.strerror or err}") from None
    return path


def _argparse_type(check: Any) -> Any:
    import argparse


    def convert(text: str) -> Path:
        try:
            return check(text, "")
        except UserError as err:  # argparse names the option and exits 2, before any work
            raise argparse.ArgumentTypeError(str(err).removeprefix(": ")) from None

    convert.__name__ = "folder" if check is check_output_dir else "file"
    return convert


# ``type=`` of argparse options naming an output folder / file: checked while the command line is read.
output_dir_arg = _argparse_type(check_output_dir)
output_file_arg = _argparse_type(check_output_file)


# -- a folder of outputs as a unit -----------------------------------------------------------------
PARTIAL_SUFFIX = ".partial"


def _marker_kind(folder: Path) -> str | None:
    try:
        record = json.loads((folder / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record.get("kind") if isinstance(record, dict) else None


def _refuse_training_outputs(dest: Path, option: str) -> None:

    run, part = training_run_holding(dest)
    if run is None:
        return
    if part is None:
        raise UserError(f"{option}: {dest} is the folder of a training run; its metrics, predictions and "
                        f"checkpoints would be replaced. Give a new folder (the default is {run}/eval/<timestamp>)")
    raise UserError(f"{option}: {dest} is part of the outputs of the training run {run} ({part}); "
                    "give a folder outside them")


@contextmanager
def output_folder(dest: str | Path, kind: str, option: str = "--out", replace: bool = False,
                  record: Mapping[str, Any] | None = None) -> Iterator[Path]:
    """Write a folder of outputs as a unit: yields ``<dest>.partial``; on success it becomes ``dest``,
    on failure it is removed, and an existing ``dest`` is left as it was.

    Refused before anything is written (``option`` names the culprit): a ``dest`` that is a training
    run's folder or lies inside its outputs, a file, an unwritable place, or an existing non-empty
    folder that this writer did not make for ``kind``. With ``replace=True`` an earlier output of the
    same ``kind`` is replaced as a whole (never file by file: no file of the old one survives).
    The folder gets a ``.output.json`` marker (kind, time, command, ``record``).
    """
    import shutil
    import sys
    import time


    dest = Path(dest).expanduser()
    _refuse_training_outputs(dest.absolute(), option)
    check_output_dir(dest, option)
    if dest.exists() and any(dest.iterdir()):
        same = _marker_kind(dest) == kind
        if not (same and replace):
            what = f"an earlier {kind} output" if same else "files this command did not write"
            raise UserError(f"{option}: {dest} already exists and holds {what}; give a new folder"
                            + (" or remove it" if not same else ""))
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    if partial.exists():  # left by a run that was killed: it never became an output
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        yield partial
        atomic_write_json(partial / OUTPUT_MARKER, {"kind": kind, "created": time.time(), "command": sys.argv,
                                                    **(record or {})})
        old = None
        if dest.exists() and any(dest.iterdir()):  # the earlier output of this kind (checked above)
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        try:
            os.replace(partial, dest)  # onto a missing or empty folder: one rename
        except BaseException:
            if old is not None:
                os.replace(old, dest)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise

"""Atomic writers: a crash or a full disk never leaves a half-written output behind."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only be read by setting it,
    which races with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``.

    The file gets the mode a plain ``open()`` would give (0666 less the umask): ``mkstemp`` makes
    0600 files, which the rest of a shared group could not read.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=True)
    return atomic_write_text(path, text + "\n")


def atomic_write_csv(
    path: str | Path, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str] | None = None
) -> Path:
    rows = list(rows)
    if fieldnames is None:
        fieldnames = list(rows[0].keys()) if rows else []
        for row in rows:  # keep every column even when rows differ
            fieldnames += [k for k in row if k not in fieldnames]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames))
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


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
    from suite.errors import UserError

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
    from suite.errors import UserError

    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{option}: {path} is a folder; give a file path (e.g. {path / 'report.json'})")
    check_output_dir(path.parent, option)
    return path


def make_output_dir(path: str | Path, option: str) -> Path:
    """``check_output_dir``, then create the folder; an OS refusal (e.g. a special file system) names ``option``."""
    from suite.errors import UserError

    path = check_output_dir(path, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{option}: cannot create the folder {path}: {err.strerror or err}") from None
    return path


def _argparse_type(check: Any) -> Any:
    import argparse

    from suite.errors import UserError

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
OUTPUT_MARKER = ".output.json"
PARTIAL_SUFFIX = ".partial"


def _marker_kind(folder: Path) -> str | None:
    try:
        record = json.loads((folder / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record.get("kind") if isinstance(record, dict) else None


def _refuse_training_outputs(dest: Path, option: str) -> None:
    from suite.errors import UserError
    from suite.run_dir import training_run_holding

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

    from suite.errors import UserError

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

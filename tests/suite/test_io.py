"""Atomic outputs: a failed write (e.g. a full disk) leaves the previous file intact and no temp file."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from suite import io as suite_io
from suite.io import atomic_write_csv, atomic_write_json


def test_json_and_csv_round_trip(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "m" / "metrics.json", {"f1": 0.5, "n": 3})
    assert json.loads((tmp_path / "m" / "metrics.json").read_text()) == {"f1": 0.5, "n": 3}
    atomic_write_csv(tmp_path / "p.csv", [{"a": 1}, {"a": 2, "b": 3}])
    assert (tmp_path / "p.csv").read_text().splitlines() == ["a,b", "1,", "2,3"]


def test_disk_full_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"f1": 0.9})

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(suite_io.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(target, {"f1": 0.1})
    assert json.loads(target.read_text()) == {"f1": 0.9}
    assert os.listdir(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_files_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """Outputs are readable by whoever the user's umask lets read them, like files made by open()."""
    import stat

    from suite.io import atomic_write_text, current_umask

    previous = os.umask(umask)
    try:
        assert current_umask() == umask
        path = atomic_write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode

"""Manifest paths cannot escape the data root unless allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.errors import DataError
from suite.paths import confined_path


def test_relative_paths_resolve_under_root(tmp_path: Path) -> None:
    assert confined_path(tmp_path, "a/b.mp4") == (tmp_path / "a" / "b.mp4").resolve()
    assert confined_path(tmp_path, tmp_path / "x.jpg") == (tmp_path / "x.jpg").resolve()


@pytest.mark.parametrize("value", ["../../etc/passwd", "/etc/passwd", "a/../../outside.jpg"])
def test_traversal_is_refused_with_the_row(tmp_path: Path, value: str) -> None:
    with pytest.raises(DataError, match=r"outside the data root.*allow_outside_root") as info:
        confined_path(tmp_path, value, where="manifest.csv row 3")
    assert "manifest.csv row 3" in str(info.value) and value in str(info.value)


def test_explicit_option_allows_outside(tmp_path: Path) -> None:
    assert confined_path(tmp_path, "/etc/passwd", allow_outside=True) == Path("/etc/passwd").resolve()

"""Paths read from manifests are confined to the data root unless the user allows otherwise."""

from __future__ import annotations

from pathlib import Path

from suite.errors import DataError


def confined_path(root: str | Path, value: str | Path, allow_outside: bool = False, where: str = "") -> Path:
    """Resolve ``value`` (relative to ``root`` unless absolute) and refuse it if it leaves ``root``.

    A manifest a user was sent may hold ``../../etc/passwd``; reading it would leak files into
    training data or logs. ``allow_outside=True`` (the config's ``data.allow_outside_root``) lifts
    the check for manifests that deliberately point elsewhere.
    """
    root = Path(root).expanduser().resolve()
    path = Path(value).expanduser()
    resolved = (path if path.is_absolute() else root / path).resolve()
    if not allow_outside and not resolved.is_relative_to(root):
        place = f" ({where})" if where else ""
        raise DataError(
            f"path '{value}'{place} points outside the data root {root}; refusing to read it. "
            "Set data.allow_outside_root=true if the manifest deliberately points elsewhere."
        )
    return resolved

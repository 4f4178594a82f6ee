"""Helpers shared by the synthetic generators: cached generation keyed by parameters."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = ".complete.json"


def params_key(params: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def ensure_generated(out_dir: str | Path, params: dict[str, Any], generate: Callable[[Path], None]) -> Path:
    """Run ``generate(tmp_dir)`` unless ``out_dir`` already holds data made with ``params``.

    Generation goes to a sibling temp folder renamed into place at the end, so an interrupted
    run never leaves a half-made dataset that a later run would trust.
    """
    out_dir = Path(out_dir)
    marker = out_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return out_dir
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    generate(tmp)
    (tmp / MARKER).write_text(json.dumps(params, sort_keys=True))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir

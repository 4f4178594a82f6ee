"""Helpers shared by the synthetic generators: cached generation keyed by parameters."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

MARKER = ".complete.json"


def params_key(params: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def ensure_generated(out_dir: str | Path, params: dict[str, Any], generate: Callable[[Path], None]) -> Path:
    """Run ``generate(tmp_dir)`` unless ``out_dir`` already holds data made with ``params``.

    Generation goes to a per-process temp folder renamed into place at the end, so an interrupted
    run never leaves a half-made dataset that a later run would trust; a file lock makes parallel
    sweep jobs that need the same dataset wait for one of them to make it.
    """
    out_dir = Path(out_dir)
    marker = out_dir / MARKER

    def ready() -> bool:
        return marker.is_file() and json.loads(marker.read_text()) == params

    if ready():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir) + ".lock"):
        if ready():
            return out_dir
        tmp = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            generate(tmp)
            (tmp / MARKER).write_text(json.dumps(params, sort_keys=True))
            if out_dir.exists():
                shutil.rmtree(out_dir)
            tmp.rename(out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir

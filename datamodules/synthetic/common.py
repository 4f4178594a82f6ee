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


class SyntheticDataset:
    """One task's synthetic generator: writes the task's on-disk layout, cached by its parameters.

    Every task module under ``datamodules/synthetic/`` exposes one as ``GENERATOR``; DataModules use
    :meth:`ensure` for their default data, and ``python -m datamodules.synthetic <task> OUT`` runs any
    of them from the command line.

    ``write(folder, seed, **params)`` fills an empty folder; ``defaults`` names every parameter (the
    CLI accepts exactly these); ``version`` changes whenever the output for the same parameters does,
    so that stale caches are regenerated.
    """

    def __init__(self, task: str, write: Callable[..., None], defaults: dict[str, Any], version: int,
                 description: str):
        self.task = task
        self.write = write
        self.defaults = dict(defaults)
        self.version = version
        self.description = description

    def params(self, seed: int, **overrides: Any) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            from suite.errors import ConfigError

            raise ConfigError(f"synthetic {self.task} data: unknown parameter(s) {unknown}; "
                              f"known: {sorted(self.defaults)}")
        return {"task": self.task, "version": self.version, "seed": int(seed), **self.defaults, **overrides}

    def folder(self, base_dir: str | Path, seed: int, **overrides: Any) -> Path:
        """Where the dataset for these parameters lives under ``base_dir``."""
        return Path(base_dir) / f"{self.task}-{params_key(self.params(seed, **overrides))}"

    def ensure(self, out_dir: str | Path, seed: int, **overrides: Any) -> Path:
        """Generate into ``out_dir`` unless it already holds this dataset (atomic, under a file lock)."""
        params = self.params(seed, **overrides)
        settings = {k: v for k, v in params.items() if k not in ("task", "version", "seed")}
        return ensure_generated(out_dir, params, lambda tmp: self.write(tmp, int(seed), **settings))

"""A run dir that holds a finished run is never written over silently.

Hydra writes ``.hydra/`` (config, overrides) into the run dir before the job starts, so the check
runs twice: in the Hydra callback ``LaunchChecks`` before Hydra touches the dir, and in
``suite.training.train`` for runs started without Hydra's launcher (tests, notebooks).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from omegaconf import DictConfig

from suite.errors import UserError

FINISHED_MARKER = Path("metrics") / "metrics.json"


def is_finished(run_dir: Path) -> bool:
    return (run_dir / FINISHED_MARKER).is_file()


def may_write_over(cfg: DictConfig) -> bool:
    """``overwrite=true``, or a fine-tune from an explicit checkpoint file, may reuse a finished dir."""
    return bool(cfg.get("overwrite", False)) or cfg.get("ckpt_path") not in (None, "last")


def guard_run_dir(out_dir: Path, cfg: DictConfig) -> None:
    """Refuse ``out_dir`` when it holds a finished run and the config does not ask to replace it."""
    if is_finished(out_dir) and not may_write_over(cfg):
        raise UserError(
            f"{out_dir} already holds a finished run ({out_dir / FINISHED_MARKER}). Choose another "
            "hydra.run.dir, or pass overwrite=true to replace its outputs."
        )


def guard_sweep_dir(sweep_dir: Path, cfg: DictConfig) -> None:
    """Refuse a sweep dir whose jobs already finished, before any job (or Hydra) writes into it."""
    if may_write_over(cfg) or not sweep_dir.is_dir():
        return
    finished = sorted(p.parent.parent for p in sweep_dir.glob(f"*/{FINISHED_MARKER}"))
    if finished:
        names = ", ".join(p.name for p in finished[:5]) + (" ..." if len(finished) > 5 else "")
        raise UserError(
            f"{sweep_dir} already holds {len(finished)} finished job(s) ({names}). Choose another "
            "hydra.sweep.dir, or pass overwrite=true to replace their outputs."
        )


def keep_previous_hydra_config(run_dir: Path, output_subdir: str | None) -> Path | None:
    """Copy an existing ``.hydra/`` aside before Hydra rewrites it (a resumed or overwritten run).

    The first launch's overrides are the record of how the run was made; a resume with
    ``ckpt_path=last`` would otherwise replace them with its own.
    """
    if not output_subdir:
        return None
    current = run_dir / output_subdir
    if not (current / "config.yaml").is_file():
        return None
    base = f"{output_subdir}.before-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    kept, suffix = run_dir / base, 1
    while kept.exists():  # two relaunches within one second
        kept, suffix = run_dir / f"{base}~{suffix}", suffix + 1
    shutil.copytree(current, kept)
    return kept

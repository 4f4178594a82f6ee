"""Text and files sent to whatever trackers a run has (TensorBoard, CSV, MLflow, W&B), through one door.

Lightning's loggers share ``log_metrics`` and ``log_hyperparams`` but not text or files: each tracker
has its own call. Callbacks and the run's end call :func:`log_text` / :func:`log_file` instead of
reaching for one tracker's API, so an alarm or a report reaches every tracker the user composed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _kind(logger: Any) -> str:
    return type(logger).__name__


def log_text(trainer: Any, tag: str, text: str, step: int | None = None) -> None:
    """``text`` under ``tag`` in every logger of ``trainer`` that can hold text (rank zero only)."""
    if not getattr(trainer, "is_global_zero", True):
        return
    step = trainer.global_step if step is None else step
    for logger in getattr(trainer, "loggers", []) or []:
        kind = _kind(logger)
        try:
            if kind == "TensorBoardLogger":
                logger.experiment.add_text(tag, text, global_step=step)
            elif kind == "MLFlowLogger":
                logger.experiment.log_text(logger.run_id, text, f"{tag}/step_{step:08d}.txt")
            elif kind == "WandbLogger":
                logger.experiment.log({tag: text}, commit=False)
        except Exception as err:  # a tracker's hiccup must not end the run it reports on
            log.warning("could not send %s to %s: %s", tag, kind, err)


def log_file(trainer_or_loggers: Any, path: str | Path, folder: str | None = None) -> None:
    """Attach the file ``path`` (a report, a picture) to every logger that keeps files."""
    loggers = getattr(trainer_or_loggers, "loggers", trainer_or_loggers) or []
    for logger in loggers:
        kind = _kind(logger)
        try:
            if kind == "MLFlowLogger":
                logger.experiment.log_artifact(logger.run_id, str(path), folder)
            elif kind == "WandbLogger":
                logger.experiment.save(str(path), base_path=str(Path(path).parent), policy="now")
        except Exception as err:  # see log_text
            log.warning("could not attach %s to %s: %s", path, kind, err)

"""Text and files sent to whatever trackers a run has (TensorBoard, CSV, MLflow, W&B), through one door.

Lightning's loggers share ``log_metrics`` and ``log_hyperparams`` but not text or files: each tracker
has its own call. Callbacks and the run's end call :func:`log_text` / :func:`log_file` instead of
reaching for one tracker's API, so an alarm or a report reaches every tracker the user composed
(``logger=[tensorboard,mlflow]``, conf/logger/, docs/trackers.md):

- TensorBoard: text in the Text tab; a Markdown file as text, a PNG as an image (it keeps no files);
- CSV: text appended to ``<csv dir>/text/<tag>.md``, files copied to ``<csv dir>/files/[<folder>/]``
  (Lightning's CSVLogger keeps only scalars and hparams);
- MLflow: text as an artifact ``<tag>/step_<step>.txt``, files as artifacts (under ``<folder>``);
- W&B: text as an HTML panel under ``<tag>``, files saved with the run (``<folder>/<name>``).
"""

from __future__ import annotations

import html
import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _kind(logger: Any) -> str:
    return type(logger).__name__


def _safe_name(tag: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)


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
            elif kind == "CSVLogger":
                path = Path(logger.log_dir) / "text" / f"{_safe_name(tag)}.md"
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as out:  # one growing log per tag, like a text panel
                    out.write(f"## step {step}\n\n{text}\n\n")
            elif kind == "MLFlowLogger":
                logger.experiment.log_text(logger.run_id, text, f"{tag}/step_{step:08d}.txt")
            elif kind == "WandbLogger":
                import wandb

                # commit=False: the panel joins the step Lightning logs next instead of adding a step of its own
                logger.experiment.log({tag: wandb.Html(f"<pre>{html.escape(text)}</pre>")}, commit=False)
        except Exception as err:  # a tracker's hiccup must not end the run it reports on
            log.warning("could not send %s to %s: %s", tag, kind, err)


def _tensorboard_file(logger: Any, path: Path, folder: str | None, step: int) -> None:
    tag = f"{folder}/{path.stem}" if folder else path.stem
    if path.suffix.lower() == ".md":
        logger.experiment.add_text(tag, path.read_text(encoding="utf-8"), global_step=step)
    elif path.suffix.lower() == ".png":
        import numpy as np
        from PIL import Image

        image = np.asarray(Image.open(path).convert("RGB"))
        logger.experiment.add_image(tag, image, global_step=step, dataformats="HWC")


def log_file(trainer_or_loggers: Any, path: str | Path, folder: str | None = None) -> None:
    """Attach the file ``path`` (a report, a picture) to every logger that keeps files (rank zero only)."""
    if not getattr(trainer_or_loggers, "is_global_zero", True):
        return
    loggers = getattr(trainer_or_loggers, "loggers", trainer_or_loggers) or []
    step = int(getattr(trainer_or_loggers, "global_step", 0) or 0)
    path = Path(path)
    for logger in loggers:
        kind = _kind(logger)
        try:
            if kind == "TensorBoardLogger":
                _tensorboard_file(logger, path, folder, step)
            elif kind == "CSVLogger":
                target = Path(logger.log_dir) / "files" / (folder or "")
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
            elif kind == "MLFlowLogger":
                logger.experiment.log_artifact(logger.run_id, str(path), folder)
            elif kind == "WandbLogger":
                # base_path keeps <folder>/<name> inside the run's files, as MLflow's artifact folder does
                base = path.parent.parent if folder else path.parent
                logger.experiment.save(str(path), base_path=str(base), policy="now")
        except Exception as err:  # see log_text
            log.warning("could not attach %s to %s: %s", path, kind, err)


def mlflow_logger(save_dir: str, experiment_name: str, tracking_uri: str | None = None, **kwargs: Any) -> Any:
    """Lightning's MLFlowLogger; without ``tracking_uri``, a SQLite store ``<save_dir>/mlflow.db`` with the
    artifacts in ``<save_dir>/artifacts``. By hand only because SQLite needs the folder to exist before the
    store opens, and MLflow 3 refuses the plain-folder (``file:``) store."""
    from lightning.pytorch.loggers import MLFlowLogger

    folder = Path(save_dir).absolute()
    if tracking_uri is None:
        folder.mkdir(parents=True, exist_ok=True)
        tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
        kwargs.setdefault("artifact_location", str(folder / "artifacts"))
    return MLFlowLogger(experiment_name=experiment_name, tracking_uri=tracking_uri, **kwargs)

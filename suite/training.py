"""What ``python train.py`` does: validate, build, fit, test the best checkpoint, write outputs."""

from __future__ import annotations

import inspect
import json
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from suite.config_check import refused_config_value, validate_config
from suite.errors import DataError, UserError
from suite.io import atomic_write_json, atomic_write_text
from suite.printing import print_config_tree, print_metrics_table, warn_on_console
from suite.run_dir import (
    FINGERPRINT_NAME,
    NAMED_CHECKPOINTS,
    RunDir,
    acquire_run_lock,
    data_fingerprint,
    guard_run_dir,
    launch_rank,
    moved_checkpoint,
    prepare_run_dir,
    release_run_lock,
)
from suite.trackers import log_file, log_text
from suite.verdict import VerdictConfig, print_verdict, run_verdict, verdict_text

if TYPE_CHECKING:
    from suite.contracts import DataSpec

log = logging.getLogger(__name__)


def instantiate(node: DictConfig, key: str | None = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets the suite's own errors through unwrapped.

    A ValueError/TypeError raised by the suite's own code while building the node is a config value
    the constructor refused (``warn > critical``, an unknown ``model.tta.aggregation``): it becomes a
    ConfigError naming the node's config key (``key`` is the path of ``node``, e.g. "data").
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        refused = refused_config_value(err, key)
        if refused is not None:
            raise refused from err.__cause__
        raise


def build_model(cfg: DictConfig) -> Any:
    """The LightningModule of ``cfg.model``. Its arguments arrive as plain dicts and lists
    (``_convert_="all"``): checkpoints load with ``weights_only=True``, which refuses the OmegaConf
    containers ``save_hyperparameters`` would otherwise store, so no module has to convert them."""
    return instantiate(cfg.model, key="model", _convert_="all")


def resolve_ckpt_path(cfg: DictConfig, out_dir: Path) -> str | None:
    """``ckpt_path``: "last" (resume this run dir), "best", or a checkpoint file; None to start afresh."""
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return None
    try:
        return str(RunDir(out_dir).checkpoint(str(ckpt)))
    except UserError as err:
        # a checkpoint of this dir's earlier run, moved to previous/ when this run started afresh
        given = Path(f"checkpoints/{ckpt}.ckpt" if ckpt in NAMED_CHECKPOINTS else str(ckpt)).expanduser()
        moved = moved_checkpoint(out_dir, given if given.is_absolute() else out_dir / given)
        if moved is not None:
            print(f"ckpt_path={ckpt}: the earlier run's files were moved aside; using {moved}", file=sys.stderr)
            return str(moved)
        hint = " (set hydra.run.dir to the run to resume)" if ckpt == "last" else ""
        raise type(err)(f"ckpt_path={ckpt}: {err}{hint}") from None


def build_callbacks(cfg: DictConfig) -> dict[str, Any]:
    """The callbacks of ``cfg.callbacks`` by config key (the key names a callback in errors)."""
    nodes = cfg.get("callbacks") or {}
    return {name: instantiate(node, key=f"callbacks.{name}") for name, node in nodes.items()
            if isinstance(node, DictConfig) and "_target_" in node}


def build_loggers(cfg: DictConfig) -> list[Any]:
    nodes = cfg.get("logger") or {}
    return [instantiate(node, key=f"logger.{name}") for name, node in nodes.items()
            if isinstance(node, DictConfig) and "_target_" in node]


def check_task_contract(cfg: DictConfig, model: Any, callbacks: dict[str, Any]) -> None:
    """Before any data is read: every callback gets the step outputs it needs, and the selection
    metric is one that the module or a callback logs (otherwise it is found after a full epoch)."""
    from suite.contracts import check_callback_needs

    check_callback_needs(callbacks, model.step_outputs, type(model).__name__)
    logged = set(model.logged_metrics())
    for callback in callbacks.values():
        logged |= set(getattr(callback, "logged_metrics", lambda: set())())
    metric = cfg.selection_metric
    if metric not in logged:
        from suite.errors import ConfigError

        raise ConfigError(
            f"selection_metric: '{metric}' is not logged by {type(model).__name__} or the callbacks; "
            f"metrics that can select the checkpoint: {', '.join(sorted(logged))}"
        )


def write_run_inputs(out_dir: Path, spec: DataSpec, split_ids: dict[str, Any]) -> None:
    """``label_map.json``, ``manifests_used.txt`` and ``splits.json``: what the run read and how it split it."""
    atomic_write_json(out_dir / "label_map.json", spec.label_map())
    lines = [f"{path}\t{rows}" for path, rows in spec.sources]
    atomic_write_text(out_dir / "manifests_used.txt", "path\trows\n" + "\n".join(lines) + "\n")
    atomic_write_json(out_dir / "splits.json", split_ids)


def prepare_model_and_data(model: Any, datamodule: Any, ckpt_path: str | Path | None) -> DataSpec:
    """Read the data (bad inputs fail here), hand its spec to the model, then check that a checkpoint
    to resume from fits the model. Returns the spec."""
    datamodule.prepare_data()
    datamodule.setup("fit")
    spec = datamodule.spec()
    model.configure(spec)
    if ckpt_path:
        from suite.checkpoints import check_fits

        check_fits(model, ckpt_path)
    return spec


def _flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    import pandas as pd

    container = OmegaConf.to_container(cfg, resolve=True)
    container = {k: v for k, v in container.items() if k not in ("hydra", "paths", "verdict")}
    flat = pd.json_normalize(container, sep=".").to_dict(orient="records")[0]
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flat.items()}


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def log_run_hyperparams(trainer: Any, params: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The composed config as hparams in every logger. TensorBoard also pairs them with the final metrics (its
    HPARAMS tab); the other trackers take no metrics here and got the test metrics from ``trainer.test``."""
    finals = {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}
    for logger in trainer.loggers:
        if "metrics" in inspect.signature(logger.log_hyperparams).parameters:
            logger.log_hyperparams(params, metrics=finals)
        else:
            logger.log_hyperparams(params)


def verdict_node(cfg: DictConfig) -> dict[str, Any] | None:
    """The ``verdict`` config node as plain data (None when the config has none)."""
    node = cfg.get("verdict")
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else None


def send_run_report(trainer: Any, out_dir: Path) -> Path | None:
    """Write the run's ``report.md`` (``suite.report.write_run_report``) and attach it and its ``report/`` pictures
    to every tracker. The report is a reader's aid: a failure to write it is warned about, never ends the run."""
    import suite.report  # matplotlib and friends: loaded when a run ends, not when it starts

    try:
        report = Path(suite.report.write_run_report(out_dir))
    except Exception as err:  # see the docstring: the run's results are already written
        warn_on_console(log, f"warning: the run report could not be written ({type(err).__name__}: {err})")
        return None
    log_file(trainer, report)
    pictures = report.parent / "report"
    for picture in sorted(pictures.glob("*.png")) if pictures.is_dir() else []:
        log_file(trainer, picture, "report")
    return report


def close_loggers(trainer: Any, status: str) -> None:
    """Flush and close every logger: Lightning finalizes them after ``fit`` but not after ``test``,
    which leaves the test events in a writer thread that outlives the run (and its directory)."""
    for logger in trainer.loggers:
        logger.finalize(status)
        if type(logger).__name__ == "WandbLogger":  # Lightning leaves the W&B run open: its records flush at finish
            logger.experiment.finish(exit_code=0 if status == "success" else 1)


def run_dir_option() -> str:
    """The key that names the run dir in messages: Hydra's run or sweep dir, else ``paths.output_dir``."""
    from suite.launch import hydra_config, is_multirun

    hydra_cfg = hydra_config()
    if hydra_cfg is None:
        return "paths.output_dir"
    return "hydra.sweep.dir" if is_multirun(hydra_cfg) else "hydra.run.dir"


# Folders a run writes besides its run dir (feature caches, generated synthetic data).
OUTPUT_FOLDER_KEYS = ("data.cache_dir", "data.synthetic_dir")


def check_output_paths(cfg: DictConfig, out_dir: Path) -> None:
    """Every folder the run will write can be made and written, before any data is read: a file in the
    way or a read-only place is named by its key, not found by a traceback halfway through."""
    from suite.outputs import check_output_dir

    check_output_dir(out_dir, run_dir_option())
    data = cfg.get("data")
    for key in OUTPUT_FOLDER_KEYS:
        name = key.split(".", 1)[1]
        if not isinstance(data, DictConfig) or data.get(name) in (None, ""):
            continue
        if name == "synthetic_dir" and data.get("root") not in (None, ""):
            continue  # the user's data is read, nothing is generated
        raw = str(OmegaConf.to_container(data, resolve=False).get(name))
        origin = raw[2:].split("}")[0] if raw.startswith("${paths.") else None
        check_output_dir(str(data.get(name)), f"{key} (set by {origin})" if origin else key)


def current_launch_files() -> list[str]:
    """Files of the run dir that belong to this launch already: Hydra's record and log of a sweep job
    (written before the job starts) and the job's launch record."""
    from suite.launch import hydra_config, is_multirun

    hydra_cfg = hydra_config()
    if hydra_cfg is None:
        return []
    keep = [str(hydra_cfg.output_subdir)] if hydra_cfg.get("output_subdir") else []
    log_file = OmegaConf.select(hydra_cfg, "job_logging.handlers.file.filename", default=None)
    if log_file:
        keep.append(Path(str(log_file)).name)
    if is_multirun(hydra_cfg):
        keep.append("launch.json")
    return keep


def train(cfg: DictConfig) -> float | None:
    """Validate, hold the run dir, then fit and test (:func:`fit_and_test`); the run dir is held until the end."""
    validate_config(cfg)
    VerdictConfig.from_node(verdict_node(cfg))  # a malformed criterion is refused before any training
    out_dir = Path(cfg.paths.output_dir)
    check_output_paths(cfg, out_dir)
    if launch_rank() > 0:  # DDP's extra processes: rank 0 holds and prepares the run dir
        return fit_and_test(cfg, out_dir)
    note = acquire_run_lock(out_dir, run_dir_option())
    if note:
        print(note, file=sys.stderr)
    try:
        return fit_and_test(cfg, out_dir)
    finally:
        release_run_lock(out_dir)


def check_data_unchanged(cfg: DictConfig, out_dir: Path, fingerprint: dict[str, Any],
                         split_ids: dict[str, Any]) -> None:
    """On a resume, compare the data with the fingerprint the run dir recorded at its first launch:
    a change is warned about loudly, or refused with ``on_data_change=error``."""
    from suite.run_dir import data_changes

    path = out_dir / FINGERPRINT_NAME
    if cfg.get("ckpt_path") is None or not path.is_file():
        return
    try:
        before = json.loads(path.read_text())
        old_ids = json.loads((out_dir / "splits.json").read_text()) if (out_dir / "splits.json").is_file() else None
    except (OSError, ValueError) as err:
        print(f"warning: {path} cannot be read ({err}); the data is not compared with the first launch's",
              file=sys.stderr)
        return
    changes = data_changes(before, fingerprint, old_ids, split_ids)
    if not changes:
        return
    text = (f"ckpt_path={cfg.ckpt_path}: the data differs from what this run read before ({path}):\n  - "
            + "\n  - ".join(changes))
    if cfg.get("on_data_change", "warn") == "error":
        raise DataError(f"{text}\nResume on the data the run started with, start a new run dir, or set "
                        "on_data_change=warn to continue anyway.")
    banner = "!" * 100
    print(f"\n{banner}\nWARNING: {text}\nThe run continues on the new data (on_data_change=error refuses "
          f"this).\n{banner}\n", file=sys.stderr)
    log.warning(text)


def fit_and_test(cfg: DictConfig, out_dir: Path) -> float | None:
    from suite.launch import prepare_job

    cfg = prepare_job(cfg)
    if launch_rank() > 0:
        guard_run_dir(out_dir, cfg)
    else:
        prepare_run_dir(out_dir, cfg, keep=current_launch_files())
    ckpt_path = resolve_ckpt_path(cfg, out_dir)
    print_config_tree(cfg)

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, key="data")
    model = build_model(cfg)
    callbacks = build_callbacks(cfg)
    check_task_contract(cfg, model, callbacks)
    loggers = build_loggers(cfg)
    if not loggers:
        # LearningRateMonitor refuses a trainer without a logger: logger=none must still train
        callbacks = {k: c for k, c in callbacks.items() if type(c).__name__ != "LearningRateMonitor"}
    trainer = instantiate(cfg.trainer, key="trainer", callbacks=list(callbacks.values()), logger=loggers or False)

    status = "failed"
    try:
        # Read the data before fitting so that bad inputs fail before any training.
        spec = prepare_model_and_data(model, datamodule, ckpt_path)
        if trainer.is_global_zero:
            split_ids = datamodule.split_ids()
            fingerprint = data_fingerprint(spec.sources, split_ids)
            check_data_unchanged(cfg, out_dir, fingerprint, split_ids)
            write_run_inputs(out_dir, spec, split_ids)
            atomic_write_json(out_dir / FINGERPRINT_NAME, fingerprint)

        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        fit_metrics = _scalar_metrics(trainer.callback_metrics)

        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        metrics: dict[str, Any] = {}
        if cfg.test_after_fit:
            best = checkpoint.best_model_path if checkpoint is not None else ""
            results = trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            metrics.update(_scalar_metrics(results[0] if results else {}))
            metrics["evaluated_checkpoint"] = best or "last weights in memory"
        if checkpoint is not None and checkpoint.best_model_score is not None:
            metrics[f"best_{cfg.selection_metric}"] = float(checkpoint.best_model_score)
        metrics["epochs_trained"] = trainer.current_epoch
        metrics["final_val"] = {k: v for k, v in fit_metrics.items() if k.startswith("val/")}

        if trainer.is_global_zero:
            verdict = run_verdict(verdict_node(cfg), metrics, out_dir)
            if verdict is not None:
                metrics["verdict"] = verdict
            atomic_write_json(RunDir(out_dir).metrics_json, metrics)
            log_run_hyperparams(trainer, _flat_hparams(cfg), metrics)
            print_metrics_table({k: v for k, v in metrics.items() if isinstance(v, float | int)},
                                title=f"{cfg.task_name}: final metrics ({out_dir})")
            if verdict is not None:
                print_verdict(verdict, title=cfg.task_name)
                log_text(trainer, "verdict", verdict_text(verdict), step=trainer.global_step)
            send_run_report(trainer, out_dir)
        status = "success"
    finally:
        close_loggers(trainer, status)
    score = metrics.get(f"best_{cfg.selection_metric}")
    return float(score) if score is not None else None

"""Evaluate a trained run (or one of its checkpoints) on its test split or on other data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from suite.config_check import validate_config
from suite.io import atomic_write_json
from suite.outputs import output_folder
from suite.printing import print_metrics_table
from suite.run_dir import RunDir
from suite.verdict import print_verdict, run_verdict


def evaluate(run_dir: str | Path | RunDir, ckpt: str = "best", overrides: list[str] | None = None,
             out_dir: str | Path | None = None) -> dict[str, Any]:
    """Test ``ckpt`` (best, last or a file) of a run with its config plus ``overrides``; outputs go to
    ``out_dir`` (default ``<run dir>/eval/<timestamp>``). Returns the metrics written.

    The outputs are written as a unit (``suite.outputs.output_folder``): into ``<out>.partial``, renamed on
    success, removed on failure; an ``out_dir`` that is the training run's folder (or one of its outputs)
    is refused, so an evaluation never replaces the run's own metrics and predictions.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    out = Path(out_dir) if out_dir else run.path / "eval" / time.strftime("%Y-%m-%d_%H-%M-%S")
    with output_folder(out, kind="evaluate", option="--out", replace=True,
                       record={"run": str(run.path), "ckpt": ckpt, "overrides": list(overrides or [])}) as partial:
        metrics = _evaluate_into(run, ckpt, overrides or [], partial)
    print_metrics_table({k: v for k, v in metrics.items() if isinstance(v, float)},
                        title=f"evaluation of {metrics['evaluated_checkpoint']} ({out})")
    if isinstance(metrics.get("verdict"), dict):
        print_verdict(metrics["verdict"], title=f"evaluation ({out})")
    return metrics


def _evaluate_into(run: RunDir, ckpt: str, overrides: list[str], out: Path) -> dict[str, Any]:
    # the weights come from the checkpoint: never reach for the hub when evaluating
    cfg = run.config(overrides, output_dir=out, weights_from_checkpoint=True)
    validate_config(cfg)
    ckpt_path = run.checkpoint(ckpt)

    import lightning as L

    from suite.training import (
        build_callbacks,
        build_model,
        instantiate,
        prepare_model_and_data,
        verdict_node,
        write_run_inputs,
    )

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, key="data")
    model = build_model(cfg)
    spec = prepare_model_and_data(model, datamodule, ckpt_path)
    # only what evaluation needs: writers and the task's test-time callbacks, no checkpointing
    skip = ("ModelCheckpoint", "EarlyStopping", "LearningRateMonitor", "TrainingHistory")
    callbacks = [c for c in build_callbacks(cfg).values() if type(c).__name__ not in skip]
    trainer = L.Trainer(accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, logger=False,
                        callbacks=callbacks, default_root_dir=str(out), enable_checkpointing=False)
    write_run_inputs(out, spec, datamodule.split_ids())
    results = trainer.test(model, datamodule=datamodule, ckpt_path=str(ckpt_path), weights_only=True)
    metrics: dict[str, Any] = {k: float(v) for k, v in (results[0] if results else {}).items()}
    metrics["evaluated_checkpoint"] = str(ckpt_path)
    # the training run's history, alarms and export still speak for the checkpoint; the test figures are this data's
    verdict = run_verdict(verdict_node(cfg), metrics, run.path,
                          split="test" if not overrides else "test (with overrides: " + " ".join(overrides) + ")")
    if verdict is not None:
        metrics["verdict"] = verdict
    atomic_write_json(RunDir(out).metrics_json, metrics)
    return metrics

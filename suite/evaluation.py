"""Evaluate a trained run (or one of its checkpoints) on its test split or on other data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from suite.config_check import validate_config
from suite.errors import ConfigError, UserError
from suite.io import atomic_write_json
from suite.printing import print_metrics_table


def load_run_config(run_dir: Path, overrides: list[str], out_dir: Path) -> DictConfig:
    """The run's composed config (``.hydra/config.yaml``) with ``key=value`` overrides applied."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory of this suite (no {path})")
    cfg = OmegaConf.load(path)
    OmegaConf.set_struct(cfg, True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(Path.cwd())
        cfg.paths.output_dir = str(out_dir)
        # the weights come from the checkpoint: never reach for the hub when evaluating
        if "pretrained" in cfg.model:
            cfg.model.pretrained = False
        if "weights" in cfg.model:
            cfg.model.weights = None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for item in overrides:
        try:
            (override,) = parser.parse_overrides([item])
            OmegaConf.update(cfg, override.key_or_group, override.value(), force_add=override.is_add())
        except Exception as err:  # hydra OverrideParseException, omegaconf ConfigAttributeError
            raise ConfigError(f"cannot apply override '{item}': {str(err).splitlines()[0]}") from None
    return cfg


def resolve_checkpoint(run_dir: Path, ckpt: str) -> Path:
    path = run_dir / "checkpoints" / f"{ckpt}.ckpt" if ckpt in ("best", "last") else Path(ckpt).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return path


def evaluate(run_dir: str | Path, ckpt: str = "best", overrides: list[str] | None = None,
             out_dir: str | Path | None = None) -> dict[str, Any]:
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "eval" / time.strftime("%Y-%m-%d_%H-%M-%S")
    cfg = load_run_config(run_dir, overrides or [], out)
    validate_config(cfg)
    ckpt_path = resolve_checkpoint(run_dir, ckpt)

    import lightning as L

    from suite.training import build_callbacks, instantiate, prepare_model_and_data, write_run_inputs

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    prepare_model_and_data(model, datamodule, ckpt_path)
    # only what evaluation needs: writers and the task's test-time callbacks, no checkpointing
    skip = ("ModelCheckpoint", "EarlyStopping", "LearningRateMonitor", "TrainingHistory")
    callbacks = [c for c in build_callbacks(cfg) if type(c).__name__ not in skip]
    trainer = L.Trainer(accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, logger=False,
                        callbacks=callbacks, default_root_dir=str(out), enable_checkpointing=False)
    out.mkdir(parents=True, exist_ok=True)
    write_run_inputs(out, datamodule)
    results = trainer.test(model, datamodule=datamodule, ckpt_path=str(ckpt_path), weights_only=True)
    metrics: dict[str, Any] = {k: float(v) for k, v in (results[0] if results else {}).items()}
    metrics["evaluated_checkpoint"] = str(ckpt_path)
    atomic_write_json(out / "metrics" / "metrics.json", metrics)
    print_metrics_table({k: v for k, v in metrics.items() if isinstance(v, float)},
                        title=f"evaluation of {ckpt_path} ({out})")
    return metrics

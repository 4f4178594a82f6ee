"""A trained run's directory: its config, checkpoints and standard outputs, and the finished-run guard.

``RunDir`` is the one place that knows the layout ``train.py`` writes (see DESIGN.md), so that
evaluate, export, compare and the launcher read a run the same way.

A run dir that holds a finished run is never written over silently. Hydra writes ``.hydra/``
(config, overrides) into the run dir before the job starts, so the check runs twice: in the Hydra
callback ``LaunchChecks`` before Hydra touches the dir, and in ``suite.training.train`` for runs
started without Hydra's launcher (tests, notebooks).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from suite.errors import ConfigError, DataError, UserError

FINISHED_MARKER = Path("metrics") / "metrics.json"
NAMED_CHECKPOINTS = ("best", "last")


def parse_overrides(items: Sequence[str]) -> list[Any]:
    """Hydra ``Override`` objects for ``key=value`` items (Hydra's grammar: ``+key=``, lists, quoting)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = []
    for item in items:
        try:
            parsed.extend(parser.parse_overrides([item]))
        except Exception as err:  # hydra's OverrideParseException: first line names the item, the rest why
            raise ConfigError(f"cannot parse override '{item}': {'; '.join(str(err).splitlines())}") from None
    return parsed


def apply_overrides(cfg: DictConfig, items: Sequence[str]) -> DictConfig:
    """Apply ``key=value`` overrides to an already composed config, in place (unknown keys need ``+``)."""
    for item, override in zip(items, parse_overrides(items), strict=True):
        key = override.key_or_group
        if override.is_sweep_override():
            raise ConfigError(f"override '{item}': a sweep (several values) cannot apply to one run; give one value")
        if override.is_delete():
            raise ConfigError(f"override '{item}': deleting a key of a trained run's config is not supported")
        value = override.value()
        # A composed config has no groups left: model=lego would replace the model section by a string.
        current = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if isinstance(current, DictConfig) and not isinstance(value, dict):
            raise ConfigError(f"override '{item}': {key} is a config section of the trained run and cannot be "
                              f"switched to another preset; override its keys instead ({key}.<name>=...)")
        try:
            OmegaConf.update(cfg, key, value, force_add=override.is_add() or override.is_force_add())
        except Exception as err:  # omegaconf ConfigAttributeError / ValidationError: first line names the key
            raise ConfigError(f"cannot apply override '{item}': {str(err).splitlines()[0]}") from None
    return cfg


@dataclass(frozen=True)
class RunDir:
    """The directory of one training run (``hydra.run.dir``, or one job of a sweep)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    # -- the standard files and folders (DESIGN.md, "A run directory holds") -----------------------
    @property
    def config_yaml(self) -> Path:
        return self.path / ".hydra" / "config.yaml"

    @property
    def hydra_yaml(self) -> Path:
        return self.path / ".hydra" / "hydra.yaml"

    @property
    def overrides_yaml(self) -> Path:
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_json(self) -> Path:
        return self.path / FINISHED_MARKER

    @property
    def predictions_csv(self) -> Path:
        return self.path / "predictions_agg.csv"

    @property
    def label_map_json(self) -> Path:
        return self.path / "label_map.json"

    @property
    def splits_json(self) -> Path:
        return self.path / "splits.json"

    @property
    def history_json(self) -> Path:
        return self.path / "training_history.json"

    @property
    def manifests_txt(self) -> Path:
        return self.path / "manifests_used.txt"

    @property
    def launch_json(self) -> Path:
        return self.path / "launch.json"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def is_finished(self) -> bool:
        """Final metrics are written last, after test: their presence means the run completed."""
        return self.metrics_json.is_file()

    # -- reading ------------------------------------------------------------------------------------
    def config(self, overrides: Sequence[str] = (), *, output_dir: str | Path | None = None,
               weights_from_checkpoint: bool = False) -> DictConfig:
        """The run's composed config (``.hydra/config.yaml``) with ``key=value`` overrides applied.

        ``paths.output_dir`` becomes ``output_dir`` (default: this run dir) and a ``${hydra:...}``
        root dir the dir the run was launched from: outside Hydra those interpolations cannot resolve.
        ``weights_from_checkpoint`` turns off ImageNet/file weights, which a checkpoint replaces anyway.
        The config is in struct mode: an override of an unknown key fails unless written ``+key=``.
        """
        cfg = self._load_config()
        with open_dict(cfg):
            if isinstance(cfg.get("paths"), DictConfig):
                raw = OmegaConf.to_container(cfg.paths, resolve=False)
                if "${hydra:" in str(raw.get("root_dir", "")):
                    cfg.paths.root_dir = str(self.launch_cwd())
                cfg.paths.output_dir = str(Path(output_dir) if output_dir is not None else self.path)
            model = cfg.get("model")
            if weights_from_checkpoint and isinstance(model, DictConfig):
                if "pretrained" in model:
                    model.pretrained = False
                if "weights" in model:
                    model.weights = None
        OmegaConf.set_struct(cfg, True)
        return apply_overrides(cfg, overrides)

    def _load_config(self) -> DictConfig:
        path = self.config_yaml
        if not self.path.is_dir():
            raise DataError(f"{self.path} is not a run directory of this suite: the folder does not exist")
        if not path.is_file():
            raise DataError(f"{self.path} is not a run directory of this suite: {path} is missing "
                            "(train.py writes it when the run starts)")
        try:
            cfg = OmegaConf.load(path)
        except Exception as err:  # yaml's scanner/parser errors, unreadable or undecodable file
            raise DataError(f"{path} cannot be read as a run config: {type(err).__name__}: "
                            f"{' '.join(str(err).split())[:300]}") from None
        if not isinstance(cfg, DictConfig):
            raise DataError(f"{path} is not a run config: it holds a {type(cfg).__name__}, not a mapping of keys")
        return cfg

    def launch_cwd(self) -> Path:
        """The folder ``train.py`` ran in (``.hydra/hydra.yaml``), else the current one."""
        try:
            recorded = OmegaConf.select(OmegaConf.load(self.hydra_yaml), "hydra.runtime.cwd", default=None)
        except Exception:  # missing or unreadable hydra.yaml: only a fallback hint, the cwd does
            recorded = None
        return Path(recorded) if recorded and Path(recorded).is_dir() else Path.cwd()

    def launch_overrides(self) -> list[str]:
        """The command-line overrides the run was launched with (``.hydra/overrides.yaml``); [] if none."""
        if not self.overrides_yaml.is_file():
            return []
        try:
            items = OmegaConf.to_container(OmegaConf.load(self.overrides_yaml))
        except Exception as err:  # yaml's scanner/parser errors
            raise DataError(f"{self.overrides_yaml} cannot be read: {type(err).__name__}") from None
        if not isinstance(items, list):
            raise DataError(f"{self.overrides_yaml} is not a list of overrides")
        return [str(item) for item in items]

    def metrics(self) -> dict[str, Any] | None:
        """``metrics/metrics.json`` of a finished run; None while the run is unfinished."""
        if not self.metrics_json.is_file():
            return None
        try:
            metrics = json.loads(self.metrics_json.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"{self.metrics_json} cannot be read: {type(err).__name__}: {err}") from None
        if not isinstance(metrics, dict):
            raise DataError(f"{self.metrics_json} is not a mapping of metric names to values")
        return metrics

    def checkpoint(self, which: str = "best") -> Path:
        """``best`` or ``last`` of this run, or a ``.ckpt`` file (absolute, relative to the current
        folder, to the run dir or to its ``checkpoints/``)."""
        if which in NAMED_CHECKPOINTS:
            path = self.checkpoints_dir / f"{which}.ckpt"
            if not path.is_file():
                raise DataError(f"no checkpoint at {path}: {self._checkpoints_held()}")
            return path
        given = Path(which).expanduser()
        candidates = [given] if given.is_absolute() else [given, self.path / given, self.checkpoints_dir / given]
        path = next((p for p in candidates if p.exists()), given)
        if path.is_dir():
            raise DataError(f"checkpoint {path} is a folder; give best, last or a .ckpt file")
        if not path.is_file():
            raise DataError(f"checkpoint not found: {path} (give best, last or a .ckpt file)")
        return path

    def _checkpoints_held(self) -> str:
        if not self.checkpoints_dir.is_dir():
            return f"{self.path} has no checkpoints/ folder (the run saved none yet)"
        names = sorted(p.name for p in self.checkpoints_dir.glob("*.ckpt"))
        return f"{self.checkpoints_dir} holds {', '.join(names)}" if names else f"{self.checkpoints_dir} is empty"


# -- the finished-run guard ------------------------------------------------------------------------
def is_finished(run_dir: Path) -> bool:
    return RunDir(run_dir).is_finished


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

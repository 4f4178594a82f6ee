"""A tiny trained run for the predictor tests that need real graphs (marked slow: they train)."""

from __future__ import annotations

from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

FAST = ["debug=fast", "model.pretrained=false", "trainer.accelerator=cpu"]


def train_tiny_run(overrides: list[str], base: Path) -> Path:
    """Train ``overrides`` + debug settings on the synthetic default under ``base`` (data in ``base/data``), with
    the ``.hydra/config.yaml`` the command line would write, so predict.py and the backends can open it."""
    from suite.training import train
    from tests.conftest import compose_train_config

    run_dir = base / "run"
    cfg = compose_train_config([*overrides, *FAST], run_dir, base / "data")
    try:
        train(cfg)
        # unresolved, as Hydra writes it: paths.output_dir must follow evaluate's --out, not stay this run's
        (run_dir / ".hydra").mkdir(exist_ok=True)
        OmegaConf.save(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), run_dir / ".hydra" / "config.yaml")
    finally:
        GlobalHydra.instance().clear()
    return run_dir

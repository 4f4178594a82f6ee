"""Shared fixtures: compose the real Hydra config of train.py with overrides, in a temp dir."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def compose_train_config(overrides: list[str], run_dir: Path, data_dir: Path | None = None) -> DictConfig:
    """The config ``python train.py <overrides>`` would get, with its run dir set to ``run_dir``.

    The ONNX export after the final test (``callbacks.onnx_export``) is off unless an override names it:
    it adds half a minute to each tiny training; the export tests turn it on.
    """
    if not any("onnx_export" in item for item in overrides):
        overrides = [*overrides, "callbacks.onnx_export.enabled=false"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(ROOT)
        cfg.hydra.job.num = 0
        if data_dir is not None:
            cfg.paths.data_dir = str(data_dir)
            cfg.paths.cache_dir = str(data_dir / "cache")
    HydraConfig().set_config(cfg)
    return cfg


def train_run(overrides: list[str], run_dir: Path, data_dir: Path | None = None) -> Path:
    """Train ``python train.py <overrides>`` into ``run_dir`` in this process, with the ``.hydra/config.yaml``
    Hydra would write, so that evaluate/export/predict can read the run dir afterwards."""
    from omegaconf import OmegaConf

    from suite.training import train

    cfg = compose_train_config(overrides, run_dir, data_dir)
    try:
        train(cfg)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved.pop("hydra", None)
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(resolved), run_dir / ".hydra" / "config.yaml")
    finally:
        GlobalHydra.instance().clear()
    return run_dir


@pytest.fixture
def make_cfg(tmp_path: Path, shared_data_dir: Path) -> Callable[..., DictConfig]:
    def _make(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
        return compose_train_config(overrides, run_dir or tmp_path / "run", shared_data_dir)

    yield _make
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic datasets are generated once per test session and shared by the tests."""
    return tmp_path_factory.mktemp("data")

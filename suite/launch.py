"""Per-job preparation under Hydra launchers (GPU slot, per-job reset, launch checks)."""

from __future__ import annotations

from omegaconf import DictConfig


def prepare_job(cfg: DictConfig) -> DictConfig:
    """Called by ``suite.training.train`` before anything is built; returns the config to use."""
    return cfg

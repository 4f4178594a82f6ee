"""Train one task: ``python train.py experiment=<name> [key=value ...]``.

Heavy libraries (torch, lightning, timm) are imported inside the task function, so that
``python train.py --help`` and ``--cfg job`` answer at once.
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from suite.errors import run_guarded
    from suite.training import train

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
        return train(cfg)  # let the launcher record the failure of this job and go on
    return run_guarded(train, cfg, log_dir=hydra_cfg.runtime.output_dir)


if __name__ == "__main__":
    main()

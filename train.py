"""Train one task: ``python train.py experiment=<name> [key=value ...]``.

Heavy libraries (torch, lightning, timm) are imported inside the task function, so that
``python train.py --help`` and ``--cfg job`` answer at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
CONF_DIR = Path(__file__).resolve().parent / "conf"


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
    from suite.config_check import check_command_line
    from suite.errors import run_cli

    # A command line Hydra cannot compose (experiment=<typo>, an unknown key) or would half-merge
    # (experiment=[a,b]) is refused before Hydra starts: exit 2 like every config error, not Hydra's 1.
    run_cli(main, before=lambda: check_command_line(sys.argv[1:], CONF_DIR))

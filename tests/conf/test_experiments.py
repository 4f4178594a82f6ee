"""Every experiment preset composes, validates, and trains + tests for a couple of batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from suite.training import train

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "experiment").glob("*.yaml"))
FAST = ["debug=fast", "model.pretrained=false", "trainer.accelerator=cpu"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_and_writes_outputs(experiment: str, make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / experiment
    cfg = make_cfg([f"experiment={experiment}", *FAST], run_dir)
    train(cfg)
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "training_history.json", "label_map.json",
                 "manifests_used.txt", "predictions_agg.csv", "metrics/metrics.json"):
        assert (run_dir / name).is_file(), f"{experiment}: missing {name}"
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    history = json.loads((run_dir / "training_history.json").read_text())
    assert len(history) == 1 and history[0]["epoch"] == 0
    metrics = json.loads((run_dir / "metrics" / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 1

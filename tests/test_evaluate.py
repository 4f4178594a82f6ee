"""evaluate.py on a trained run: its test split, bad overrides and non-run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluate import main as evaluate_main
from suite.errors import ConfigError, UserError
from suite.evaluation import evaluate
from suite.training import train

FAST = ["debug=fast", "data.synthetic_images=24", "data.synthetic_size=64", "model.log_images=0"]


@pytest.fixture
def trained_run(make_cfg, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    cfg = make_cfg(FAST, run_dir)
    train(cfg)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    from omegaconf import OmegaConf

    cfg_no_hydra = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.save(cfg_no_hydra, run_dir / ".hydra" / "config.yaml")
    return run_dir


def test_evaluate_writes_metrics_and_predictions(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    evaluate_main([str(trained_run), "data.batch_size=2", "--out", str(out)])  # the command line, best by default
    metrics = json.loads((out / "metrics" / "metrics.json").read_text())
    assert "test/f1" in metrics and 0.0 <= metrics["test/f1"] <= 1.0
    assert metrics["evaluated_checkpoint"].endswith("best.ckpt")
    rows = (out / "predictions_agg.csv").read_text().splitlines()
    assert rows[0].startswith("item_id,") and len(rows) > 1


def test_evaluate_refuses_unknown_keys_and_missing_things(trained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.batch_sise"):
        evaluate(trained_run, overrides=["data.batch_sise=2"], out_dir=tmp_path / "e1")
    with pytest.raises(UserError, match="checkpoint not found"):
        evaluate(trained_run, ckpt=str(tmp_path / "nope.ckpt"), out_dir=tmp_path / "e2")
    with pytest.raises(UserError, match="not a run directory"):
        evaluate(tmp_path / "empty", out_dir=tmp_path / "e3")
    with pytest.raises(SystemExit) as exit_info:  # through the command line: exit code 2, nothing written
        evaluate_main([str(trained_run), "--ckpt", "nope.ckpt", "--out", str(tmp_path / "e4")])
    assert exit_info.value.code == 2 and not (tmp_path / "e4").exists()

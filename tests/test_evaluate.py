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


def test_evaluate_never_writes_over_the_training_run(trained_run: Path, capsys: pytest.CaptureFixture) -> None:
    metrics_before = (trained_run / "metrics" / "metrics.json").read_text()
    predictions_before = (trained_run / "predictions_agg.csv").read_text()
    for out in (trained_run, trained_run / "metrics"):
        with pytest.raises(SystemExit) as exit_info:
            evaluate_main([str(trained_run), "--out", str(out)])
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: --out: {trained_run} is the folder of a training run" in err
    assert f"error: --out: {trained_run / 'metrics'} is part of the outputs of the training run" in err
    assert (trained_run / "metrics" / "metrics.json").read_text() == metrics_before
    assert (trained_run / "predictions_agg.csv").read_text() == predictions_before


def test_a_failed_evaluation_leaves_the_earlier_one_whole(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    evaluate(trained_run, out_dir=out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(UserError, match="checkpoint not found"):
        evaluate(trained_run, ckpt=str(tmp_path / "nope.ckpt"), out_dir=out)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("eval")) == ["eval"]  # no eval.partial

"""A run killed after epoch 1 and resumed from last.ckpt continues with the history it would have had."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from suite.errors import UserError
from suite.training import train
from tests.helpers import SimulatedCrash

SMALL = ["data.synthetic_images=24", "data.synthetic_size=64", "data.batch_size=4", "trainer.max_epochs=3",
         "trainer.num_sanity_val_steps=0", "trainer.deterministic=true", "model.log_images=0"]


def history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "training_history.json").read_text())


def test_resume_continues_the_same_history(make_cfg, tmp_path: Path) -> None:
    full_dir = tmp_path / "full"
    train(make_cfg(SMALL, full_dir))

    crashed_dir = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        train(make_cfg([*SMALL, "+callbacks.crash._target_=tests.helpers.CrashAtEpoch", "+callbacks.crash.epoch=1"],
                       crashed_dir))
    assert [r["epoch"] for r in history(crashed_dir)] == [0]
    assert not (crashed_dir / "metrics" / "metrics.json").exists()

    train(make_cfg([*SMALL, f"ckpt_path={crashed_dir / 'checkpoints' / 'last.ckpt'}"], crashed_dir))
    resumed, uninterrupted = history(crashed_dir), history(full_dir)
    assert [r["epoch"] for r in resumed] == [0, 1, 2]
    for a, b in zip(resumed, uninterrupted, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["epoch"], key)
    final_resumed = json.loads((crashed_dir / "metrics" / "metrics.json").read_text())
    final_full = json.loads((full_dir / "metrics" / "metrics.json").read_text())
    assert final_resumed["test/f1"] == pytest.approx(final_full["test/f1"], rel=1e-5, abs=1e-6)


def test_ckpt_path_last_and_finished_run_guard(make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fast = ["debug=fast", "data.synthetic_images=24", "data.synthetic_size=64", "model.log_images=0"]
    with pytest.raises(UserError, match="ckpt_path=last: no checkpoint"):
        train(make_cfg([*fast, "ckpt_path=last"], run_dir))
    train(make_cfg(fast, run_dir))
    before = (run_dir / "metrics" / "metrics.json").read_text()
    with pytest.raises(UserError, match="already holds a finished run"):
        train(make_cfg(fast, run_dir))
    assert (run_dir / "metrics" / "metrics.json").read_text() == before
    with pytest.raises(UserError, match="checkpoint not found"):
        train(make_cfg([*fast, f"ckpt_path={tmp_path / 'missing.ckpt'}"], tmp_path / "other"))


def test_resume_a_model_whose_heads_come_from_the_data(make_cfg, tmp_path: Path) -> None:
    """The lego heads are sized from the DataModule's classes: resuming must build them before the fit check."""
    fast = ["experiment=lego_multitask", "debug=fast", "trainer.max_epochs=2", "model.pretrained=false"]
    with pytest.raises(SimulatedCrash):
        train(make_cfg([*fast, "+callbacks.crash._target_=tests.helpers.CrashAtEpoch"], tmp_path / "a"))
    train(make_cfg([*fast, f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}"], tmp_path / "a"))
    assert [r["epoch"] for r in history(tmp_path / "a")] == [0, 1]


def test_same_seed_gives_bit_identical_metrics_on_cpu(make_cfg, tmp_path: Path) -> None:
    config = [*SMALL, "trainer.max_epochs=2", "seed=7"]
    for name in ("a", "b"):
        train(make_cfg(config, tmp_path / name))
    a, b = (json.loads((tmp_path / n / "metrics" / "metrics.json").read_text()) for n in ("a", "b"))
    assert {k: v for k, v in a.items() if k != "evaluated_checkpoint"} == \
        {k: v for k, v in b.items() if k != "evaluated_checkpoint"}
    assert history(tmp_path / "a") == history(tmp_path / "b")

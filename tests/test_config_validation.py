"""A wrong key or a wrong type fails before any training, naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from suite.config_check import validate_config
from suite.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_is_valid(make_cfg) -> None:
    validate_config(make_cfg([]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+data.batch_sise=4", r"unknown key 'data.batch_sise'.*did you mean 'data.batch_size'"),
        ("+model.net.backbon=resnet34", r"unknown key 'model.net.backbon'"),
        ("trainer.max_epochs=abc", r"'trainer.max_epochs' expects int \| None, got 'abc'"),
        ("data.val_fraction=high", r"'data.val_fraction' expects float"),
        ("data.augment=maybe", r"'data.augment' expects bool"),
        ("seed=one", r"'seed' expects int"),
        ("+selection_metrc=val/iou", r"unknown top-level key 'selection_metrc'.*did you mean 'selection_metric'"),
        ("model.loss.bce_weight=[1,2]", r"'model.loss.bce_weight' expects float"),
        ("+callbacks.history2._target_=callbacks.NoSuchCallback", r"callbacks.history2._target_: cannot import"),
    ],
)
def test_bad_keys_and_types_are_named(make_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(make_cfg([override]))


def test_all_errors_are_reported_together(make_cfg) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(make_cfg(["seed=x", "+data.nope=1"]))
    assert "'seed' expects int" in str(info.value) and "data.nope" in str(info.value)


def test_cli_typo_fails_fast_without_training(tmp_path: Path) -> None:
    """Through the real entry point: short message, non-zero exit, no checkpoints written."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "train.py", "trainer.max_epochs=abc", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "'trainer.max_epochs' expects int | None, got 'abc'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "checkpoints").exists()


def test_cli_unknown_override_is_refused_by_hydra(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "train.py", "data.batch_sise=4", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0 and "data.batch_sise" in proc.stderr


def test_help_answers_quickly() -> None:
    """--help must not import torch/lightning (the entry point keeps heavy imports inside main)."""
    code = ("import sys, runpy; sys.argv=['train.py','--help']\n"
            "try:\n runpy.run_path('train.py', run_name='__main__')\n"
            "except SystemExit: pass\nprint('torch' in sys.modules, 'lightning' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "False False"

"""A training process killed with SIGKILL at a random step and resumed ends with the same metrics
as an uninterrupted run of the same config (CPU, deterministic)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ["data.synthetic_images=32", "data.synthetic_size=64", "data.batch_size=4", "trainer.max_epochs=5",
          "trainer.deterministic=true", "trainer.accelerator=cpu", "model.log_images=0",
          "callbacks.progress_bar.refresh_rate=0"]


def run_train(run_dir: Path, data_dir: Path, *extra: str, wait: bool = True) -> subprocess.Popen:
    cmd = [sys.executable, "train.py", *CONFIG, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *extra]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if wait:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-2000:]
    return proc


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_gives_the_same_metrics(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    run_train(tmp_path / "full", data_dir)
    full = json.loads((tmp_path / "full" / "metrics" / "metrics.json").read_text())

    killed_dir = tmp_path / "killed"
    proc = run_train(killed_dir, data_dir, wait=False)
    last = killed_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before a checkpoint could be observed"
    time.sleep(random.Random(os.getpid()).uniform(0.0, 3.0))  # somewhere inside a later epoch
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "metrics" / "metrics.json").exists()
    epochs_done = len(json.loads((killed_dir / "training_history.json").read_text()))
    assert 1 <= epochs_done < 5

    run_train(killed_dir, data_dir, "ckpt_path=last")
    resumed = json.loads((killed_dir / "metrics" / "metrics.json").read_text())
    for key in ("test/f1", "test/iou", "test/loss", "test/accuracy", "best_val/f1"):
        assert resumed[key] == full[key], key
    history = json.loads((killed_dir / "training_history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1, 2, 3, 4]

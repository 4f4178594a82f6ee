"""Through the real entry point: bad inputs exit non-zero with one message and no half-written outputs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks.non_finite import NonFiniteLossError
from suite.training import train

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1",
                                            "PATH": "/usr/bin:/bin", **(env or {})})


def test_empty_data_folder_exits_2_naming_the_folder(tmp_path: Path) -> None:
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    run_dir = tmp_path / "run"
    proc = run_cli(f"data.root={tmp_path / 'data'}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-1000:]
    assert f"no images (png/jpg/tif/bmp) in {tmp_path / 'data' / 'images'}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "metrics").exists() and not (run_dir / "checkpoints").exists()


def test_pretrained_weights_unavailable_offline_names_both_options(tmp_path: Path) -> None:
    proc = run_cli("model.pretrained=true", "debug=fast", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert "model.weights=<file>" in proc.stderr and "model.pretrained=false" in proc.stderr


def test_missing_local_weights_file_is_named(tmp_path: Path) -> None:
    proc = run_cli(f"model.weights={tmp_path / 'resnet18.safetensors'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "model.weights: file not found" in proc.stderr


def test_logger_none_trains_without_the_learning_rate_monitor(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(["debug=fast", "data.synthetic_images=24", "data.synthetic_size=64", "model.log_images=0",
                    "logger=none"], tmp_path / "run")
    assert "lr_monitor" in str(cfg.callbacks) or "LearningRateMonitor" in str(cfg.callbacks)
    train(cfg)  # Lightning refuses LearningRateMonitor without a logger: the suite must drop it, not crash
    assert (tmp_path / "run" / "metrics" / "metrics.json").is_file()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_checkpoint_of_another_architecture_is_refused(make_cfg, tmp_path: Path) -> None:
    fast = ["debug=fast", "data.synthetic_images=24", "data.synthetic_size=64", "model.log_images=0"]
    train(make_cfg(fast, tmp_path / "a"))
    other = make_cfg([*fast, "model.net.backbone=resnet34", f"ckpt_path={tmp_path / 'a/checkpoints/last.ckpt'}"],
                     tmp_path / "b")
    from suite.errors import UserError

    with pytest.raises(UserError, match="does not fit this model"):
        train(other)
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = make_cfg(["data.synthetic_images=24", "data.synthetic_size=64", "data.batch_size=4", "trainer.max_epochs=3",
                    "model.log_images=0", "+callbacks.poison._target_=tests.helpers.PoisonWeightsAtEpoch"], run_dir)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch 0"):
        train(cfg)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 0
    assert all(math.isfinite(float(v.float().abs().sum())) for v in ckpt["state_dict"].values())
    assert not (run_dir / "metrics" / "metrics.json").exists()


def _fake_run(run_dir: Path, finished: bool) -> str:
    """A run dir as a first launch leaves it: its Hydra record, and metrics.json once it finished."""
    (run_dir / ".hydra").mkdir(parents=True)
    record = "# the first launch's config\nseed: 123\n"
    (run_dir / ".hydra" / "config.yaml").write_text(record)
    if finished:
        (run_dir / "metrics").mkdir()
        (run_dir / "metrics" / "metrics.json").write_text('{"test/f1": 0.9}')
    return record


def test_finished_run_dir_is_refused_before_hydra_rewrites_its_record(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    record = _fake_run(run_dir, finished=True)
    proc = run_cli("debug=fast", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-1000:]
    assert "already holds a finished run" in proc.stderr and "overwrite=true" in proc.stderr
    assert (run_dir / ".hydra" / "config.yaml").read_text() == record
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "metrics"]


def test_resume_keeps_the_first_launch_hydra_record(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    record = _fake_run(run_dir, finished=False)
    proc = run_cli("debug=fast", "ckpt_path=last", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2 and "ckpt_path=last: no checkpoint" in proc.stderr  # nothing to resume from
    kept = list(run_dir.glob(".hydra.before-*"))
    assert len(kept) == 1 and (kept[0] / "config.yaml").read_text() == record
    assert "ckpt_path=last" in (run_dir / ".hydra" / "overrides.yaml").read_text()


def test_sweep_into_a_dir_with_finished_jobs_is_refused(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    _fake_run(sweep_dir / "0", finished=True)
    proc = run_cli("-m", "debug=fast", "seed=1,2", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 2, proc.stderr[-1000:]
    assert "already holds 1 finished job(s) (0)" in proc.stderr
    assert not (sweep_dir / "1").exists() and not (sweep_dir / "multirun.yaml").exists()


# --- config values: exit 2 naming the key, before any data is read ------------------------------
def test_out_of_range_values_exit_2_naming_each_key_before_data_is_read(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = run_cli("selection_mode=maximum", "data.batch_size=0", "data.num_workers=-1", "trainer.max_epochs=-1",
                   f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    for message in ("'selection_mode' must be min or max, got 'maximum'", "'data.batch_size' must be > 0, got 0",
                    "'data.num_workers' must be >= 0, got -1", "'trainer.max_epochs' must be >= 1, got -1"):
        assert message in proc.stderr
    assert "Traceback" not in proc.stderr and "report it" not in proc.stderr
    assert not data_dir.exists()  # the synthetic data was not even generated


def test_unknown_experiment_exits_2_listing_the_experiments(tmp_path: Path) -> None:
    proc = run_cli("experiment=segmentaion", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "experiment=segmentaion: there is no experiment 'segmentaion' (did you mean 'segmentation'?)" in proc.stderr
    assert "intravideo, intravideo_boosted, lego_color" in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before Hydra wrote anything


def test_a_list_of_experiments_is_refused_not_merged(tmp_path: Path) -> None:
    proc = run_cli("experiment=[segmentation,lego_part]", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "experiment=[segmentation,lego_part]: pick one experiment" in proc.stderr
    assert "python train.py -m experiment=segmentation,lego_part" in proc.stderr


def test_gpu_accelerator_without_a_visible_gpu_exits_2(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = run_cli("trainer.accelerator=gpu", f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}",
                   env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "trainer.accelerator=gpu: no GPU visible to this process (CUDA_VISIBLE_DEVICES='')" in proc.stderr
    assert "use trainer=cpu" in proc.stderr and not data_dir.exists()


def test_a_value_refused_by_a_constructor_exits_2_naming_its_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = run_cli("experiment=violence_optimal", "callbacks.prediction_collapse.low=0.9999", "model.pretrained=false",
                   f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert ("error: callbacks.prediction_collapse: PredictionCollapse: need 0 <= low < high <= 1, got low=0.9999"
            in proc.stderr)
    assert not data_dir.exists()


def test_a_sweep_over_a_bad_value_is_refused_before_any_job(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", "data.batch_size=0,4", f"paths.data_dir={tmp_path / 'data'}", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "invalid sweep:\n  - 'data.batch_size' must be > 0, got 0" in proc.stderr
    assert not (sweep_dir / "0").exists() and not (sweep_dir / "1").exists()


# --- Ctrl-C ------------------------------------------------------------------------------------
class InterruptAtFirstBatch(L.Callback):
    """Ctrl-C during fit: Lightning catches the KeyboardInterrupt itself and calls sys.exit(1)."""

    def on_train_batch_start(self, *args: object) -> None:
        from suite.errors import _note_interrupt

        # a launcher that ignores Ctrl-C (nohup, a background job) passes that on: restore a terminal's
        # Ctrl-C handling, so the test checks the interrupt whatever started the test run
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, _note_interrupt)
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "multirun"])
def test_ctrl_c_during_fit_exits_130(tmp_path: Path, multirun: bool) -> None:
    launch = ["-m", "seed=1", f"hydra.sweep.dir={tmp_path / 'sweep'}"] if multirun else \
        [f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_cli(*launch, "debug=fast", "data.synthetic_images=24", "data.synthetic_size=64", "model.log_images=0",
                   f"paths.data_dir={tmp_path / 'data'}",
                   "+callbacks.interrupt._target_=tests.test_train.InterruptAtFirstBatch")
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.rstrip().endswith("interrupted")


# --- run dirs: one training at a time, output folders checked first -------------------------------
def test_a_second_training_into_a_busy_run_dir_exits_2_naming_the_holder(tmp_path: Path) -> None:
    """The race of two launches, made deterministic: another process holds the run dir while train.py starts."""
    run_dir = tmp_path / "run"
    code = ("import sys, time; from suite.run_dir import acquire_run_lock; "
            "acquire_run_lock(sys.argv[1]); print('held', flush=True); time.sleep(300)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc = run_cli("debug=fast", f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run_dir}")
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: hydra.run.dir: {run_dir} is in use by another training: pid {holder.pid} on " in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [".run.lock"]  # neither .hydra/ nor a log was written
    assert not (tmp_path / "data").exists()


def test_a_run_dir_that_cannot_be_made_exits_2_naming_hydra_run_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = run_cli("debug=fast", f"hydra.run.dir={tmp_path / 'file' / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: hydra.run.dir: {tmp_path / 'file' / 'run'} lies under {tmp_path / 'file'}, which is a file" \
        in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_cache_dir_that_is_a_file_exits_2_before_any_data_is_read(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("")
    proc = run_cli("experiment=violence_optimal", "model.pretrained=false", f"paths.cache_dir={tmp_path / 'cache'}",
                   f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: data.cache_dir (set by paths.cache_dir): {tmp_path / 'cache'} is a file" in proc.stderr
    assert not (tmp_path / "data").exists() and "Traceback" not in proc.stderr


def test_more_bad_values_exit_2_naming_each_key_before_data_is_read(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = run_cli("trainer.max_epochs=0", "data.batch_size=-3", "seed=-1", f"paths.data_dir={data_dir}",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    for message in ("'trainer.max_epochs' must be >= 1, got 0", "'data.batch_size' must be > 0, got -3",
                    "'seed' must be in [0, 2**32 - 1], got -1"):
        assert message in proc.stderr
    proc = run_cli("selection_metric=val/f2", f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run2'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "selection_metric: 'val/f2' is not logged by SegmentationModule" in proc.stderr
    assert not data_dir.exists()


# --- resume on other data ------------------------------------------------------------------------------
def _segmentation_data(root: Path, images: int) -> Path:
    from datamodules.synthetic.__main__ import main as synthetic_main

    synthetic_main(["segmentation", str(root), f"n_images={images}", "size=64"])
    return root


def test_a_resume_on_other_data_is_named_and_refused_with_on_data_change_error(make_cfg, tmp_path: Path) -> None:
    from suite.errors import DataError
    from tests.helpers import SimulatedCrash

    data = _segmentation_data(tmp_path / "data", images=24)
    run_dir = tmp_path / "run"
    # every item (no debug subset), so that the added image is named as an added source row
    small = ["debug=fast", "data.dev_samples=null", f"data.root={data}", "trainer.max_epochs=2", "model.log_images=0"]
    with pytest.raises(SimulatedCrash):
        train(make_cfg([*small, "+callbacks.crash._target_=tests.helpers.CrashAtEpoch"], run_dir))
    assert (run_dir / "data_fingerprint.json").is_file()
    splits_before = (run_dir / "splits.json").read_text()
    # the user adds an image to the data folder between the crash and the resume (another picture: a copy
    # would be dropped as a duplicate)
    from PIL import Image, ImageOps

    first = sorted((data / "images").iterdir())[0]
    ImageOps.mirror(Image.open(first)).save(data / "images" / f"added{first.suffix}")
    ImageOps.mirror(Image.open(data / "masks" / first.name)).save(data / "masks" / f"added{first.suffix}")
    with pytest.raises(DataError) as refused:
        train(make_cfg([*small, "ckpt_path=last", "on_data_change=error"], run_dir))
    message = str(refused.value)
    assert message.startswith(f"ckpt_path=last: the data differs from what this run read before ({run_dir}/")
    assert f"source changed: {data}" in message and "1 added, 0 removed" in message
    assert "set on_data_change=warn to continue anyway" in message
    assert (run_dir / "splits.json").read_text() == splits_before  # refused before anything was rewritten


def test_a_resume_on_other_data_warns_loudly_by_default(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from omegaconf import OmegaConf

    from suite.run_dir import data_fingerprint
    from suite.training import check_data_unchanged

    manifest = tmp_path / "train.csv"
    manifest.write_text("path\na.png\n")
    before = data_fingerprint([(str(manifest), 1)], {"train": ["a"]})
    (tmp_path / "data_fingerprint.json").write_text(json.dumps(before))
    manifest.write_text("path\na.png\nb.png\n")
    cfg = OmegaConf.create({"ckpt_path": "last", "on_data_change": "warn"})
    check_data_unchanged(cfg, tmp_path, data_fingerprint([(str(manifest), 2)], {"train": ["a", "b"]}),
                         {"train": ["a", "b"]})
    err = capsys.readouterr().err
    assert "WARNING: ckpt_path=last: the data differs from what this run read before" in err
    assert f"source changed: {manifest} (rows 1 -> 2" in err and "split train differs (1 -> 2 items)" in err

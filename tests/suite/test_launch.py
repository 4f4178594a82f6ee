"""GPU-slot allocation, per-job preparation and launch checks of sweeps (suite/launch.py, suite/gpu_slots.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from suite import gpu_slots
from suite.errors import ConfigError
from suite.launch import (
    LOG_FILE_REFRESH_RATE,
    LaunchChecks,
    check_launch,
    device_count,
    prepare_job,
    reset_process_state,
)
from tests.conftest import ROOT


def _as_multirun(cfg, launcher: str = "local"):
    """Turn a composed config into what a job of ``-m hydra/launcher=<launcher>`` sees."""
    from hydra.types import RunMode

    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig().set_config(cfg)
    return cfg


def _hold(slots: list[int], lock_dir: str, hold_s: float, queue) -> None:
    slot = gpu_slots.acquire(slots, lock_dir=Path(lock_dir), poll_s=0.02)
    start = time.monotonic()
    time.sleep(hold_s)
    end = time.monotonic()
    gpu_slots.release()
    queue.put((slot.index, start, end, os.getpid()))


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend GPUs for trainer.accelerator=gpu, which is refused where none is visible."""
    monkeypatch.setattr("suite.launch.visible_gpus", lambda accelerator: 2)


@pytest.fixture
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "locks"
    monkeypatch.setenv(gpu_slots.LOCK_DIR_ENV, str(path))
    yield path
    gpu_slots.release()


def test_device_count_reads_every_form_of_trainer_devices() -> None:
    assert device_count(1) == 1
    assert device_count(2) == 2
    assert device_count([3]) == 1
    assert device_count(OmegaConf.create([0, 1])) == 2
    assert device_count("0,1,2") == 3
    assert device_count("2") == 2
    assert device_count("auto") is None
    assert device_count(-1) is None


def test_concurrent_jobs_never_share_a_slot(lock_dir: Path) -> None:
    """Six jobs over two slots, from separate processes: at any time one job per slot, both slots used."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_hold, args=([0, 1], str(lock_dir), 0.3, queue)) for _ in range(6)]
    for p in procs:
        p.start()
    records = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    assert {r[0] for r in records} == {0, 1}
    for slot in (0, 1):
        spans = sorted((start, end) for s, start, end, _ in records if s == slot)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end, f"two jobs held slot {slot} at once: {spans}"


def test_a_reused_worker_gives_back_its_previous_slot(lock_dir: Path) -> None:
    first = gpu_slots.acquire([0, 1], lock_dir=lock_dir)
    second = gpu_slots.acquire([0, 1], lock_dir=lock_dir)  # next job in the same process
    assert second.index == first.index == 0
    assert os.environ[gpu_slots.SLOT_ENV] == "0"
    gpu_slots.release()
    assert gpu_slots.held() is None and gpu_slots.SLOT_ENV not in os.environ


def test_a_crashed_job_frees_its_slot(lock_dir: Path) -> None:
    code = ("import os, sys; from pathlib import Path; from suite import gpu_slots; "
            f"gpu_slots.acquire([0], lock_dir=Path({str(lock_dir)!r})); os._exit(1)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False, timeout=60)
    slot = gpu_slots.acquire([0], lock_dir=lock_dir, timeout_s=2)
    assert slot.index == 0


def test_acquire_times_out_when_every_slot_is_busy(lock_dir: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    holder = ctx.Process(target=_hold, args=([0], str(lock_dir), 2.0, queue))
    holder.start()
    time.sleep(0.5)
    with pytest.raises(TimeoutError, match="no free GPU slot"):
        gpu_slots.acquire([0], lock_dir=lock_dir, timeout_s=0.3, poll_s=0.05)
    holder.join(timeout=10)


def test_slots_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpu_slots.SLOTS_ENV, "3")
    assert gpu_slots.available_slots() == [0, 1, 2]
    monkeypatch.setenv(gpu_slots.SLOTS_ENV, "1,3")
    assert gpu_slots.available_slots() == [1, 3]


def test_prepare_job_points_the_trainer_at_its_slot(make_cfg, tmp_path: Path, lock_dir: Path, two_gpus: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpu_slots.SLOTS_ENV, "2")
    cfg = _as_multirun(make_cfg(["hydra/launcher=local", "trainer.accelerator=gpu"], tmp_path / "job"))
    # another job already holds slot 0
    other = subprocess.Popen([sys.executable, "-c", (
        "import time; from pathlib import Path; from suite import gpu_slots; "
        f"gpu_slots.acquire([0], lock_dir=Path({str(lock_dir)!r})); print('held', flush=True); time.sleep(30)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        cfg = prepare_job(cfg)
        assert list(cfg.trainer.devices) == [1]
        assert os.environ[gpu_slots.SLOT_ENV] == "1"
        assert cfg.callbacks.progress_bar.refresh_rate == 0  # parallel workers print no bar
        record = json.loads((tmp_path / "job" / "launch.json").read_text())
        assert record["gpu_slot"] == 1 and record["trainer_devices"] == [1] and record["multirun"] is True
    finally:
        other.kill()
        other.wait()


def test_prepare_job_leaves_single_runs_alone(make_cfg, tmp_path: Path, two_gpus: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpu_slots.SLOTS_ENV, "2")
    cfg = make_cfg(["trainer.accelerator=gpu"], tmp_path / "run")
    cfg = prepare_job(cfg)
    assert cfg.trainer.devices == 1
    assert gpu_slots.held() is None


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize(("tty", "expected"), [(True, 1), (False, LOG_FILE_REFRESH_RATE)])
def test_progress_bar_is_redrawn_sparsely_when_stdout_is_a_file(make_cfg, tmp_path: Path, monkeypatch, tty: bool,
                                                                expected: int) -> None:
    monkeypatch.setattr(sys, "stdout", _Stream(tty))
    cfg = prepare_job(make_cfg([], tmp_path / "run"))
    assert cfg.callbacks.progress_bar.refresh_rate == expected
    # a rate the user chose is theirs
    cfg = prepare_job(make_cfg(["callbacks.progress_bar.refresh_rate=5"], tmp_path / "run2"))
    assert cfg.callbacks.progress_bar.refresh_rate == 5


def test_reset_gives_each_job_its_share_of_threads_and_clears_caches(make_cfg, tmp_path: Path) -> None:
    import functools

    import torch

    import suite.launch as launch

    calls = []

    @functools.lru_cache
    def cached(x: int) -> int:
        calls.append(x)
        return x

    cached.__module__ = "suite.launch"  # pretend it is one of the suite's memoised functions
    launch._test_cached = cached  # type: ignore[attr-defined]
    try:
        cached(1)
        cfg = _as_multirun(make_cfg(["hydra/launcher=local", "hydra.launcher.n_jobs=1", "seed=5"], tmp_path / "j"))
        torch.set_num_threads(1)
        state = reset_process_state(cfg, HydraConfig.get())
        cached(1)
    finally:
        del launch._test_cached
    assert calls == [1, 1] and state["caches_cleared"] >= 1
    cores = len(os.sched_getaffinity(0))
    assert state["torch_threads"] == cores == torch.get_num_threads()
    assert torch.initial_seed() == 5


def test_local_multirun_refuses_ddp(make_cfg, tmp_path: Path) -> None:
    cfg = _as_multirun(make_cfg(["hydra/launcher=local", "trainer=ddp", "trainer.accelerator=cpu"], tmp_path / "j"))
    with pytest.raises(ConfigError, match="re-running the command line"):
        check_launch(cfg.trainer, cfg.hydra)
    with pytest.raises(ConfigError, match="local multirun"):
        prepare_job(cfg)


def test_single_ddp_run_is_allowed(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(["trainer=ddp", "trainer.accelerator=cpu"], tmp_path / "r")
    check_launch(cfg.trainer, cfg.hydra)  # no error
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2


@pytest.mark.parametrize(("devices", "tasks", "ok"), [(2, 2, True), (4, 2, False), (2, 1, False), (1, 1, True)])
def test_slurm_ddp_needs_one_task_per_device(make_cfg, tmp_path: Path, devices: int, tasks: int, ok: bool) -> None:
    cfg = _as_multirun(make_cfg(["hydra/launcher=slurm", "trainer=slurm", f"trainer.devices={devices}",
                                 f"hydra.launcher.tasks_per_node={tasks}", f"hydra.launcher.gpus_per_node={devices}"],
                                tmp_path / "j"))
    if ok:
        check_launch(cfg.trainer, cfg.hydra)
    else:
        with pytest.raises(ConfigError, match="tasks_per_node"):
            check_launch(cfg.trainer, cfg.hydra)


def test_slurm_check_runs_before_submission(make_cfg, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The Hydra callback stops the sweep in the submitting process (Hydra would only warn on an exception)."""
    cfg = _as_multirun(make_cfg(["hydra/launcher=slurm", "trainer=slurm", "trainer.devices=4",
                                 "hydra.launcher.tasks_per_node=1"], tmp_path / "j"))
    with pytest.raises(SystemExit) as exit_info:
        LaunchChecks().on_multirun_start(config=cfg)
    assert exit_info.value.code == 2
    assert "tasks_per_node" in capsys.readouterr().err


def test_slurm_preset_composes_with_its_keys(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(["hydra/launcher=slurm", "trainer=slurm", "hydra.launcher.partition=gpu"], tmp_path / "r")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    for key in ("partition", "gpus_per_node", "timeout_min", "mem_gb", "max_num_timeout", "tasks_per_node"):
        assert key in launcher, key
    assert launcher.partition == "gpu" and launcher.max_num_timeout > 0
    plugin = cfg.trainer.plugins[0]
    assert plugin._target_.endswith("SLURMEnvironment") and plugin.auto_requeue is False
    assert "launch_checks" in cfg.hydra.callbacks


def test_slurm_sbatch_script_carries_the_preset(make_cfg, tmp_path: Path) -> None:
    """What submitit would send to sbatch, built from the preset without a cluster."""
    from submitit.slurm.slurm import _make_sbatch_string

    cfg = make_cfg(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2",
                    "hydra.launcher.tasks_per_node=2"], tmp_path / "r")
    p = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    text = _make_sbatch_string(command="python -m submitit.core._submit x", folder=str(tmp_path / "sub"),
                               job_name="train", partition=p["partition"], gpus_per_node=p["gpus_per_node"],
                               ntasks_per_node=p["tasks_per_node"], mem=f"{p['mem_gb']}GB", time=p["timeout_min"],
                               cpus_per_task=p["cpus_per_task"], signal_delay_s=p["signal_delay_s"])
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2",
                 f"#SBATCH --time={p['timeout_min']}", f"#SBATCH --mem={p['mem_gb']}GB",
                 f"@{p['signal_delay_s']}"):
        assert line in text, line


@pytest.mark.parametrize(("launcher", "resumes"), [("slurm", True), ("submitit_local_check", True), ("local", False)])
def test_requeued_submitit_job_resumes_from_last_checkpoint(make_cfg, tmp_path: Path, launcher: str,
                                                            resumes: bool) -> None:
    run_dir = tmp_path / "job"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    cfg = _as_multirun(make_cfg([f"hydra/launcher={launcher}", "trainer.accelerator=cpu"], run_dir))
    cfg = prepare_job(cfg)
    assert (cfg.ckpt_path == "last") is resumes
    record = json.loads((run_dir / "launch.json").read_text())
    assert ("resumed_from" in record) is resumes


def test_finished_job_is_not_resumed(make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "job"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (run_dir / "metrics").mkdir()
    (run_dir / "metrics" / "metrics.json").write_text("{}")
    cfg = prepare_job(_as_multirun(make_cfg(["hydra/launcher=slurm", "trainer.accelerator=cpu"], run_dir)))
    assert cfg.ckpt_path is None


SWEEP_APP = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {root!r})
    import hydra
    import suite.launch
    from suite.launch import prepare_job

    suite.launch.visible_gpus = lambda accelerator: 2  # the pretend GPUs of SUITE_GPU_SLOTS=2

    @hydra.main(version_base="1.3", config_path={conf!r}, config_name="train")
    def main(cfg):
        started = time.time()
        suite.launch.visible_gpus = lambda accelerator: 2  # again in each joblib worker
        cfg = prepare_job(cfg)
        time.sleep(1.0)
        record = {{"seed": cfg.seed, "pid": os.getpid(), "devices": list(cfg.trainer.devices),
                   "env_slot": os.environ.get("SUITE_GPU_SLOT"), "start": started, "end": time.time()}}
        with open(os.path.join(cfg.paths.output_dir, "job.json"), "w") as fh:
            json.dump(record, fh)

    main()
""")


def test_joblib_sweep_gives_each_running_job_its_own_slot(tmp_path: Path) -> None:
    """The real joblib launcher and Hydra callback: 4 jobs, 2 workers, 2 (pretend) GPUs."""
    app = tmp_path / "app.py"
    app.write_text(SWEEP_APP.format(root=str(ROOT), conf=str(ROOT / "conf")))
    sweep = tmp_path / "sweep"
    env = {**os.environ, gpu_slots.SLOTS_ENV: "2", gpu_slots.LOCK_DIR_ENV: str(tmp_path / "locks"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(app), "-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2", "trainer.accelerator=gpu",
         "seed=1,2,3,4", f"hydra.sweep.dir={sweep}", f"paths.root_dir={ROOT}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [json.loads((sweep / str(i) / "job.json").read_text()) for i in range(4)]
    assert sorted(j["seed"] for j in jobs) == [1, 2, 3, 4]
    holds = []
    for i, job in enumerate(jobs):
        assert job["devices"] == [int(job["env_slot"])]
        launch = json.loads((sweep / str(i) / "launch.json").read_text())
        assert launch["gpu_slot"] == job["devices"][0]
        holds.append((launch["gpu_slot"], launch["slot_acquired_at"], launch["slot_released_at"]))
    assert len({j["pid"] for j in jobs}) <= 2  # the two workers were reused
    for a in holds:
        for b in holds:
            if a is not b and a[0] == b[0]:
                assert a[2] <= b[1] or b[2] <= a[1], f"two running jobs on GPU {a[0]}: {holds}"


def test_local_sweep_with_ddp_fails_before_any_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", "hydra/launcher=local", "trainer=ddp", "trainer.accelerator=cpu",
         "seed=1,2", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "cannot run inside a local multirun" in proc.stderr
    assert not (sweep / "0").exists()


def test_optuna_preset_composes(make_cfg, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = make_cfg(["hparams_search=segmentation_optuna", "experiment=segmentation"], tmp_path / "r")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize" and cfg.selection_mode == "max"
    assert sweeper.storage.startswith("sqlite:///")
    assert "model.optimizer.lr" in sweeper.params

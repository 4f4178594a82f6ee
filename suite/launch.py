"""Per-job preparation under Hydra launchers (GPU slot, per-job reset, launch checks).

``prepare_job`` runs inside every job, right after config validation and before anything is
built. ``LaunchChecks`` is a Hydra callback (registered by the launcher presets in
``conf/hydra/launcher/``) that runs the same launch checks once in the submitting process,
before any job starts or is submitted, and frees the job's GPU slot when the job ends.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from datamodules import loader_options
from suite import gpu_slots
from suite.config_check import sweep_errors, validate_config
from suite.errors import ConfigError, UserError
from suite.outputs import check_output_dir, make_output_dir
from suite.run_dir import (
    RunDir,
    acquire_run_lock,
    guard_run_dir,
    guard_sweep_dir,
    keep_previous_hydra_config,
    launch_rank,
    prepare_run_dir,
    release_run_lock,
)

log = logging.getLogger(__name__)

SLURM = "slurm"
LOCAL = "local"
GPU_ACCELERATORS = {"gpu", "cuda"}


# ---------------------------------------------------------------------------------------------
# What the Hydra config says about the launch
# ---------------------------------------------------------------------------------------------
def hydra_config() -> DictConfig | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def is_multirun(hydra_cfg: DictConfig | None) -> bool:
    mode = None if hydra_cfg is None else OmegaConf.select(hydra_cfg, "mode")
    return mode is not None and str(getattr(mode, "name", mode)) == "MULTIRUN"


def launcher_kind(hydra_cfg: DictConfig | None) -> str:
    """``slurm`` for submitit's SLURM launcher; ``local`` for joblib, submitit_local and Hydra's basic one."""
    target = str(OmegaConf.select(hydra_cfg, "launcher._target_", default="") or "") if hydra_cfg else ""
    return SLURM if target.endswith("SlurmLauncher") else LOCAL


def device_count(devices: Any) -> int | None:
    """How many devices ``trainer.devices`` asks for; None for "auto"/-1 (all there are)."""
    if isinstance(devices, ListConfig | list | tuple):
        return len(devices)
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return None if devices == -1 else devices
    text = str(devices).strip()
    if text in ("auto", "-1", ""):
        return None
    if "," in text:
        return len([t for t in text.split(",") if t.strip()])
    try:
        return int(text)
    except ValueError:
        return None


def _strategy_name(strategy: Any) -> str:
    if isinstance(strategy, DictConfig | dict):
        return str(strategy.get("_target_", ""))
    return str(strategy or "auto")


def is_distributed(trainer_cfg: DictConfig) -> bool:
    """True when the trainer runs more than one process (DDP and friends)."""
    n = device_count(trainer_cfg.get("devices", 1))
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    if (n is not None and n > 1) or nodes > 1:
        return True
    return n is None and "ddp" in _strategy_name(trainer_cfg.get("strategy")).lower()


def check_launch(trainer_cfg: DictConfig, hydra_cfg: DictConfig | None) -> None:
    """Refuse launches that cannot work, with the reason and the fix.

    - local multirun + DDP: Lightning's DDP starts its other processes by re-running
      ``sys.argv``, which for ``-m`` replays the whole sweep in every process;
    - SLURM + DDP: Lightning takes one process per SLURM task, so the launcher must start
      ``tasks_per_node == trainer.devices`` tasks (and ``nodes == trainer.num_nodes``).
    """
    if not is_multirun(hydra_cfg) or not is_distributed(trainer_cfg):
        return
    devices = trainer_cfg.get("devices")
    if launcher_kind(hydra_cfg) == LOCAL:
        raise ConfigError(
            f"trainer.devices={devices} (strategy={_strategy_name(trainer_cfg.get('strategy'))}) cannot run "
            "inside a local multirun (-m): Lightning's DDP starts its extra processes by re-running the "
            "command line, which would replay the whole sweep in each of them. Run the DDP job on its own "
            "(no -m), sweep with one device per job (trainer.devices=1; hydra/launcher=local gives each "
            "running job its own GPU), or sweep on SLURM (hydra/launcher=slurm with "
            "hydra.launcher.tasks_per_node equal to trainer.devices)."
        )
    launcher = hydra_cfg.launcher
    n = device_count(devices)
    tasks = int(launcher.get("tasks_per_node", 1) or 1)
    if n is None or n != tasks:
        raise ConfigError(
            f"SLURM DDP: trainer.devices={devices} but hydra.launcher.tasks_per_node={tasks}. Lightning runs "
            "one process per SLURM task, so set both to the same number, e.g. "
            f"trainer.devices={tasks} or hydra.launcher.tasks_per_node={n if n is not None else '<devices>'}."
        )
    nodes = int(launcher.get("nodes", 1) or 1)
    num_nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    if nodes != num_nodes:
        raise ConfigError(f"SLURM DDP: hydra.launcher.nodes={nodes} but trainer.num_nodes={num_nodes}; set both alike.")
    gpus = launcher.get("gpus_per_node")
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in GPU_ACCELERATORS and gpus is not None and int(gpus) < n:
        raise ConfigError(
            f"SLURM DDP: trainer.devices={n} GPUs per node but hydra.launcher.gpus_per_node={gpus}."
        )


def visible_gpus(accelerator: str) -> int:
    """How many devices of ``accelerator`` (gpu, cuda or mps) this process sees, counted as Lightning does."""
    from lightning.fabric.accelerators.cuda import num_cuda_devices
    from lightning.fabric.accelerators.mps import MPSAccelerator

    if accelerator == "mps" or (accelerator == "gpu" and MPSAccelerator.is_available()):
        return 1 if MPSAccelerator.is_available() else 0
    return num_cuda_devices()


def check_accelerator(trainer_cfg: DictConfig) -> None:
    """``trainer.accelerator=gpu`` (cuda, mps) needs such a device here: refused before anything is built,
    where Lightning would fail only at the trainer, after the data and model modules."""
    accelerator = str(trainer_cfg.get("accelerator", "auto")).lower()
    if accelerator not in GPU_ACCELERATORS | {"mps"}:
        return
    found = visible_gpus(accelerator)
    if found == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        note = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no GPU visible to this process{note}; use trainer=cpu "
            "(or trainer.accelerator=auto, which takes a GPU when there is one), or run on a machine with a GPU."
        )
    devices = trainer_cfg.get("devices", 1)
    wanted = device_count(devices)
    if wanted is not None and wanted > found:
        raise ConfigError(
            f"trainer.devices={devices}: {wanted} GPUs asked for, {found} visible to this process; "
            f"set trainer.devices={found} (or -1 for all of them)."
        )


def _sweep_overrides(hydra_cfg: DictConfig) -> list[str]:
    """The sweep as overrides: the command line's and a preset's ``hydra.sweeper.params``."""
    task = [str(o) for o in OmegaConf.select(hydra_cfg, "overrides.task", default=None) or []]
    params = OmegaConf.select(hydra_cfg, "sweeper.params", default=None) or {}
    return task + [f"{key}={value}" for key, value in params.items()]


def _swept_values(hydra_cfg: DictConfig, key: str) -> list[str]:
    params = OmegaConf.select(hydra_cfg, "sweeper.params", default=None) or {}
    value = params.get(key) if isinstance(params, DictConfig) else None
    if value is None:
        return []
    return [v.strip() for v in str(value).split(",")]


# ---------------------------------------------------------------------------------------------
# Per-job preparation
# ---------------------------------------------------------------------------------------------
def _clear_project_caches() -> int:
    """Clear memoised functions of the suite's own modules: reused workers must not see the last job's data."""
    root = Path(__file__).resolve().parents[1]
    cleared = 0
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or ".venv" in file or not str(Path(file).resolve()).startswith(str(root)):
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == name:
                clear()
                cleared += 1
    return cleared


def parallel_jobs(hydra_cfg: DictConfig | None) -> int:
    """How many jobs of this launch run at once on this machine's cores: joblib's ``n_jobs`` (-1: one per
    core); 1 for launchers that run one job at a time here (Hydra's basic one, SLURM: a job per allocation)."""
    target = str(OmegaConf.select(hydra_cfg, "launcher._target_", default="") or "") if hydra_cfg else ""
    if "Joblib" not in target:
        return 1
    n_jobs = int(OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=1) or 1)
    return loader_options.available_cores() if n_jobs < 0 else max(1, n_jobs)


def _torch_threads(hydra_cfg: DictConfig | None) -> int | None:
    """Joblib workers start with one thread; give each job its share of the cores instead (the job's loader
    workers come out of the same share: datamodules/loader_options.py)."""
    target = str(OmegaConf.select(hydra_cfg, "launcher._target_", default="") or "") if hydra_cfg else ""
    if "Joblib" not in target:
        return None
    return loader_options.core_share(jobs=parallel_jobs(hydra_cfg))


def reset_process_state(cfg: DictConfig, hydra_cfg: DictConfig | None) -> dict[str, Any]:
    """Undo what a previous job left in a reused worker: seeds, caches, threads, GPU memory."""
    import random

    import numpy as np
    import torch

    state: dict[str, Any] = {"caches_cleared": _clear_project_caches()}
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    jobs = parallel_jobs(hydra_cfg)
    loader_options.set_launch_share(jobs)  # loaders of this job take workers out of its share only
    threads = _torch_threads(hydra_cfg)
    if threads is not None:
        torch.set_num_threads(threads)
    state["torch_threads"] = torch.get_num_threads()
    state["parallel_jobs"] = jobs
    state["core_share"] = loader_options.core_share()
    if jobs > 1:
        print(f"{jobs} jobs at once on {loader_options.available_cores()} core(s): this job keeps to "
              f"{state['core_share']} (torch threads and data loader workers together)")
    # train() seeds again with Lightning; seeding here too covers anything built before that.
    seed = int(cfg.get("seed", 0))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    for key in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        os.environ.pop(key, None)
    return state


def _accelerator_uses_gpu(accelerator: str) -> bool:
    if accelerator in GPU_ACCELERATORS:
        return True
    if accelerator != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def assign_gpu_slot(cfg: DictConfig, hydra_cfg: DictConfig | None) -> dict[str, Any] | None:
    """In a local multirun, hold a free GPU slot for this job and point the trainer at it."""
    if not is_multirun(hydra_cfg) or launcher_kind(hydra_cfg) != LOCAL:
        return None
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator not in GPU_ACCELERATORS | {"auto"}:
        return None
    slots = gpu_slots.available_slots()
    if not slots:
        return None
    t0 = time.monotonic()
    slot = gpu_slots.acquire(slots)
    info: dict[str, Any] = {"gpu_slot": slot.index, "slots": slots, "waited_s": round(time.monotonic() - t0, 3),
                            "lock": str(slot.path), "slot_acquired_at": slot.acquired_at}
    if _accelerator_uses_gpu(accelerator):
        # devices=[i] rather than CUDA_VISIBLE_DEVICES: a reused worker may already have started CUDA.
        with open_dict(cfg):
            cfg.trainer.devices = [slot.index]
        info["trainer_devices"] = [slot.index]
    else:
        info["trainer_devices"] = OmegaConf.to_container(cfg.trainer, resolve=False).get("devices")
        info["note"] = "no CUDA here: slot held, trainer left on its configured devices"
    log.info("job %s holds GPU slot %s", OmegaConf.select(hydra_cfg, "job.num"), slot.index)
    return info


def is_submitit(hydra_cfg: DictConfig | None) -> bool:
    target = str(OmegaConf.select(hydra_cfg, "launcher._target_", default="") or "") if hydra_cfg else ""
    return "submitit" in target


def resume_after_requeue(cfg: DictConfig, hydra_cfg: DictConfig | None) -> str | None:
    """A job that timed out or was preempted is resubmitted by submitit (SLURM or local): resume its last.ckpt.

    In a submitit sweep, a job dir holding last.ckpt but no metrics can only be that job's earlier attempt.
    """
    if not is_submitit(hydra_cfg) or cfg.get("ckpt_path") is not None:
        return None
    run = RunDir(Path(cfg.paths.output_dir))
    if run.is_finished:
        return None
    try:
        last = run.checkpoint("last")
    except UserError:  # no last.ckpt: the job's first attempt, nothing to resume
        return None
    with open_dict(cfg):
        cfg.ckpt_path = "last"
    log.info("resuming requeued job from %s", last)
    return str(last)


def check_slurm_tasks(cfg: DictConfig) -> None:
    """Inside a SLURM job: the tasks SLURM started must match the trainer's processes."""
    tasks = os.environ.get("SLURM_NTASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE", "").split("(")[0]
    n = device_count(cfg.trainer.get("devices", 1))
    if tasks and tasks.isdigit() and n is not None and is_distributed(cfg.trainer) and int(tasks) != n:
        raise ConfigError(f"SLURM started {tasks} tasks per node but trainer.devices={n}; they must match.")


# A bar redrawn every batch fills a log file with megabytes of carriage returns (SLURM logs, CI).
LOG_FILE_REFRESH_RATE = 50


def _fit_progress_bar_to_output(cfg: DictConfig, hydra_cfg: DictConfig | None) -> None:
    """Parallel sweep workers: no bar (their bars interleave into noise; the per-epoch summary line
    stays). Stdout going to a file: redraw every LOG_FILE_REFRESH_RATE batches, unless the user chose a rate."""
    bar = OmegaConf.select(cfg, "callbacks.progress_bar")
    if not isinstance(bar, DictConfig) or "refresh_rate" not in bar:
        return
    if is_multirun(hydra_cfg):
        bar.refresh_rate = 0
    elif bar.refresh_rate == 1 and not sys.stdout.isatty():
        bar.refresh_rate = LOG_FILE_REFRESH_RATE


def prepare_job(cfg: DictConfig) -> DictConfig:
    """Called by ``suite.training.train`` before anything is built; returns the config to use."""
    hydra_cfg = hydra_config()
    check_accelerator(cfg.trainer)
    check_launch(cfg.trainer, hydra_cfg)
    if launcher_kind(hydra_cfg) == SLURM:
        check_slurm_tasks(cfg)
    record: dict[str, Any] = {
        "host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
        "launcher": str(OmegaConf.select(hydra_cfg, "launcher._target_", default="") or "") if hydra_cfg else "",
        "job_num": OmegaConf.select(hydra_cfg, "job.num") if hydra_cfg else None,
        "multirun": is_multirun(hydra_cfg),
    }
    _fit_progress_bar_to_output(cfg, hydra_cfg)
    if not is_multirun(hydra_cfg):
        return cfg
    record.update(reset_process_state(cfg, hydra_cfg))
    slot = assign_gpu_slot(cfg, hydra_cfg)
    if slot:
        record.update(slot)
    resumed = resume_after_requeue(cfg, hydra_cfg)
    if resumed:
        record["resumed_from"] = resumed
    record["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    record["slurm_job_id"] = os.environ.get("SLURM_JOB_ID")
    from suite.io import atomic_write_json

    atomic_write_json(Path(cfg.paths.output_dir) / "launch.json", record)
    return cfg


def job_finished(output_dir: str | Path) -> None:
    """Free the job's GPU slot and stamp its end time (the Hydra callback calls this)."""
    slot = gpu_slots.held()
    # Stamped while the lock is still held: [slot_acquired_at, slot_released_at] of two jobs on
    # one slot can then never overlap, whatever the scheduler does between the two calls.
    released_at = time.time()
    gpu_slots.release()
    path = Path(output_dir) / "launch.json"
    if slot is not None and path.is_file():
        from suite.io import atomic_write_json

        record = json.loads(path.read_text())
        record.update(slot_released_at=released_at, finished=time.time())
        atomic_write_json(path, record)


try:  # Hydra is always installed with the suite; keep the import local to this optional hook.
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[assignment,misc]


def _refuse(err: Exception) -> None:
    # Hydra turns exceptions raised by callbacks into warnings; a refused launch must stop here.
    print(f"\nerror: {err}", file=sys.stderr)
    raise SystemExit(2) from None


class LaunchChecks(_HydraCallback):
    """Hydra callback: checks before Hydra writes anything or a sweep starts; frees the GPU slot after a job."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra creates the run dir, opens its log file and saves .hydra/ before the job starts: the dir is
        # checked, locked for the run's lifetime and cleared of an earlier run's files before that.
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        if launch_rank() > 0:  # DDP's extra processes run in rank 0's dir, which rank 0 holds
            return
        try:
            # config values first: a refused value writes nothing (no .hydra/, no log) into the run dir
            validate_config(config)
            guard_run_dir(run_dir, config)  # a finished run is refused without a file written
            make_output_dir(run_dir, "hydra.run.dir")
            note = acquire_run_lock(run_dir, "hydra.run.dir")
            if note:
                print(note, file=sys.stderr)
            prepare_run_dir(run_dir, config)
        except UserError as err:
            _refuse(err)
        kept = keep_previous_hydra_config(run_dir, OmegaConf.select(config, "hydra.output_subdir"))
        if kept is not None:
            print(f"kept the run's previous Hydra config in {kept}", file=sys.stderr)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_run_lock(Path(str(OmegaConf.select(config, "hydra.run.dir"))))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra_cfg = config.hydra
        trainer_cfg = config.trainer
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        try:
            check_output_dir(sweep_dir, "hydra.sweep.dir")
            guard_sweep_dir(sweep_dir, config)
            # Config values every job shares, and each swept value, are refused once before any job starts.
            validate_config(config)
            errors = sweep_errors(_sweep_overrides(hydra_cfg))
            if errors:
                raise ConfigError("invalid sweep:\n  - " + "\n  - ".join(errors))
            if launcher_kind(hydra_cfg) == LOCAL:  # SLURM jobs run elsewhere: they check their own GPUs
                check_accelerator(trainer_cfg)
            check_launch(trainer_cfg, hydra_cfg)
            # A sweep over trainer.devices is checked value by value.
            for value in _swept_values(hydra_cfg, "trainer.devices"):
                check_launch(OmegaConf.merge(trainer_cfg, {"devices": _parse(value)}), hydra_cfg)
            # two sweeps into one sweep dir would share job dirs: the dir is held while the sweep runs
            make_output_dir(sweep_dir, "hydra.sweep.dir")
            note = acquire_run_lock(sweep_dir, "hydra.sweep.dir")
            if note:
                print(note, file=sys.stderr)
        except UserError as err:
            _refuse(err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_run_lock(Path(str(OmegaConf.select(config, "hydra.sweep.dir"))))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        job_finished(config.hydra.runtime.output_dir)


def _parse(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        return value


"""datamodules.loader_options: the worker policy, explicit values, tiny loaders, the sweep share; workers
load the same batches as the main process; decoder threads do not change the frames."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from datamodules import loader_options, video
from datamodules.loader_options import MIN_BATCHES_FOR_WORKERS, core_share, resolve
from suite.errors import ConfigError


@pytest.fixture(autouse=True)
def _one_job():
    """Each test starts as a plain run (one job on the machine) and leaves it so."""
    loader_options.set_launch_share(1)
    yield
    loader_options.set_launch_share(1)
    video.set_decode_threads(1)


def test_cores_come_from_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader_options.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    assert loader_options.available_cores() == 6
    assert core_share() == 6


def test_share_divides_cores_between_jobs_and_trainer_processes() -> None:
    assert core_share(cores=16, jobs=4) == 4
    assert core_share(cores=16, jobs=2, processes=2) == 4  # two sweep jobs, each a 2-process DDP
    assert core_share(cores=2, jobs=4) == 1  # never zero
    loader_options.set_launch_share(8)
    assert core_share(cores=16) == 2


def test_gpu_step_gives_the_share_but_one_core_to_workers() -> None:
    opts = resolve("auto", "auto", batches=100, on_cuda=True, share=16, torch_threads=8)
    assert opts.num_workers == loader_options.MAX_WORKERS and opts.pin_memory is True
    assert opts.decode_threads == 1 and opts.torch_threads is None
    assert not opts.persistent_workers  # a resumed run must draw the workers' seeds as the uninterrupted one
    assert resolve("auto", batches=100, on_cuda=True, share=4, torch_threads=4).num_workers == 3


def test_cpu_step_splits_the_share_and_lowers_torch_threads_to_fit() -> None:
    opts = resolve("auto", "auto", batches=100, on_cuda=False, share=8, torch_threads=8)
    assert opts.num_workers == 2 and opts.pin_memory is False
    assert opts.torch_threads == 6  # workers + torch threads == the share: no oversubscription
    # threads that already fit are left alone
    assert resolve("auto", batches=100, share=8, torch_threads=4).torch_threads is None
    # on fewer than 4 cores one worker loads beside the step, which keeps its threads (measured faster)
    small = resolve("auto", batches=100, share=2, torch_threads=2)
    assert small.num_workers == 1 and small.torch_threads is None
    assert resolve("auto", batches=100, share=4, torch_threads=4).num_workers == 1


def test_prefetch_keeps_about_four_batches_in_flight() -> None:
    assert resolve(1, share=8, torch_threads=1).prefetch_factor == 4
    assert resolve(2, share=8, torch_threads=1).prefetch_factor == 2
    assert resolve(8, share=8, torch_threads=1).prefetch_factor == 2
    assert resolve(0, share=8, torch_threads=1).prefetch_factor is None


def test_explicit_values_win() -> None:
    opts = resolve(3, True, batches=2, on_cuda=False, share=1, torch_threads=1, dev_mode=True)
    assert opts.num_workers == 3 and opts.pin_memory is True and opts.reason == "data.num_workers as set"
    assert resolve(0, False, batches=1000, on_cuda=True, share=16, torch_threads=1).num_workers == 0
    assert resolve(0, False, on_cuda=True, share=16, torch_threads=1).pin_memory is False
    assert resolve("4", share=2, torch_threads=1).num_workers == 4  # a count given as text (an env override)


def test_tiny_loaders_dev_mode_and_a_single_core_load_in_the_main_process() -> None:
    assert resolve("auto", batches=MIN_BATCHES_FOR_WORKERS - 1, share=16, torch_threads=1).num_workers == 0
    assert resolve("auto", batches=MIN_BATCHES_FOR_WORKERS, share=16, torch_threads=1,
                   on_cuda=True).num_workers == MIN_BATCHES_FOR_WORKERS
    assert resolve("auto", batches=1000, share=16, torch_threads=1, dev_mode=True).num_workers == 0
    assert resolve("auto", batches=1000, share=1, torch_threads=1, on_cuda=True).num_workers == 0
    # without workers the main process decodes with its whole share
    assert resolve("auto", batches=2, share=6, torch_threads=6).decode_threads == 6


@pytest.mark.parametrize("value", [-1, "many", 1.5, True])
def test_bad_values_are_config_errors_naming_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match="data.num_workers"):
        resolve(value, share=2, torch_threads=1)


def test_bad_pin_memory_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data.pin_memory"):
        resolve(0, "sometimes", share=2, torch_threads=1)


def test_datamodule_refuses_a_bad_value_before_reading_data(tmp_path: Path) -> None:
    from datamodules.behavior import BehaviorDataModule

    with pytest.raises(ConfigError, match="data.num_workers"):
        BehaviorDataModule(synthetic_dir=str(tmp_path), num_workers="lots")


def _batches(loader) -> list[dict]:  # noqa: ANN001
    return [{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)} for batch in loader]


def test_workers_load_the_same_batches_as_the_main_process(tmp_path: Path) -> None:
    """Behavior validation and test loaders (TTA clips decoded from video): 2 forked workers == no workers."""
    import cv2

    from datamodules.behavior import BehaviorDataModule

    # the parent's OpenCV pool running several threads before the fork (as motion precomputation leaves it):
    # a worker resizing that pool hung for good; the loader sets it to one thread before forking
    cv2.setNumThreads(2)
    cv2.GaussianBlur(np.zeros((512, 512, 3), np.uint8), (15, 15), 0)
    got = {}
    for workers in (0, 2):
        dm = BehaviorDataModule(synthetic_dir=str(tmp_path), batch_size=2, num_workers=workers,
                                synthetic={"cameras": 3, "test_cameras": 1, "videos_per_camera": 1,
                                           "events_per_video": 4, "tail_cameras": 1})
        dm.prepare_data()
        dm.setup("fit")
        got[workers] = _batches(dm.val_dataloader()) + _batches(dm.test_dataloader())
    assert len(got[0]) == len(got[2]) > 2
    assert cv2.getNumThreads() == 1
    for main, worker in zip(got[0], got[2], strict=True):
        assert main.keys() == worker.keys()
        for key in main:
            assert torch.equal(main[key], worker[key]), key


def test_auto_on_a_tiny_loader_uses_no_workers(tmp_path: Path) -> None:
    from datamodules.behavior import BehaviorDataModule

    dm = BehaviorDataModule(synthetic_dir=str(tmp_path), batch_size=64, num_workers="auto", pin_memory="auto",
                            synthetic={"cameras": 3, "test_cameras": 1, "videos_per_camera": 1,
                                       "events_per_video": 4, "tail_cameras": 1})
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.val_dataloader()
    assert loader.num_workers == 0 and loader.pin_memory is False


def _noise_video(path: Path, n: int = 40, size: int = 96) -> Path:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    return video.write_mp4(path, frames, fps=10)


def test_decoder_threads_do_not_change_the_frames(tmp_path: Path) -> None:
    path = _noise_video(tmp_path / "v.mp4")
    indices = [3, 17, 17, 30, 39]
    video.set_decode_threads(1)
    single = video.read_frames(path, indices, size=(64, 64))
    video.set_decode_threads(4)
    threaded = video.read_frames(path, indices, size=(64, 64))
    assert np.array_equal(single, threaded)
    with av.open(str(path)) as container:  # the setting reaches the decoder
        stream = container.streams.video[0]
        video._set_threads(stream)
        assert stream.codec_context.thread_count == 4


# -- the sweep share (suite/launch.py prepare_job) ---------------------------------------------------
def _as_multirun(cfg):  # noqa: ANN001, ANN202
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig().set_config(cfg)
    return cfg


def test_sweep_jobs_share_the_cores(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from hydra.core.hydra_config import HydraConfig

    from suite.launch import reset_process_state

    monkeypatch.setattr(loader_options.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    threads = torch.get_num_threads()
    try:
        cfg = _as_multirun(make_cfg(["hydra/launcher=local", "hydra.launcher.n_jobs=4"], tmp_path / "j"))
        state = reset_process_state(cfg, HydraConfig.get())
        assert state["parallel_jobs"] == 4 and state["core_share"] == 2
        assert torch.get_num_threads() == 2
        assert "4 jobs at once on 8 core(s): this job keeps to 2" in capsys.readouterr().out
        # the job's loaders take their workers out of the same 2 cores: on a GPU step 1 worker, on a CPU step
        # none (the step keeps both cores)
        assert resolve("auto", batches=100, on_cuda=True).num_workers == 1
        opts = resolve("auto", batches=100)
        assert opts.share == 2 and opts.num_workers == 0 and opts.torch_threads is None
        # n_jobs=-1: one job per core, so each keeps to one core and loads in its main process
        cfg = _as_multirun(make_cfg(["hydra/launcher=local", "hydra.launcher.n_jobs=-1"], tmp_path / "k"))
        assert reset_process_state(cfg, HydraConfig.get())["core_share"] == 1
        assert resolve("auto", batches=100, on_cuda=True).num_workers == 0
    finally:
        torch.set_num_threads(threads)

"""TensorBoard event files read back with tensorboard's own reader: the tags a sweep dashboard relies on."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from suite.training import train
from tests.conf.test_experiments import EXPERIMENTS, FAST

# Scalars other than train/, val/, test/ that Lightning itself writes.
LIGHTNING_SCALARS = {"epoch"}


def read_tags(run_dir: Path) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert files, f"no event files under {run_dir / 'tensorboard'}"
    tags: dict[str, set[str]] = {}
    for file in files:
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
        acc.Reload()
        for kind, names in acc.Tags().items():
            if isinstance(names, list):
                tags.setdefault(kind, set()).update(names)
        for plugin in ("hparams", "pr_curves"):
            try:
                tags.setdefault(plugin, set()).update(acc.PluginTagToContent(plugin))
            except KeyError:  # the plugin wrote nothing to this file
                tags.setdefault(plugin, set())
    return {k: sorted(v) for k, v in tags.items()}


def check_common_tags(tags: dict[str, list[str]], name: str) -> None:
    scalars = tags.get("scalars", [])
    for prefix in ("train/", "val/", "test/"):
        assert any(t.startswith(prefix) for t in scalars), f"{name}: no {prefix}* scalar in {scalars}"
    assert "train/loss" in scalars and "val/loss" in scalars, f"{name}: losses missing"
    assert any(t.startswith("lr-") for t in scalars), f"{name}: no learning-rate scalar (LearningRateMonitor)"
    # HPARAMS tab: the config with the final metrics, so a sweep's runs can be compared there
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(tags.get("hparams", [])), name


def live_event_writers() -> int:
    return sum(type(t).__name__ == "_AsyncWriterThread" and t.is_alive() for t in threading.enumerate())


def test_segmentation_dashboard_tags(make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "seg"
    writers_before = live_event_writers()
    train(make_cfg(["experiment=segmentation", *FAST], run_dir))
    # the test-stage events are flushed and the writer closed when train() returns
    assert live_event_writers() == writers_before
    tags = read_tags(run_dir)
    check_common_tags(tags, "segmentation")
    scalars = set(tags["scalars"])
    for metric in ("precision", "recall", "f1", "iou", "accuracy"):
        assert {f"train/{metric}", f"val/{metric}", f"test/{metric}"} <= scalars, metric
    stray = {t for t in scalars
             if not t.startswith(("train/", "val/", "test/", "lr-", "best_")) and t not in LIGHTNING_SCALARS}
    assert not stray, f"scalars outside the train/ val/ test/ naming scheme: {sorted(stray)}"
    assert "val/overlays" in tags.get("images", []), "sample predictions per epoch"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_logs_the_common_tags(experiment: str, make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / experiment
    train(make_cfg([f"experiment={experiment}", *FAST], run_dir))
    tags = read_tags(run_dir)
    check_common_tags(tags, experiment)
    # a confusion matrix or sample predictions per epoch
    assert tags.get("images"), f"{experiment}: no image (confusion matrix / samples) logged"


def test_confusion_matrix_and_pr_curve_panels(tmp_path: Path) -> None:
    """callbacks.tensorboard_panels on a binary task's validation outputs, read back from the event file."""
    from types import SimpleNamespace

    import torch
    from lightning.pytorch.loggers import TensorBoardLogger

    from callbacks.tensorboard_panels import TensorBoardPanels
    from suite.contracts import StepOutput

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="")
    trainer = SimpleNamespace(sanity_checking=False, world_size=1, is_global_zero=True, loggers=[logger],
                              current_epoch=0)
    panels = TensorBoardPanels(class_names=["normal", "tail"])
    panels.on_validation_epoch_start(trainer, None)
    prob = torch.tensor([0.1, 0.8, 0.6, 0.3, 0.9, 0.2])
    target = torch.tensor([0, 1, 0, 1, 1, 0])
    output = StepOutput(preds=(prob > 0.5).long(), target=target, prob=torch.stack([1 - prob, prob], 1))
    panels.on_validation_batch_end(trainer, None, output, None, 0)
    panels.on_validation_epoch_end(trainer, None)
    logger.experiment.flush()
    tags = read_tags(tmp_path)
    assert "val/confusion_matrix" in tags["images"]
    assert "val/pr_curve" in tags["pr_curves"]

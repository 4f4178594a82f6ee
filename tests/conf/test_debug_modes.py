"""debug=fast and debug=dev bound what a run reads: the subset is taken before extraction, motion masks and
decoding, so a wiring check costs the items of its few batches whatever the size of the data."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "experiment").glob("*.yaml"))
LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches")


def batches_read(cfg: DictConfig) -> int:
    """Items the limited loaders of one debug=fast epoch can read at most."""
    return int(cfg.data.batch_size) * sum(int(cfg.trainer[key]) for key in LIMITS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_subset_is_no_larger_than_its_batches(experiment: str, make_cfg) -> None:
    cfg = make_cfg([f"experiment={experiment}", "debug=fast"])
    assert cfg.trainer.max_epochs == 1
    assert cfg.data.dev_samples is not None
    # an experiment's own batch size or subset must not undo the debug bound (debug comes last)
    assert 0 < cfg.data.dev_samples <= batches_read(cfg)


def test_dev_mode_keeps_the_seed_subset(make_cfg) -> None:
    cfg = make_cfg(["experiment=violence_failed", "debug=dev"])
    assert cfg.data.dev_samples == 100
    assert cfg.trainer.max_epochs > 1  # dev mode trains for real, on the subset


def test_violence_fast_extracts_only_the_videos_of_its_batches(make_cfg) -> None:
    # the failed preset: 10 copies of each training video, the trap debug=fast must not fall into
    cfg = make_cfg(["experiment=violence_failed", "debug=fast", "data.synthetic_videos={train: 16, val: 8, test: 8}"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    bound = batches_read(cfg)
    report = dm.extraction
    assert not report.skipped
    assert report.videos_decoded <= bound and report.sequences_written <= bound
    assert report.sequences_written == sum(len(dm.split(name)) for name in ("train", "val", "test"))
    train = dm.dataset("train")
    assert len(train) == len(dm.split("train"))
    assert len({copy for copy, _, _ in train.items}) > 1  # the augmented copies are still read
    assert {item.label for _, _, item in train.items} == {0, 1}


def test_relevance_fast_computes_motion_of_the_subset_only(make_cfg) -> None:
    cfg = make_cfg(["experiment=relevance_segmentation", "debug=fast"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    subset = {e.event_id for name in ("train", "val", "test") for e in dm.split(name)}
    assert len(subset) <= batches_read(cfg)
    assert set(dm.motion) == subset

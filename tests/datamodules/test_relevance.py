"""Relevance data: event discovery, sequence cutting, triplet sampling, bad inputs, the spec and split
of both phases, and the deprecated ``data.mode``."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datamodules.relevance import (
    MaskDataset,
    RelevanceContrastiveDataModule,
    RelevanceDataModule,
    RelevanceSegmentationDataModule,
    TripletDataset,
    discover_events,
    frame_transform,
    preprocess_frame,
)
from datamodules.synthetic.relevance import GENERATOR
from suite.backbones import IMAGENET_MEAN
from suite.errors import ConfigError, DataError


def _write_event(folder: Path, n: int, size: tuple[int, int] = (48, 64)) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(str(folder)))
    for t in range(n):
        cv2.imwrite(str(folder / f"f{t:03d}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return GENERATOR.ensure(tmp_path_factory.mktemp("rel") / "syn", 0, cameras=2, events_per_camera=6, frames=6,
                            width=96, height=72)


def test_triplet_negative_never_from_anchor_event(synthetic_root: Path) -> None:
    events = discover_events(synthetic_root, 16)
    ds = TripletDataset(events, frame_transform(32))
    for index in range(len(events)):
        for _ in range(30):
            a, p, neg, nf = ds.sample(index)
            assert neg != index and a != p
            assert 0 <= nf < len(events[neg].frames)


def test_triplet_needs_two_events(synthetic_root: Path) -> None:
    events = discover_events(synthetic_root, 16)[:1]
    with pytest.raises(DataError, match="at least 2 events"):
        TripletDataset(events, frame_transform(32))


def test_synthetic_layout_labels_and_truth(synthetic_root: Path) -> None:
    dm = RelevanceSegmentationDataModule(root=str(synthetic_root), image_size=64, cache_dir=None)
    dm.setup("fit")
    events = [e for split in dm.splits.values() for e in split]
    assert len(events) == 12
    assert {e.relevant for e in events} == {0, 1}
    assert all(e.truth is not None for e in events)
    item = dm.dataset("train")[0]
    assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)


def test_synthetic_object_size_sets_the_truth_area(tmp_path: Path) -> None:
    def truth_area(folder: Path, object_size: list[float]) -> float:
        root = GENERATOR.ensure(folder, 0, cameras=1, events_per_camera=4, frames=4, width=96, height=72,
                                object_size=object_size)
        truths = [cv2.imread(str(t), 0) > 0 for t in sorted((root / "_truth").rglob("*.png"))]
        return float(np.mean([t.mean() for t in truths if t.any()]))

    small, large = truth_area(tmp_path / "small", [0.06, 0.1]), truth_area(tmp_path / "large", [0.25, 0.4])
    assert small < large / 4, (small, large)


@pytest.mark.parametrize("object_size", [[0.4, 0.25], [0.0, 0.1], [0.2], "small"])
def test_synthetic_object_size_is_checked(object_size, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="object_size="):
        RelevanceSegmentationDataModule(synthetic_dir=str(tmp_path), synthetic_object_size=object_size)


def test_synthetic_object_size_key_reaches_the_generator(tmp_path: Path) -> None:
    for cls in (RelevanceSegmentationDataModule, RelevanceContrastiveDataModule):
        _, params = cls(synthetic_dir=str(tmp_path), synthetic_object_size=(0.06, 0.1)).synthetic()
        assert params["object_size"] == [0.06, 0.1]


def test_cameras_filter_and_max_sequences(synthetic_root: Path) -> None:
    dm = RelevanceSegmentationDataModule(root=str(synthetic_root), cameras=["cam01"], max_sequences=4, cache_dir=None)
    dm.setup("fit")
    events = [e for split in dm.splits.values() for e in split]
    assert len(events) == 4 and {e.camera for e in events} == {"cam01"}
    with pytest.raises(DataError, match="camX"):
        RelevanceSegmentationDataModule(root=str(synthetic_root), cameras=["camX"]).setup("fit")


def test_long_sequence_is_cut_into_events(tmp_path: Path) -> None:
    _write_event(tmp_path / "Seq" / "input", 37)
    events = discover_events(tmp_path, 8)
    assert [len(e.frames) for e in events] == [8, 8, 8, 8, 5]
    assert all(e.sequence for e in events)
    # a trailing single frame joins the previous event
    assert [len(e.frames) for e in discover_events(tmp_path, 12)] == [12, 12, 13]


def test_event_with_one_frame_is_an_error(tmp_path: Path) -> None:
    _write_event(tmp_path / "cam" / "e1", 3)
    _write_event(tmp_path / "cam" / "e2", 1)
    with pytest.raises(DataError, match="e2 has only one frame"):
        discover_events(tmp_path, 16)


def test_unreadable_frame_and_size_mismatch_fail_in_setup(tmp_path: Path) -> None:
    for i in range(3):
        _write_event(tmp_path / "cam" / f"e{i}", 3)
    (tmp_path / "cam" / "e1" / "f001.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="f001.png"):
        RelevanceSegmentationDataModule(root=str(tmp_path), cache_dir=None).setup("fit")
    _write_event(tmp_path / "cam2" / "e0", 2)
    (tmp_path / "cam" / "e1" / "f001.png").unlink()
    cv2.imwrite(str(tmp_path / "cam2" / "e0" / "f009.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DataError, match="differ in size"):
        RelevanceSegmentationDataModule(root=str(tmp_path), cache_dir=None).setup("fit")


def test_labels_make_irrelevant_events_empty_targets(synthetic_root: Path) -> None:
    dm = RelevanceSegmentationDataModule(root=str(synthetic_root), image_size=48, use_labels=True, augment=False,
                                         cache_dir=None)
    dm.setup("fit")
    events = [e for split in dm.splits.values() for e in split]
    motion = dm.motion_for(events)
    transform = frame_transform(48)
    labelled = MaskDataset(events, motion, transform, train=False, use_labels=True)
    plain = MaskDataset(events, motion, transform, train=False, use_labels=False)
    checked = 0
    for i, (event, result) in enumerate(zip(events, motion, strict=True)):
        if event.relevant == 0 and result.frame_masks[len(event.frames) // 2].any():
            assert labelled[i]["mask"].sum() == 0
            assert plain[i]["mask"].sum() > 0  # without labels the motion stays the target
            checked += 1
        elif event.relevant == 1:
            assert torch.equal(labelled[i]["mask"], plain[i]["mask"])
    assert checked > 0


def test_labels_csv_bad_value_names_the_row(tmp_path: Path, synthetic_root: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("event_id,relevant\ncam00/event0000,yes\n")
    with pytest.raises(DataError, match="labels.csv, line 2: relevant must be 0 or 1, got 'yes'"):
        RelevanceSegmentationDataModule(root=str(synthetic_root), labels_csv=str(bad), cache_dir=None).setup("fit")
    # one event labelled twice with two values: both lines named
    bad.write_text("event_id,relevant\ncam00/event0000,1\ncam00/event0000,0.0\n")
    with pytest.raises(DataError, match=r"line 3: event cam00/event0000 is labelled 0 here and 1 on line 2"):
        RelevanceSegmentationDataModule(root=str(synthetic_root), labels_csv=str(bad), cache_dir=None).setup("fit")


def test_labels_of_one_value_in_training_are_refused_with_use_labels(tmp_path: Path, synthetic_root: Path) -> None:
    events = discover_events(synthetic_root, 16)
    labels = tmp_path / "labels.csv"
    labels.write_text("event_id,relevant\n" + "".join(f"{e.event_id},1\n" for e in events))
    with pytest.raises(DataError, match=r"train split of .* holds 1 class\(es\) for head 'relevant \(labels file\)' "
                                        r"\(1: \d+\)"):
        RelevanceSegmentationDataModule(root=str(synthetic_root), labels_csv=str(labels), use_labels=True,
                                        cache_dir=None).setup("fit")
    # without use_labels the labels teach nothing: not checked
    RelevanceSegmentationDataModule(root=str(synthetic_root), labels_csv=str(labels), cache_dir=None).setup("fit")


def test_a_copied_event_folder_is_one_event(tmp_path: Path, synthetic_root: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    shutil.copytree(root / "cam00" / "event0000", root / "cam00" / "event9999")
    dm = RelevanceContrastiveDataModule(root=str(root))
    dm.setup("fit")
    ids = [e.event_id for split in dm.splits.values() for e in split]
    assert len(ids) == 12 and "cam00/event9999" not in ids
    assert any(path.startswith("duplicates dropped") and rows == 1 for path, rows in dm.manifests_used())


def test_event_item_scores_the_middle_frame_against_its_mask(synthetic_root: Path) -> None:
    dm = RelevanceSegmentationDataModule(root=str(synthetic_root), image_size=48, eval_frames=4, cache_dir=None)
    dm.setup("test")
    ds = dm.event_dataset("test")
    item = ds[0]
    event = ds.events[0]
    frame = cv2.cvtColor(cv2.imread(str(event.frames[len(event.frames) // 2])), cv2.COLOR_BGR2RGB)
    assert torch.allclose(item["frames"][item["middle"]], preprocess_frame(frame, 48))
    # regions are scored at the frames' size; the pixel target is at the network's
    assert item["labels"].shape == (72, 96) and item["mask"].shape == (1, 48, 48)
    assert len(item["regions"]) == int(item["labels"].max())


def test_spec_of_each_phase(synthetic_root: Path) -> None:
    contrastive = RelevanceContrastiveDataModule(root=str(synthetic_root), image_size=32).spec()
    segmentation = RelevanceSegmentationDataModule(root=str(synthetic_root), image_size=32, eval_frames=3,
                                                   motion={"threshold": 40}, cache_dir=None).spec()
    for spec in (contrastive, segmentation):
        assert spec.task == "relevance"
        assert spec.head("mask").classes == ("irrelevant", "relevant") and spec.head("mask").positive == 1
        assert spec.input.shape == (3, 32, 32) and spec.input.mean == IMAGENET_MEAN
        assert spec.split_sizes == {"train": 8, "val": 2, "test": 2}
    assert contrastive.extras["mode"] == "contrastive" and "motion" not in contrastive.extras
    assert segmentation.extras["mode"] == "segmentation" and segmentation.extras["eval_frames"] == 3
    assert segmentation.extras["motion"]["threshold"] == 40
    # label_map.json keeps the class names and the phase it always held
    assert segmentation.label_map()["mask"] == {"irrelevant": 0, "relevant": 1}
    assert segmentation.label_map()["mode"] == "segmentation"
    assert [path for path, _ in segmentation.sources] == [str(synthetic_root), str(synthetic_root / "labels.csv")]


def test_splits_are_disjoint_and_the_same_in_both_phases(synthetic_root: Path) -> None:
    one = RelevanceContrastiveDataModule(root=str(synthetic_root), seed=3).split_ids()
    two = RelevanceSegmentationDataModule(root=str(synthetic_root), seed=3, use_labels=True, cache_dir=None).split_ids()
    assert one == two
    ids = [set(one[name]) for name in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert len(set().union(*ids)) == 12
    assert RelevanceContrastiveDataModule(root=str(synthetic_root), seed=4).split_ids() != one


def test_dev_samples_keep_a_subset_of_every_split(synthetic_root: Path) -> None:
    dm = RelevanceContrastiveDataModule(root=str(synthetic_root), dev_samples=6)
    sizes = {name: len(ids) for name, ids in dm.split_ids().items()}
    assert sum(sizes.values()) == 6 and min(sizes.values()) >= 1


def test_triplet_items_name_their_events(synthetic_root: Path) -> None:
    dm = RelevanceContrastiveDataModule(root=str(synthetic_root), image_size=32)
    item = dm.dataset("val")[0]
    assert item["anchor"].shape == (3, 32, 32)
    assert item["event_id"] == dm.split_ids()["val"][0] and item["negative_event_id"] != item["event_id"]


def test_data_mode_is_deprecated_but_still_understood(synthetic_root: Path) -> None:
    with pytest.warns(FutureWarning, match="data.mode is deprecated"):
        RelevanceContrastiveDataModule(root=str(synthetic_root), mode="contrastive")
    with pytest.raises(ConfigError, match="experiment=relevance_segmentation"):
        RelevanceContrastiveDataModule(root=str(synthetic_root), mode="segmentation")
    with pytest.raises(ConfigError, match="data.mode must be"):
        RelevanceSegmentationDataModule(root=str(synthetic_root), mode="pixels")
    # configs of earlier runs name the single DataModule with every key of both phases
    with pytest.warns(FutureWarning, match="deprecated"):
        legacy = RelevanceDataModule(mode="contrastive", root=str(synthetic_root), motion={"threshold": 20},
                                     eval_frames=2, use_labels=False, cache_dir=None)
    assert isinstance(legacy, RelevanceContrastiveDataModule)
    with pytest.warns(FutureWarning):
        assert isinstance(RelevanceDataModule(root=str(synthetic_root)), RelevanceSegmentationDataModule)

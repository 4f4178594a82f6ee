"""Behavior DataModule: manifests -> TTA clips, clear errors for bad manifests, skip_bad_videos."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from datamodules.behavior import BehaviorDataModule, ClipDataset
from datamodules.synthetic.behavior import ensure_behavior_dataset
from suite.errors import DataError

TINY = {"cameras": 3, "test_cameras": 1, "tail_cameras": 1, "videos_per_camera": 2, "events_per_video": 4,
        "size": 32, "tail_share": 0.25}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_behavior_dataset(tmp_path_factory.mktemp("behavior"), **TINY)


def _dm(**kw) -> BehaviorDataModule:
    return BehaviorDataModule(frames_per_clip=4, image_size=32, clips_per_event=3, batch_size=2, **kw)


def _manifests(root: Path, tmp: Path, edit_train=None) -> dict[str, str]:
    out = {}
    for split, name in (("train", "train_intravideo.csv"), ("val", "val_intravideo.csv"), ("test", "test.csv")):
        df = pd.read_csv(root / name)
        df["video_path"] = [str(root / p) for p in df["video_path"]]
        if split == "train" and edit_train is not None:
            df = edit_train(df)
        path = tmp / f"{split}.csv"
        df.to_csv(path, index=False)
        out[f"{split}_manifest"] = str(path)
    return out


def test_synthetic_layout_and_test_cameras_unseen(tiny_root: Path) -> None:
    events = pd.read_csv(tiny_root / "events.csv")
    test = pd.read_csv(tiny_root / "test.csv")
    assert set(events["camera"]).isdisjoint(test["camera"])
    # confounded: every training-pool tail event sits in the one tail camera
    assert events.loc[events["label"] == "tail", "camera"].nunique() == 1
    for split in ("old", "intravideo", "boosted"):
        train = pd.read_csv(tiny_root / f"train_{split}.csv")
        assert set(train["camera"]).isdisjoint(test["camera"])


def test_batches_hold_tta_clips_and_labels(tiny_root: Path, tmp_path: Path) -> None:
    dm = _dm(**_manifests(tiny_root, tmp_path))
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    val = next(iter(dm.val_dataloader()))
    assert train["video"].shape == (2, 4, 3, 32, 32)
    assert val["video"].shape == (2, 3, 4, 3, 32, 32)
    assert val["label"].dtype == torch.int64 and len(val["event_id"]) == 2
    assert dm.label_map()["classes"] == {"normal": 0, "tail": 1}
    assert [s for s, _ in dm.manifests_used()][0].startswith("train: ")


def test_augmentation_uses_the_same_parameters_for_every_frame(tiny_root: Path, tmp_path: Path) -> None:
    dm = _dm(**_manifests(tiny_root, tmp_path))
    dm.setup("fit")
    event = dm.events["train"][0]
    still = type(event)(event.event_id, event.video_id, event.path, event.label, event.start, event.start + 1, 1)
    ds = ClipDataset([still], 4, 32, None, augment=True)  # a clip of one repeated frame
    for seed in range(5):
        torch.manual_seed(seed)
        clip = ds[0]["video"]
        for t in range(1, 4):
            torch.testing.assert_close(clip[t], clip[0])


def test_balanced_sampling_evens_the_classes(tiny_root: Path, tmp_path: Path) -> None:
    dm = _dm(**_manifests(tiny_root, tmp_path), balanced_sampling=True)
    dm.setup("fit")
    sampler = dm.train_dataloader().sampler
    drawn = [i for _ in range(30) for i in sampler]  # 30 epochs of draws
    labels = torch.tensor([dm.events["train"][i].label for i in drawn])
    raw = torch.tensor([e.label for e in dm.events["train"]]).float().mean()
    assert raw < 0.35 and 0.3 < labels.float().mean() < 0.7


@pytest.mark.parametrize(("edit", "pattern"), [
    (lambda df: df.drop(columns="end_s"), r"lacks column\(s\) \['end_s'\]"),
    (lambda df: df.assign(label=["jumping"] + list(df["label"][1:])), r"train.csv, line 2: unknown label 'jumping'"),
    (lambda df: df.assign(end_s=[df["start_s"][0] - 1] + list(df["end_s"][1:])), r"line 2: end_s .* after start_s"),
    (lambda df: df.assign(video_path=["/nowhere/gone.mp4"] + list(df["video_path"][1:])),
     r"train.csv, line 2 .*video not found: /nowhere/gone.mp4"),
    (lambda df: df.iloc[:0], r"the train split is empty"),
])
def test_bad_manifests_fail_in_setup_with_clear_errors(tiny_root: Path, tmp_path: Path, edit, pattern: str) -> None:
    dm = _dm(**_manifests(tiny_root, tmp_path, edit))
    with pytest.raises(DataError, match=pattern):
        dm.setup("fit")


def test_skip_bad_videos_warns_and_counts(tiny_root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    shutil.copy(tiny_root / "videos" / "cam0_v0.mp4", tmp_path / "ok.mp4")

    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.loc[df.index[:2], "video_path"] = str(broken)
        return df

    dm = _dm(**_manifests(tiny_root, tmp_path, edit), skip_bad_videos=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
    assert len(dm.skipped) == 2
    assert any("skipped 2 event(s)" in str(w.message) and "broken.mp4" in str(w.message) for w in caught)
    strict = _dm(**_manifests(tiny_root, tmp_path, edit))
    with pytest.raises(DataError, match=r"broken.mp4.*skip_bad_videos"):
        strict.setup("fit")


def test_single_manifest_with_split_column(tiny_root: Path, tmp_path: Path) -> None:
    paths = _manifests(tiny_root, tmp_path)
    frames = [pd.read_csv(paths[f"{s}_manifest"]).assign(split=s) for s in ("train", "val", "test")]
    pd.concat(frames).to_csv(tmp_path / "all.csv", index=False)
    dm = _dm(manifest=str(tmp_path / "all.csv"))
    dm.setup("fit")
    assert [len(dm.events[s]) for s in ("train", "val", "test")] == [len(f) for f in frames]


def test_manifest_dir_picks_the_split_and_newest_stamp(tiny_root: Path, tmp_path: Path) -> None:
    for name in ("train_old", "val_old", "train_intravideo", "val_intravideo", "test"):
        df = pd.read_csv(tiny_root / f"{name}.csv")
        df["video_path"] = [str(tiny_root / p) for p in df["video_path"]]
        df.to_csv(tmp_path / f"{name}_20260105_162028.csv", index=False)
        df.iloc[:0].to_csv(tmp_path / f"{name}_20250101_000000.csv", index=False)  # older, empty: must not be used
    dm = _dm(manifest_dir=str(tmp_path), split="old")
    dm.setup("fit")
    assert dm.manifests_used()[0][0].endswith("train_old_20260105_162028.csv")
    with pytest.raises(DataError, match="train_boosted"):
        _dm(manifest_dir=str(tmp_path), split="boosted").setup("fit")


def test_path_traversal_in_a_manifest_is_refused(tiny_root: Path, tmp_path: Path) -> None:
    climbing = _manifests(tiny_root, tmp_path, lambda df: df.assign(
        video_path=["../../etc/passwd"] + list(df["video_path"][1:])))
    with pytest.raises(DataError, match=r"'../../etc/passwd' \(.*train.csv, line 2.*outside the data root"):
        _dm(**climbing).setup("fit")
    # with data.video_root set, absolute paths elsewhere are refused too
    with pytest.raises(DataError, match=r"outside the data root"):
        _dm(**_manifests(tiny_root, tmp_path), video_root=str(tmp_path / "videos")).setup("fit")


def test_tail_class_absent_from_train_is_an_error(tiny_root: Path, tmp_path: Path) -> None:
    no_tail = _manifests(tiny_root, tmp_path, lambda df: df[df["label"] != "tail"])
    with pytest.raises(DataError, match=r"the train split has no 'tail' events"):
        _dm(**no_tail).setup("fit")

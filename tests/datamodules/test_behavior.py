"""Behavior DataModule: data.root layouts, held-out test, spec, TTA clips, clear errors for bad manifests."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from datamodules.behavior import REAL_FRAMES_PER_CLIP, REAL_IMAGE_SIZE, BehaviorDataModule, ClipDataset
from datamodules.splits import build_split
from datamodules.synthetic.behavior import GENERATOR
from suite.errors import ConfigError, DataError

TINY = {"cameras": 3, "test_cameras": 1, "tail_cameras": 1, "videos_per_camera": 2, "events_per_video": 4,
        "size": 32, "tail_share": 0.25}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return GENERATOR.ensure(tmp_path_factory.mktemp("behavior") / "tiny", 0, **TINY)


def _dm(**kw) -> BehaviorDataModule:
    return BehaviorDataModule(**{"frames_per_clip": 4, "image_size": 32, "clips_per_event": 3, "batch_size": 2,
                                 "seed": 0, **kw})


def _absolute(root: Path, df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(video_path=[str(root / p) for p in df["video_path"]])


def _manifests(root: Path, tmp: Path, edit_train=None) -> dict[str, str]:
    """Per-split manifests (absolute video paths) in ``tmp``, the intra-video split of the synthetic pool."""
    train, val = build_split(pd.read_csv(root / "events.csv"), "intravideo", 0.25, "tail", seed=0)
    frames = {"train": train, "val": val, "test": pd.read_csv(root / "test.csv")}
    out = {}
    for split, df in frames.items():
        df = _absolute(root, df)
        if split == "train" and edit_train is not None:
            df = edit_train(df)
        path = tmp / f"{split}.csv"
        df.to_csv(path, index=False)
        out[f"{split}_manifest"] = str(path)
    return out


def _cameras(dm: BehaviorDataModule, split: str) -> set[str]:
    return {e.video_id.split("_")[0] for e in dm.splits[split]}


@pytest.mark.parametrize("strategy", ["old", "intravideo", "boosted"])
def test_synthetic_root_builds_the_strategy_and_tests_on_unseen_cameras(tiny_root: Path, strategy: str) -> None:
    events = pd.read_csv(tiny_root / "events.csv")
    # confounded: every training-pool tail event sits in the one tail camera
    assert events.loc[events["label"] == "tail", "camera"].nunique() == 1
    dm = _dm(root=str(tiny_root), split=strategy)
    dm.setup()
    assert _cameras(dm, "test").isdisjoint(_cameras(dm, "train") | _cameras(dm, "val"))
    videos = {s: {e.video_id for e in dm.splits[s]} for s in ("train", "val")}
    if strategy == "old":
        assert videos["train"].isdisjoint(videos["val"])
    else:
        assert videos["train"] & videos["val"]
    if strategy == "boosted":
        assert any("#dup" in e.event_id for e in dm.splits["train"])
    assert any(e.label == 1 for e in dm.splits["val"])
    ids = dm.split_ids()
    assert set(ids["test"]).isdisjoint(ids["train"]) and set(ids["val"]).isdisjoint(ids["train"])
    assert ids["groups"]["test"] and set(ids["groups"]["test"]).isdisjoint(ids["groups"]["train"])


def test_synthetic_set_is_made_by_prepare_data_with_the_generator(tmp_path: Path) -> None:
    dm = _dm(synthetic_dir=str(tmp_path), synthetic=TINY)
    root = dm.data_root()
    assert root == GENERATOR.folder(tmp_path, 0, **TINY) and not root.exists()
    dm.prepare_data()
    assert (root / "events.csv").is_file() and (root / "test.csv").is_file()
    dm.setup()
    assert dm.spec().split_sizes["test"] == len(pd.read_csv(root / "test.csv"))


def test_spec_holds_heads_input_and_extras(tiny_root: Path) -> None:
    dm = _dm(root=str(tiny_root), class_names=["tail", "normal"])  # the tail class becomes index 1 anyway
    spec = dm.spec()
    head = spec.head("label")
    assert head.classes == ("normal", "tail") and head.positive == 1
    assert spec.input.kind == "clip" and spec.input.shape == (4, 3, 32, 32)
    assert spec.extras["clips_per_event"] == 3 and spec.extras["skipped_events"] == 0
    assert spec.label_map()["label"] == spec.label_map()["classes"] == {"normal": 0, "tail": 1}
    assert sum(spec.split_sizes.values()) == len(pd.read_csv(tiny_root / "events.csv")) + len(
        pd.read_csv(tiny_root / "test.csv"))


def test_real_videos_get_real_clip_defaults_and_the_synthetic_set_its_small_scale(tiny_root: Path,
                                                                                  tmp_path: Path) -> None:
    real = BehaviorDataModule(root=str(tiny_root))
    assert (real.image_size, real.frames_per_clip) == (REAL_IMAGE_SIZE, REAL_FRAMES_PER_CLIP) == (224, 16)
    synthetic = BehaviorDataModule(synthetic_dir=str(tmp_path), synthetic={"size": 40})
    assert (synthetic.image_size, synthetic.frames_per_clip) == (40, 8)
    assert BehaviorDataModule(root=str(tiny_root), image_size=96, frames_per_clip=12).input_spec().shape == (
        12, 3, 96, 96)


def test_events_table_without_test_holds_out_whole_videos(tiny_root: Path, tmp_path: Path) -> None:
    events = _absolute(tiny_root, pd.read_csv(tiny_root / "events.csv"))
    # labels as 0/1 work as well as names
    events.assign(label=(events["label"] == "tail").astype(int)).to_csv(tmp_path / "events.csv", index=False)
    dm = _dm(root=str(tmp_path), split="intravideo", test_fraction=0.25)
    dm.setup()
    test_videos = {e.video_id for e in dm.splits["test"]}
    assert test_videos and test_videos.isdisjoint({e.video_id for s in ("train", "val") for e in dm.splits[s]})
    assert any(e.label == 1 for e in dm.splits["test"]) and any(e.label == 1 for e in dm.splits["train"])
    assert "held out" in dm.manifests_used()[-1][0]
    again = _dm(root=str(tmp_path), split="intravideo", test_fraction=0.25)
    assert again.split_ids() == dm.split_ids()


def test_make_splits_folder_picks_the_split_and_newest_stamp(tiny_root: Path, tmp_path: Path) -> None:
    pool = pd.read_csv(tiny_root / "events.csv")
    tables = {"test": pd.read_csv(tiny_root / "test.csv")}
    for strategy in ("old", "intravideo"):
        tables[f"train_{strategy}"], tables[f"val_{strategy}"] = build_split(pool, strategy, 0.25, "tail", seed=0)
    for name, df in tables.items():
        _absolute(tiny_root, df).to_csv(tmp_path / f"{name}_20260105_162028.csv", index=False)
        df.iloc[:0].to_csv(tmp_path / f"{name}_20250101_000000.csv", index=False)  # older, empty: must not be used
    dm = _dm(root=str(tmp_path), split="old")
    dm.setup()
    assert dm.manifests_used()[0][0].endswith("train_old_20260105_162028.csv")
    with pytest.raises(DataError, match="train_boosted"):
        _dm(root=str(tmp_path), split="boosted").setup()
    # the former key still works, with a deprecation message
    with pytest.warns(FutureWarning, match=r"data.manifest_dir is deprecated: use data.root"):
        old_key = _dm(manifest_dir=str(tmp_path), split="old")
    assert old_key.split_ids() == dm.split_ids()


def test_train_and_val_without_a_test_manifest_is_refused(tiny_root: Path, tmp_path: Path) -> None:
    paths = _manifests(tiny_root, tmp_path)
    Path(paths["test_manifest"]).unlink()
    with pytest.raises(DataError, match=r"no test.csv"):
        _dm(root=str(tmp_path)).setup()
    with pytest.raises(ConfigError, match=r"data.test_manifest is not set"):
        _dm(train_manifest=paths["train_manifest"], val_manifest=paths["val_manifest"]).setup()


def test_an_event_in_train_and_test_is_refused(tiny_root: Path, tmp_path: Path) -> None:
    paths = _manifests(tiny_root, tmp_path)
    test = pd.read_csv(paths["test_manifest"])
    leaked = pd.concat([test, pd.read_csv(paths["train_manifest"]).head(1)])
    leaked.to_csv(paths["test_manifest"], index=False)
    with pytest.raises(DataError, match=r"the train and test splits share 1 item id\(s\)"):
        _dm(**paths).setup()


def test_an_event_in_train_and_test_under_another_id_is_refused_unless_allowed(tiny_root: Path,
                                                                              tmp_path: Path) -> None:
    paths = _manifests(tiny_root, tmp_path)
    test = pd.read_csv(paths["test_manifest"])
    copy = pd.read_csv(paths["train_manifest"]).head(1).assign(event_id="renamed", video_id="other_video")
    pd.concat([test, copy]).to_csv(paths["test_manifest"], index=False)
    with pytest.raises(DataError, match=r"the train and test splits share 1 events of the same content under other "
                                        r"names \(e.g. .* = renamed\).*data.allow_overlap=true"):
        _dm(**paths).setup()
    allowed = _dm(**paths, allow_overlap=True)
    allowed.setup()
    assert any("data.allow_overlap=true" in path for path, _ in allowed.manifests_used())


def test_a_video_in_train_and_test_is_refused_and_duplicated_test_rows_count_once(tiny_root: Path,
                                                                                  tmp_path: Path) -> None:
    paths = _manifests(tiny_root, tmp_path)
    test = pd.read_csv(paths["test_manifest"])
    pd.concat([test, test.head(2)]).to_csv(paths["test_manifest"], index=False)
    dm = _dm(**paths)
    dm.setup()
    assert len(dm.splits["test"]) == len(test)  # each event once
    assert ("duplicates dropped (same file or content, kept once): test 2", 2) in dm.manifests_used()
    # an event of a training video (other times) in the test split: the video is on both sides
    train = pd.read_csv(paths["train_manifest"])
    moved = train.head(1).assign(start_s=0.0, end_s=0.3, event_id="late")
    pd.concat([test, moved]).to_csv(paths["test_manifest"], index=False)
    with pytest.raises(DataError, match=r"the train and test splits share 1 group\(s\)"):
        _dm(**paths).setup()


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


def test_dev_samples_keeps_every_split(tiny_root: Path) -> None:
    dm = _dm(root=str(tiny_root), dev_samples=6)
    dm.setup()
    assert sum(len(v) for v in dm.splits.values()) == 6 and all(dm.splits.values())


def test_augmentation_uses_the_same_parameters_for_every_frame(tiny_root: Path, tmp_path: Path) -> None:
    dm = _dm(**_manifests(tiny_root, tmp_path))
    dm.setup("fit")
    event = dm.splits["train"][0]
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
    labels = torch.tensor([dm.splits["train"][i].label for i in drawn])
    raw = torch.tensor([e.label for e in dm.splits["train"]]).float().mean()
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
    assert len(dm.skipped) == 2 and dm.spec().extras["skipped_events"] == 2
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
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [len(f) for f in frames]
    # the same table as data.root/manifest.csv
    (tmp_path / "layout").mkdir()
    shutil.copy(tmp_path / "all.csv", tmp_path / "layout" / "manifest.csv")
    assert _dm(root=str(tmp_path / "layout")).split_ids() == dm.split_ids()


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
    with pytest.raises(DataError, match=r"the train split of .* has no 'tail' events"):
        _dm(**no_tail).setup("fit")


def test_former_synthetic_keys_and_bad_values_are_named(tmp_path: Path) -> None:
    with pytest.warns(FutureWarning, match=r"data.synthetic.val_fraction is deprecated: use data.val_fraction"):
        dm = _dm(synthetic_dir=str(tmp_path), synthetic={**TINY, "val_fraction": 0.3})
    assert dm.val_fraction == 0.3 and "val_fraction" not in dm.synthetic()[1]
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['camras'\]"):
        _dm(synthetic={"camras": 2})
    with pytest.raises(ConfigError, match=r"data.split must be one of"):
        _dm(split="random")
    with pytest.raises(DataError, match=r"data.train_manifest: manifest not found"):
        _dm(train_manifest=str(tmp_path / "nope.csv"))


def test_a_test_set_alone_is_read_without_train_or_val(tiny_root: Path, tmp_path: Path) -> None:
    """Evaluating a trained run on new labelled events: data.test_manifest alone, or a folder with test.csv only."""
    test = _absolute(tiny_root, pd.read_csv(tiny_root / "test.csv"))
    test.to_csv(tmp_path / "new.csv", index=False)
    dm = _dm(test_manifest=str(tmp_path / "new.csv"))
    dm.setup()
    assert set(dm.splits) == {"test"} and len(dm.split("test")) == len(test)
    assert dm.spec().extras["event_s"] == 2.0
    with pytest.raises(DataError, match="no train split"):
        dm.split("train")
    folder = tmp_path / "only_test"
    folder.mkdir()
    test.to_csv(folder / "test.csv", index=False)
    only = _dm(root=str(folder))
    only.setup()
    assert set(only.splits) == {"test"}

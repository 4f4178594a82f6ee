"""Violence DataModule: layouts, class mapping, group split, windows, synthetic generator."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.synthetic import violence as synthetic
from datamodules.video import probe_video, read_frames, uniform_indices
from datamodules.violence import VideoItem, ViolenceDataModule, group_split
from suite.errors import ConfigError, DataError

SMALL = {"num_frames": 8, "clip_len": 6, "tta_crops": 3, "feature_dim": 32, "synthetic_frame_size": 32,
         "aug_multiplier": 2, "batch_size": 4}


@pytest.fixture(scope="module")
def flat_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.generate(tmp_path_factory.mktemp("flat") / "v", {"all": 24}, n_frames=12, size=32,
                              layout="flat", group_size=3, seed=1)


def module_for(root: Path | None, tmp_path: Path, shared: Path | None = None, **kw) -> ViolenceDataModule:
    args = dict(SMALL, backbone="test_efficientnet", frame_size=32, cache_dir=str(tmp_path / "cache"),
                synthetic_dir=str((shared or tmp_path) / "synthetic"), synthetic_videos={"train": 8, "val": 4,
                                                                                          "test": 4})
    args.update(kw)
    if root is not None:
        # the flat synthetic clips are tiny: the tiny backbone's head gives feature_dim values
        args["feature_dim"] = 256
    return ViolenceDataModule(root=str(root) if root else None, **args)


def test_synthetic_classes_differ_in_motion(tmp_path: Path) -> None:
    root = synthetic.generate(tmp_path / "s", {"train": 8}, n_frames=16, size=48, seed=0)

    def motion(path: Path) -> float:
        info = probe_video(path)
        frames = read_frames(path, uniform_indices(info.num_frames, 16)).astype(np.float32)
        return float(np.abs(np.diff(frames, axis=0)).mean())

    violent = [motion(p) for p in (root / "train" / synthetic.VIOLENT_FOLDER).glob("*.mp4")]
    calm = [motion(p) for p in (root / "train" / synthetic.NONVIOLENT_FOLDER).glob("*.mp4")]
    assert len(violent) == 4 and len(calm) == 4
    assert min(violent) > max(calm)


def test_synthetic_class_balance_is_configurable(tmp_path: Path) -> None:
    root = synthetic.generate(tmp_path / "s", {"train": 10}, violent_fraction=0.3, n_frames=4, size=16)
    assert len(list((root / "train" / synthetic.VIOLENT_FOLDER).glob("*.mp4"))) == 3
    assert len(list((root / "train" / synthetic.NONVIOLENT_FOLDER).glob("*.mp4"))) == 7


def test_group_split_keeps_groups_on_one_side_and_is_seeded() -> None:
    items = [VideoItem(Path(f"/v/{g}_{i}.mp4"), (g + i) % 2, f"g{g}") for g in range(10) for i in range(4)]
    a = group_split(items, {"val": 0.2, "test": 0.2}, seed=7)
    b = group_split(items, {"val": 0.2, "test": 0.2}, seed=7)
    c = group_split(items, {"val": 0.2, "test": 0.2}, seed=8)
    groups = {name: {it.group for it in split} for name, split in a.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])
    assert sum(len(v) for v in a.values()) == len(items)
    assert len(a["val"]) == 8 and len(a["test"]) == 8
    assert a == b and a != c
    assert all({it.label for it in split} == {0, 1} for split in a.values())


def test_group_split_needs_enough_groups() -> None:
    items = [VideoItem(Path(f"/v/{i}.mp4"), i % 2, "same") for i in range(6)]
    with pytest.raises(DataError, match="at least 3 groups"):
        group_split(items, {"val": 0.2, "test": 0.2}, seed=0)


def test_flat_layout_split_by_source_group(flat_root: Path, tmp_path: Path) -> None:
    dm = module_for(flat_root, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    groups = {name: {it.group for it in items} for name, items in dm.splits.items()}
    assert groups["train"].isdisjoint(groups["val"]) and groups["train"].isdisjoint(groups["test"])
    assert groups["val"].isdisjoint(groups["test"])
    assert all(g.startswith("cam") for g in groups["train"])
    assert sum(len(v) for v in dm.splits.values()) == 24
    assert len(dm.datasets["train"]) == 2 * len(dm.splits["train"])  # clean + one augmented copy
    listed = [path for path, _ in dm.manifests_used()]
    assert str(flat_root / "labels.csv") in listed
    assert not any(str(flat_root) in p and "cache" in p for p in listed)


def test_windows_jitter_in_training_and_tta_crops_at_eval(flat_root: Path, tmp_path: Path) -> None:
    dm = module_for(flat_root, tmp_path)
    dm.setup("fit")
    torch.manual_seed(0)
    train = dm.datasets["train"]
    item = train[0]
    assert item["features"].shape == (6, 256) and item["label"] in (0, 1)
    starts = set()
    full = torch.from_numpy(train.arrays[train.items[0][0]][train.items[0][1]].astype(np.float32))
    for _ in range(30):
        window = train[0]["features"]
        starts.update(s for s in range(3) if torch.equal(window, full[s:s + 6]))
    assert starts == {0, 1, 2}  # every window position occurs: temporal jitter
    val = dm.datasets["val"][0]
    assert val["tta"].shape == (3, 6, 256)
    assert torch.equal(val["tta"][0], val["tta"][0]) and torch.equal(val["features"], val["tta"][1])


def test_class_folders_map_by_config(flat_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "renamed"
    shutil.copytree(flat_root, root)
    (root / synthetic.VIOLENT_FOLDER).rename(root / "aggression")
    (root / synthetic.NONVIOLENT_FOLDER).rename(root / "calm")
    rows = list(csv.DictReader(open(root / "labels.csv")))
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            folder, name = row["path"].split("/")
            row["path"] = ("aggression" if folder == synthetic.VIOLENT_FOLDER else "calm") + "/" + name
            writer.writerow(row)
    with pytest.raises(DataError, match="class folder .*aggression.* not in data.class_map"):
        module_for(root, tmp_path).setup()
    dm = module_for(root, tmp_path, class_map={"violent": ["aggression"], "non_violent": ["calm"]})
    dm.setup()
    assert dm.label_map()["folders"] == {"aggression": "violent", "calm": "non_violent"}
    labels = {it.path.parent.name: it.label for items in dm.splits.values() for it in items}
    assert labels == {"aggression": 1, "calm": 0}


def test_bad_class_map_and_fractions_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown class 'fighting'"):
        module_for(None, tmp_path, class_map={"fighting": ["x"]})
    with pytest.raises(ConfigError, match="clip_len"):
        module_for(None, tmp_path, clip_len=20)
    with pytest.raises(ConfigError, match="val_fraction"):
        module_for(None, tmp_path, val_fraction=0.6, test_fraction=0.5)


def test_labels_csv_row_naming_a_missing_video(flat_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    shutil.copytree(flat_root, root)
    with open(root / "labels.csv", "a") as f:
        f.write("Violence/missing.mp4,Violence,cam99\n")
    with pytest.raises(DataError, match=r"labels.csv, row 26: video not found"):
        module_for(root, tmp_path).setup()


def test_unreadable_video_in_the_data_is_named(flat_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "corrupt"
    shutil.copytree(flat_root, root)
    victim = sorted((root / synthetic.VIOLENT_FOLDER).glob("*.mp4"))[0]
    victim.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(DataError, match=victim.name):
        module_for(root, tmp_path).setup()
    dm = module_for(root, tmp_path, skip_bad_videos=True)
    dm.setup()
    names = {it[2].path.name for ds in dm.datasets.values() for it in ds.items}
    assert victim.name not in names and len(names) == 23


def test_synthetic_default_split_folders_and_dev_samples(tmp_path: Path, shared_data_dir: Path) -> None:
    dm = module_for(None, tmp_path, shared_data_dir, dev_samples=3)
    dm.prepare_data()
    dm.setup()
    assert len(dm.splits["train"]) == 3 and len(dm.splits["val"]) == 4 and len(dm.splits["test"]) == 4
    assert len(dm.datasets["train"]) == 6
    batch = next(iter(dm.train_dataloader()))
    assert batch["features"].shape[1:] == (6, 32)
    assert not dm.extraction.skipped
    again = module_for(None, tmp_path, shared_data_dir, dev_samples=3)
    again.setup()
    assert again.extraction.skipped  # the second run of the same data reads the cache only
    assert len(again.datasets["train"]) == len(dm.datasets["train"])


def test_nan_in_the_cache_is_reported_when_read(flat_root: Path, tmp_path: Path) -> None:
    dm = module_for(flat_root, tmp_path)
    dm.setup()
    copy, row, video = dm.datasets["val"].items[0]
    path = dm.datasets["val"].arrays[copy].path
    arr = np.load(path, mmap_mode="r+")
    arr[row, 0, 0] = np.nan
    arr.flush()
    fresh = module_for(flat_root, tmp_path)
    fresh.setup()
    with pytest.raises(DataError, match=rf"NaN/inf features for .*{video.path.name}"):
        fresh.datasets["val"][0]

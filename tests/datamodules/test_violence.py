"""Violence DataModule: layouts, class mapping, grouped split, spec, windows, extraction on one rank,
synthetic generator, former keys."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.synthetic.violence import GENERATOR, NONVIOLENT_FOLDER, VIOLENT_FOLDER
from datamodules.video import probe_video, read_frames, uniform_indices
from datamodules.violence import ViolenceDataModule
from lightning_modules.nets.violence import FrameEncoder
from suite.errors import ConfigError, DataError

SMALL = {"num_frames": 8, "clip_len": 6, "tta_crops": 3, "aug_multiplier": 2, "batch_size": 4}


def tiny_encoder(feature_dim: int) -> FrameEncoder:
    return FrameEncoder("test_efficientnet", pretrained=False, frame_size=32, feature_dim=feature_dim)


@pytest.fixture(scope="module")
def flat_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return GENERATOR.ensure(tmp_path_factory.mktemp("flat") / "v", 1, videos={"all": 24}, n_frames=12, size=32,
                            layout="flat", group_size=3)


def module_for(root: Path | None, tmp_path: Path, shared: Path | None = None, **kw) -> ViolenceDataModule:
    # the flat synthetic clips are tiny: the tiny backbone's pooled features (256-d) are the features
    args = dict(SMALL, frame_encoder=tiny_encoder(256), cache_dir=str(tmp_path / "cache"),
                synthetic_frame_encoder=tiny_encoder(32).replace(projection=True),
                synthetic_dir=str((shared or tmp_path) / "synthetic"),
                synthetic_videos={"train": 8, "val": 4, "test": 4})
    args.update(kw)
    return ViolenceDataModule(root=str(root) if root else None, **args)


def ready(dm: ViolenceDataModule) -> ViolenceDataModule:
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_synthetic_classes_differ_in_motion(tmp_path: Path) -> None:
    root = GENERATOR.ensure(tmp_path / "s", 0, videos={"train": 8}, n_frames=16, size=48)

    def motion(path: Path) -> float:
        info = probe_video(path)
        frames = read_frames(path, uniform_indices(info.num_frames, 16)).astype(np.float32)
        return float(np.abs(np.diff(frames, axis=0)).mean())

    violent = [motion(p) for p in (root / "train" / VIOLENT_FOLDER).glob("*.mp4")]
    calm = [motion(p) for p in (root / "train" / NONVIOLENT_FOLDER).glob("*.mp4")]
    assert len(violent) == 4 and len(calm) == 4
    assert min(violent) > max(calm)


def test_synthetic_class_balance_and_bad_parameters(tmp_path: Path) -> None:
    root = GENERATOR.ensure(tmp_path / "s", 0, videos={"train": 10}, violent_fraction=0.3, n_frames=4, size=16)
    assert len(list((root / "train" / VIOLENT_FOLDER).glob("*.mp4"))) == 3
    assert len(list((root / "train" / NONVIOLENT_FOLDER).glob("*.mp4"))) == 7
    with pytest.raises(ConfigError, match="layout must be 'split' or 'flat'"):
        GENERATOR.ensure(tmp_path / "bad", 0, videos={"train": 2}, layout="nested")
    with pytest.raises(ConfigError, match="unknown parameter"):
        GENERATOR.ensure(tmp_path / "bad", 0, frames=3)


def test_flat_layout_grouped_stratified_seeded_split(flat_root: Path, tmp_path: Path) -> None:
    dm = module_for(flat_root, tmp_path)
    dm.setup("fit")
    groups = {name: {it.group for it in dm.split(name)} for name in ("train", "val", "test")}
    assert groups["train"].isdisjoint(groups["val"]) and groups["train"].isdisjoint(groups["test"])
    assert groups["val"].isdisjoint(groups["test"])
    assert all(g.startswith("cam") for g in groups["train"])
    assert sum(len(dm.split(n)) for n in ("train", "val", "test")) == 24
    assert all({it.label for it in dm.split(n)} == {0, 1} for n in ("train", "val", "test"))  # stratified
    again = module_for(flat_root, tmp_path)
    other = module_for(flat_root, tmp_path, seed=5)
    assert again.split_ids() == dm.split_ids() and other.split_ids() != dm.split_ids()
    ids = dm.split_ids()
    assert set(ids) == {"train", "val", "test", "groups"}
    assert not set(ids["train"]) & set(ids["test"]) and not set(ids["val"]) & set(ids["test"])
    assert sorted(ids["groups"]["test"]) == sorted(groups["test"])
    listed = [path for path, _ in dm.manifests_used()]
    assert str(flat_root / "labels.csv") in listed


def test_spec_heads_input_and_extras(flat_root: Path, tmp_path: Path) -> None:
    dm = ready(module_for(flat_root, tmp_path))
    spec = dm.spec()
    assert spec.task == "violence"
    head = spec.head("class")
    assert head.classes == ("non_violent", "violent") and head.positive == 1
    assert spec.input.kind == "features" and spec.input.shape == (6, 256)
    assert spec.extras["frame_encoder"]["backbone"] == "test_efficientnet"
    assert spec.label_map()["class"] == {"non_violent": 0, "violent": 1}
    assert spec.split_sizes == {name: len(dm.split(name)) for name in ("train", "val", "test")}
    # every cache file read is listed with its rows (clean copy: all videos; augmented: training videos)
    caches = [(p, n) for p, n in spec.sources if p.endswith("features.npy")]
    assert sorted(n for _, n in caches) == sorted([24, len(dm.split("train"))])
    assert not any(str(flat_root) in p for p, _ in caches)


def test_too_few_groups_is_a_data_error(flat_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "onegroup"
    shutil.copytree(flat_root, root)
    rows = list(csv.DictReader(open(root / "labels.csv")))
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "source_group": "cam"} for row in rows)
    with pytest.raises(DataError, match="need at least 3 groups"):
        module_for(root, tmp_path).setup()


def test_training_without_a_class_is_refused_naming_split_and_counts(tmp_path: Path) -> None:
    root = GENERATOR.ensure(tmp_path / "s", 0, videos={"train": 6, "val": 4, "test": 4}, n_frames=8, size=32)
    shutil.rmtree(root / "train" / VIOLENT_FOLDER)
    with pytest.raises(DataError, match=r"the train split of .* has no 'violent' videos "
                                        r"\(head 'class': non_violent: 3, violent: 0\)"):
        module_for(root, tmp_path).setup()


def test_split_folders_without_test_hold_the_test_out_of_train(tmp_path: Path) -> None:
    root = GENERATOR.ensure(tmp_path / "s", 0, videos={"train": 20, "val": 4}, n_frames=8, size=32)
    dm = module_for(root, tmp_path, test_fraction=0.25)
    dm.setup()
    train, val, test = (set(dm.split_ids()[n]) for n in ("train", "val", "test"))
    assert len(train) + len(test) == 20 and len(val) == 4 and len(test) == 5
    assert all(i.startswith("train/") for i in test) and not train & test
    assert any("test_fraction=0.25 held out" in path for path, _ in dm.manifests_used())
    with pytest.raises(ConfigError, match="data.test_fraction is 0"):
        module_for(root, tmp_path, test_fraction=0.0).setup()


def test_windows_jitter_in_training_and_tta_crops_at_eval(flat_root: Path, tmp_path: Path) -> None:
    dm = ready(module_for(flat_root, tmp_path))
    torch.manual_seed(0)
    train = dm.dataset("train")
    assert len(train) == 2 * len(dm.split("train"))  # clean + one augmented copy
    item = train[0]
    assert item["features"].shape == (6, 256) and item["label"] in (0, 1)
    starts = set()
    full = torch.from_numpy(train.arrays[train.items[0][0]][train.items[0][1]].astype(np.float32))
    for _ in range(30):
        window = train[0]["features"]
        starts.update(s for s in range(3) if torch.equal(window, full[s:s + 6]))
    assert starts == {0, 1, 2}  # every window position occurs: temporal jitter
    val = dm.dataset("val")[0]
    assert val["tta"].shape == (3, 6, 256)
    assert torch.equal(val["features"], val["tta"][1])  # the centre crop is the plain window
    assert val["item_id"] in dm.split_ids()["val"]
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"features", "tta", "label", "item_id", "group"}


def test_class_folders_map_by_config(flat_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "renamed"
    shutil.copytree(flat_root, root)
    (root / VIOLENT_FOLDER).rename(root / "aggression")
    (root / NONVIOLENT_FOLDER).rename(root / "calm")
    rows = list(csv.DictReader(open(root / "labels.csv")))
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            folder, name = row["path"].split("/")
            row["path"] = ("aggression" if folder == VIOLENT_FOLDER else "calm") + "/" + name
            writer.writerow(row)
    with pytest.raises(DataError, match="class folder .*aggression.* not in data.class_map"):
        module_for(root, tmp_path).setup()
    dm = module_for(root, tmp_path, class_map={"violent": ["aggression"], "non_violent": ["calm"]})
    dm.setup()
    assert dm.label_map()["folders"] == {"aggression": "violent", "calm": "non_violent"}
    labels = {it.path.parent.name: it.label for n in ("train", "val", "test") for it in dm.split(n)}
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
    with pytest.raises(DataError, match=r"labels.csv, line 26: video not found"):
        module_for(root, tmp_path).setup()


def test_labels_csv_listing_a_video_with_two_groups_or_in_latin1_is_named(flat_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "twice"
    shutil.copytree(flat_root, root)
    lines = (root / "labels.csv").read_text().splitlines()
    first = lines[1].split(",")
    with open(root / "labels.csv", "a") as f:
        f.write(",".join([first[0], *first[1:-1], "another_group"]) + "\n")
    with pytest.raises(DataError, match=r"labels.csv, line 26: .* is listed again with another group"):
        module_for(root, tmp_path).setup()
    (root / "labels.csv").write_bytes("\n".join([*lines, "x,caf\xe9,g"]).encode("latin-1"))
    with pytest.raises(DataError, match=r"labels.csv, line 26: not UTF-8 text"):
        module_for(root, tmp_path).setup()


def test_unreadable_video_in_the_data_is_named(flat_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "corrupt"
    shutil.copytree(flat_root, root)
    victim = sorted((root / VIOLENT_FOLDER).glob("*.mp4"))[0]
    victim.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(DataError, match=victim.name):
        ready(module_for(root, tmp_path))
    dm = ready(module_for(root, tmp_path, skip_bad_videos=True))
    names = {it[2].path.name for split in ("train", "val", "test") for it in dm.dataset(split).items}
    assert victim.name not in names and len(names) == 23


def test_synthetic_default_extracts_once_then_reads_the_cache(tmp_path: Path, shared_data_dir: Path) -> None:
    dm = ready(module_for(None, tmp_path, shared_data_dir, dev_samples=6))
    assert sum(len(dm.split(n)) for n in ("train", "val", "test")) == 6  # data.dev_samples over all splits
    assert {it.label for it in dm.split("train")} == {0, 1}
    batch = next(iter(dm.train_dataloader()))
    assert batch["features"].shape[1:] == (6, 32)
    assert not dm.extraction.skipped
    # dev mode: one sequence per video of the subset (each training video in one copy, the copies in turn)
    assert dm.extraction.videos_decoded == dm.extraction.sequences_written == 6
    assert {copy for copy, _, _ in dm.dataset("train").items} == {0, 1}
    dm.prepare_data()  # Lightning calls it again: nothing more to do, the report is kept
    assert not dm.extraction.skipped
    again = ready(module_for(None, tmp_path, shared_data_dir, dev_samples=6))
    assert again.extraction.skipped  # the second run of the same data reads the cache only
    assert len(again.dataset("train")) == len(dm.dataset("train"))


class NeverLoaded(FrameEncoder):
    def load(self, device: str = "auto", batch_frames: int = 256) -> FrameEncoder:
        raise AssertionError("this process must not build the frame encoder")

    def replace(self, **changes) -> FrameEncoder:
        return NeverLoaded(**{**self.settings(), **changes})


def test_only_the_first_rank_extracts_the_others_read(flat_root: Path, tmp_path: Path, monkeypatch) -> None:
    import datamodules.feature_cache as feature_cache

    monkeypatch.setattr(feature_cache, "IDLE_WAIT_S", 0.3)
    monkeypatch.setenv("LOCAL_RANK", "1")
    waiting = module_for(flat_root, tmp_path, frame_encoder=NeverLoaded("test_efficientnet", pretrained=False,
                                                                         frame_size=32, feature_dim=256))
    with pytest.raises(DataError, match="none did"):  # nobody extracted: rank 1 does not either
        waiting.prepare_data()
    assert not list((tmp_path / "cache").rglob("features.npy"))
    monkeypatch.setenv("LOCAL_RANK", "0")
    first = ready(module_for(flat_root, tmp_path))
    assert not first.extraction.skipped
    monkeypatch.setenv("LOCAL_RANK", "1")
    other = ready(module_for(flat_root, tmp_path, frame_encoder=NeverLoaded("test_efficientnet", pretrained=False,
                                                                             frame_size=32, feature_dim=256)))
    assert other.extraction is None  # waited for the finished cache, extracted nothing
    np.testing.assert_array_equal(other.dataset("val")[0]["features"], first.dataset("val")[0]["features"])
    assert other.spec().sources == first.spec().sources


def test_datasets_before_extraction_are_a_clear_error(flat_root: Path, tmp_path: Path) -> None:
    dm = module_for(flat_root, tmp_path)
    dm.setup()
    with pytest.raises(DataError, match="call the DataModule's prepare_data"):
        dm.dataset("train")


def test_former_encoder_keys_still_apply_with_a_warning(flat_root: Path, tmp_path: Path, capsys) -> None:
    dm = module_for(flat_root, tmp_path, backbone="resnet18", frame_size=112, feature_dim=512, pretrained=False,
                    synthetic_frame_size=48)
    assert (dm.frame_encoder.backbone, dm.frame_encoder.frame_size, dm.frame_encoder.feature_dim) == \
        ("resnet18", 112, 512)
    assert not dm.frame_encoder.pretrained
    assert (dm.synthetic_frame_encoder.frame_size, dm.synthetic_frame_encoder.feature_dim) == (48, 512)
    out = capsys.readouterr().out
    assert "data.backbone is deprecated: set data.frame_encoder.backbone" in out
    assert "data.synthetic_frame_size is deprecated: set data.synthetic_frame_encoder.frame_size" in out


def test_nan_in_the_cache_is_reported_when_read(flat_root: Path, tmp_path: Path) -> None:
    dm = ready(module_for(flat_root, tmp_path))
    copy, row, video = dm.dataset("val").items[0]
    path = dm.dataset("val").arrays[copy].path
    arr = np.load(path, mmap_mode="r+")
    arr[row, 0, 0] = np.nan
    arr.flush()
    fresh = ready(module_for(flat_root, tmp_path))
    with pytest.raises(DataError, match=rf"NaN/inf features for .*{video.path.name}"):
        fresh.dataset("val")[0]


def test_frame_encoder_precision_auto_is_bf16_only_in_debug_modes_on_a_native_bf16_cpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import suite.precision

    monkeypatch.setattr(suite.precision, "cpu_has_native_bf16", lambda: True)
    auto = FrameEncoder("test_efficientnet", pretrained=False, frame_size=32, precision="auto")
    debug = ViolenceDataModule(root=str(tmp_path), frame_encoder=auto, dev_samples=12, extract_device="cpu")
    full = ViolenceDataModule(root=str(tmp_path), frame_encoder=auto, extract_device="cpu")
    assert debug.frame_encoder.precision == "bf16" and full.frame_encoder.precision == "fp32"
    # the cache keeps bf16 features apart from fp32 ones, and fp32 keys are those of earlier versions
    assert debug.frame_encoder.key_fields() != full.frame_encoder.key_fields()
    assert "precision" not in full.frame_encoder.key_fields()
    monkeypatch.setattr(suite.precision, "cpu_has_native_bf16", lambda: False)
    assert ViolenceDataModule(root=str(tmp_path), frame_encoder=auto, dev_samples=12,
                              extract_device="cpu").frame_encoder.precision == "fp32"
    with pytest.raises(ConfigError, match="data.frame_encoder.precision"):
        FrameEncoder(precision="fp8")


def test_bf16_frame_features_stay_close_to_fp32() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    fp32 = FrameEncoder("test_efficientnet", pretrained=False, frame_size=32, projection=True, feature_dim=64)
    bf16 = fp32.replace(precision="bf16")
    a, b = fp32.load("cpu")(frames), bf16.load("cpu")(frames)
    assert b.dtype == np.float32 and a.shape == b.shape
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.05

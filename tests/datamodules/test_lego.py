"""LEGO data: manifest reading, column/source mapping, unknown labels, the group split, the spec, pipelines."""

from __future__ import annotations

import csv
import shutil
import warnings
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from datamodules.lego import AUGMENT_PRESETS, LegoDataModule, build_transform
from datamodules.synthetic import generator
from datamodules.synthetic import lego as synthetic
from suite.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.GENERATOR.ensure(tmp_path_factory.mktemp("lego") / "syn", 3, size=32, real_captures=7)


def _groups(rows: list[dict]) -> set[str]:
    return {r["group"] for r in rows}


def test_split_keeps_real_only_in_val_and_test_and_groups_apart(synthetic_root: Path) -> None:
    dm = LegoDataModule(root=str(synthetic_root), seed=1)
    dm.setup("fit")
    for split in ("val", "test"):
        assert dm.splits[split] and {r["source"] for r in dm.splits[split]} == {"real"}
    assert {"legacy", "b200c", "real"} <= {r["source"] for r in dm.splits["train"]}
    train, val, test = (_groups(dm.splits[s]) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    real = [r for r in dm.splits["train"] if r["source"] == "real"]
    n_real = len(real) + len(dm.splits["val"]) + len(dm.splits["test"])
    assert 0.55 < len(real) / n_real < 0.8  # 70 % of the real captures train, by group
    # every legacy and b200c row is used for training
    manifest = list(csv.DictReader(open(synthetic_root / "manifest.csv")))
    synthetic_rows = [r for r in manifest if r["source"] != "real" and r["part_id"] != "99999"]
    assert sum(r["source"] != "real" for r in dm.splits["train"]) == len(synthetic_rows)


def test_target_parts_filter_and_unknown_labels(synthetic_root: Path) -> None:
    dm = LegoDataModule(root=str(synthetic_root), seed=0)
    dm.setup()
    assert "99999" not in dm.part_names and dm.part_names == list(synthetic.PARTS)
    every = [r for split in dm.splits.values() for r in split]
    assert all(r["part"] != "99999" for r in every)
    b200c = [r for r in every if r["source"] == "b200c"]
    assert b200c and all(r["color_idx"] == -1 for r in b200c)  # 9999 = unknown colour
    assert any(r["part_idx"] == -1 and r["color_idx"] >= 0 for r in every)  # colour-only captures kept
    label_map = dm.label_map()
    assert label_map["part"] == {p: i for i, p in enumerate(dm.part_names)}
    # without the target list every part is kept
    dm_all = LegoDataModule(root=str(synthetic_root), target_parts=None)
    dm_all.setup()
    assert "99999" in dm_all.part_names


def _write_real_like(root: Path, n_groups: int = 4) -> None:
    """A labels.csv shaped like the shared real data: other column names, subsets, partial labels."""
    rng = np.random.default_rng(0)
    rows = []
    for subset, part, color in (("parts_real", "3001", ""), ("parts_real", "3003", ""),
                                ("colors_real", "", "14"), ("colors_real", "", "4.0"),
                                ("red_parts_render", "3001", "4")):
        for g in range(n_groups):
            for k in range(2):
                rel = f"{subset}/{part or color}/{g}_{k}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / rel), rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
                rows.append({"path": rel, "subset": subset, "part_num": part, "color_id_rebrickable": color,
                             "group_id": f"{subset}:{part or color}:{g}"})
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


REAL_COLUMNS = {"part": "part_num", "color": "color_id_rebrickable", "source": "subset", "group": "group_id"}
REAL_MAP = {"parts_real": "real", "colors_real": "real", "red_parts_render": "legacy"}


def test_configurable_columns_subset_map_and_partial_labels(tmp_path: Path) -> None:
    # 14 groups per part or colour: each stratum can reach a validation fold of 1/7 and a test fold of 1/6
    _write_real_like(tmp_path, n_groups=14)
    dm = LegoDataModule(root=str(tmp_path), manifest="labels.csv", columns=REAL_COLUMNS, source_map=REAL_MAP,
                        image_size=16, seed=0)
    dm.setup()
    assert dm.part_names == ["3001", "3003"] and dm.color_names == ["4", "14"]  # "4.0" read as colour 4
    every = [r for split in dm.splits.values() for r in split]
    assert {r["subset"] for r in every} == set(REAL_MAP)
    parts_only = [r for r in every if r["subset"] == "parts_real"]
    assert all(r["color_idx"] == -1 and r["part_idx"] >= 0 for r in parts_only)
    colors_only = [r for r in every if r["subset"] == "colors_real"]
    assert all(r["part_idx"] == -1 and r["color_idx"] >= 0 for r in colors_only)
    assert {r["subset"] for r in dm.splits["test"]} <= {"parts_real", "colors_real"}
    # each (stratum) part / colour reaches validation and test
    for split in ("val", "test"):
        labels = Counter(r["part"] or r["color"] for r in dm.splits[split])
        assert set(labels) == {"3001", "3003", "14", "4"}
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape[1:] == (3, 16, 16) and batch["image"].max() > 1.0  # 0-255, not normalised


def test_manifest_errors_name_the_culprit(tmp_path: Path) -> None:
    _write_real_like(tmp_path)
    with pytest.raises(DataError, match="part_id"):  # default column names do not match this file
        LegoDataModule(root=str(tmp_path), manifest="labels.csv").setup()
    with pytest.raises(DataError, match="source_map"):  # a subset without a mapping
        LegoDataModule(root=str(tmp_path), manifest="labels.csv", columns=REAL_COLUMNS,
                       source_map={"parts_real": "real"}).setup()
    (tmp_path / "parts_real" / "3001" / "0_0.png").unlink()
    with pytest.raises(DataError, match="0_0.png"):
        LegoDataModule(root=str(tmp_path), manifest="labels.csv", columns=REAL_COLUMNS, source_map=REAL_MAP).setup()
    with pytest.raises(DataError, match="target_parts"):
        LegoDataModule(root=str(tmp_path), manifest="labels.csv", columns=REAL_COLUMNS, source_map=REAL_MAP,
                       target_parts="nope.txt", target_parts_required=True).setup()
    with pytest.raises(ConfigError):
        LegoDataModule(sampling="curriculum", curriculum=None)


def test_dev_samples_limits_every_split(synthetic_root: Path) -> None:
    full = LegoDataModule(root=str(synthetic_root))
    full.setup()
    dm = LegoDataModule(root=str(synthetic_root), dev_samples=10)
    dm.setup()
    assert sum(len(items) for items in dm.splits.values()) == 10 and all(dm.splits.values())
    assert len(dm.splits["train"]) > len(dm.splits["test"])  # shared in proportion to the full splits
    assert "data.dev_samples=10" in dm.manifests_used()[-1][0]
    for name, items in dm.splits.items():  # the first items of the full (shuffled) splits
        assert [r["name"] for r in items] == [r["name"] for r in full.splits[name][: len(items)]]


def test_spec_heads_input_and_extras(synthetic_root: Path) -> None:
    dm = LegoDataModule(root=str(synthetic_root), image_size=24, seed=0)
    spec = dm.spec()
    assert spec.task == "lego" and [h.name for h in spec.heads] == ["part", "color"]
    assert spec.head("part").classes == tuple(synthetic.PARTS)
    assert spec.head("color").classes == tuple(str(c) for c in synthetic.COLORS)  # numeric order: 0 1 2 4 14
    assert spec.input.kind == "image" and spec.input.shape == (3, 24, 24)
    assert spec.input.mean is None and spec.input.std is None  # 0-255 in, the network normalises
    assert spec.extras["subsets"] == ["b200c", "legacy", "real"] and spec.extras["image_size"] == 24
    assert spec.split_sizes == {name: len(items) for name, items in dm.splits.items()}
    label_map = spec.label_map()
    assert label_map["color"]["14"] == 4 and label_map["unknown_label_index"] == -1
    assert [path for path, _ in spec.sources][:2] == [str(synthetic_root / "manifest.csv"),
                                                      str(synthetic_root / "target_parts.txt")]
    # the synthetic set's rows of a part outside the list are dropped, and said so with their count
    assert any(path.startswith("39 row(s) of 1 part(s) not in target_parts.txt dropped") and rows == 39
               for path, rows in spec.sources)
    # option B: the spec has only the head the data trains, so the module builds only that one
    assert [h.name for h in LegoDataModule(root=str(synthetic_root), tasks=["color"]).spec().heads] == ["color"]
    assert [h.name for h in LegoDataModule(root=str(synthetic_root), tasks=["part"]).spec().heads] == ["part"]


def test_split_ids_are_disjoint_and_groups_never_straddle(synthetic_root: Path) -> None:
    dm = LegoDataModule(root=str(synthetic_root), seed=4)
    ids = dm.split_ids()
    assert set(ids) == {"train", "val", "test", "groups"}
    items = {name: set(ids[name]) for name in ("train", "val", "test")}
    assert not items["train"] & items["val"] and not items["train"] & items["test"] and not items["val"] & items["test"]
    groups = {name: set(g) for name, g in ids["groups"].items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert all(g.startswith("capture") for g in groups["val"] | groups["test"])  # real captures only
    # the same seed gives the same split, another seed another one
    assert LegoDataModule(root=str(synthetic_root), seed=4).split_ids() == ids
    assert LegoDataModule(root=str(synthetic_root), seed=5).split_ids()["test"] != ids["test"]


def test_rows_without_a_group_are_their_own_group(tmp_path: Path) -> None:
    _write_real_like(tmp_path, n_groups=6)
    dm = LegoDataModule(root=str(tmp_path), manifest="labels.csv", columns={**REAL_COLUMNS, "group": None},
                        source_map=REAL_MAP, seed=0)
    ids = dm.split_ids()
    assert "groups" not in ids  # no group column: splits.json lists items only
    assert all(dm.splits.values()) and sum(map(len, dm.splits.values())) == 5 * 6 * 2


def test_too_few_groups_to_split_is_a_data_error(tmp_path: Path) -> None:
    _write_real_like(tmp_path, n_groups=1)
    dm = LegoDataModule(root=str(tmp_path), manifest="labels.csv", columns={**REAL_COLUMNS},
                        source_map={**REAL_MAP, "colors_real": "legacy"}, seed=0)
    with pytest.raises(DataError, match="need at least 3 groups"):
        dm.setup()


def test_the_generator_is_registered_and_keyed_by_its_parameters(tmp_path: Path) -> None:
    assert generator("lego") is synthetic.GENERATOR
    dm = LegoDataModule(synthetic_dir=str(tmp_path), synthetic_size=32, synthetic_real_captures=3, seed=2)
    other = LegoDataModule(synthetic_dir=str(tmp_path), synthetic_size=32, synthetic_real_captures=4, seed=2)
    assert dm.data_root() != other.data_root() and dm.data_root().parent == tmp_path
    dm.prepare_data()
    assert (dm.data_root() / "manifest.csv").is_file() and (dm.data_root() / "target_parts.txt").is_file()
    assert dm.spec().input.shape == (3, 32, 32)  # synthetic data: the generated size


@pytest.mark.parametrize("augment", AUGMENT_PRESETS)
@pytest.mark.parametrize("grayscale_p", [0.0, 0.5])
def test_every_pipeline_builds_and_runs_without_warnings(augment: str, grayscale_p: float) -> None:
    # albumentations 2.x only warns about 1.x argument names and then ignores them
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transform = build_transform(48, augment, grayscale_p)
        for seed in range(8):
            transform.set_random_seed(seed)
            out = transform(image=image)["image"]
    assert tuple(out.shape) == (3, 48, 48)


def test_strong_pipeline_matches_the_seed_settings() -> None:
    import albumentations as A

    ops = {type(t).__name__: t for t in build_transform(224, "strong").transforms}
    assert ops["GaussNoise"].std_range == pytest.approx((np.sqrt(10) / 255, np.sqrt(50) / 255))
    assert ops["CoarseDropout"].num_holes_range == (8, 8)
    assert isinstance(ops["Affine"], A.Affine) and ops["Affine"].p == 0.5
    assert ops["HueSaturationValue"].p == 0.3 and ops["GaussianBlur"].p == 0.2


def test_manifest_path_traversal_is_refused(tmp_path: Path) -> None:
    _write_real_like(tmp_path)
    text = (tmp_path / "labels.csv").read_text().splitlines()
    text[1] = "../../etc/passwd" + text[1][text[1].index(","):]
    (tmp_path / "labels.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"'../../etc/passwd' \(.*labels.csv, line 2\).*outside the data root"):
        LegoDataModule(root=str(tmp_path), manifest="labels.csv", columns=REAL_COLUMNS, source_map=REAL_MAP).setup()


def _write_manifest(root: Path, rows: list[dict], encoding: str = "utf-8") -> None:
    text = ",".join(rows[0]) + "\n" + "".join(",".join(str(v) for v in r.values()) + "\n" for r in rows)
    (root / "manifest.csv").write_bytes(text.encode(encoding))


def _float_id_rows(root: Path) -> list[dict]:
    """Two parts and two colours, 10 groups each, the ids written as pandas writes a column with empty cells."""
    rng = np.random.default_rng(1)
    rows = []
    for part in ("3001", "3003"):
        for g in range(10):
            rel = f"img/{part}_{g}.png"
            (root / "img").mkdir(exist_ok=True)
            cv2.imwrite(str(root / rel), rng.integers(0, 255, (12, 12, 3), dtype=np.uint8))
            rows.append({"path": rel, "part_id": f"{part}.0" if g % 2 else part,
                         "color_id": "" if g % 3 == 0 else ("4.0" if g % 2 else "14"), "source": "real",
                         "group_id": f"{part}:{g}"})
    return rows


def test_float_ids_are_the_ids_they_stand_for_also_against_the_target_list(tmp_path: Path) -> None:
    _write_manifest(tmp_path, _float_id_rows(tmp_path))
    (tmp_path / "target_parts.txt").write_text("3001\n3003\n")
    dm = LegoDataModule(root=str(tmp_path), image_size=12)
    dm.setup()
    assert dm.part_names == ["3001", "3003"] and dm.color_names == ["4", "14"]
    assert sum(len(v) for v in dm.splits.values()) == 20  # no row dropped by the target list


def test_bad_ids_target_lists_and_encodings_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = _float_id_rows(tmp_path)
    _write_manifest(tmp_path, [*rows[:3], {**rows[3], "color_id": "abc"}, *rows[4:]])
    with pytest.raises(DataError, match=r"manifest.csv, line 5: color_id must be an integer id, got 'abc'"):
        LegoDataModule(root=str(tmp_path)).setup()
    _write_manifest(tmp_path, [*rows[:3], {**rows[3], "source": "r\xe9al"}, *rows[4:]], encoding="latin-1")
    with pytest.raises(DataError, match=r"manifest.csv, line 5: not UTF-8 text"):
        LegoDataModule(root=str(tmp_path)).setup()
    _write_manifest(tmp_path, rows)
    (tmp_path / "parts").mkdir()
    with pytest.raises(DataError, match=r"data.target_parts: .*parts is a folder"):
        LegoDataModule(root=str(tmp_path), target_parts="parts").setup()
    (tmp_path / "other.txt").write_text("777\n")
    with pytest.raises(DataError, match=r"no row has a part of the target list other.txt \(its ids: 777; the "
                                        r"manifest's: 3001, 3003\)"):
        LegoDataModule(root=str(tmp_path), target_parts="other.txt").setup()
    # a target part without images warns and is recorded; rows of parts outside the list are counted
    (tmp_path / "some.txt").write_text("3001\n777\n")
    dm = LegoDataModule(root=str(tmp_path), target_parts="some.txt", tasks=["part", "color"], image_size=12)
    with pytest.raises(DataError, match=r"holds 1 class\(es\) for head 'part' \(3001: \d+\)"):
        dm.setup()  # one target part left: a one-class part head is refused
    used = dict(dm.sources)
    assert used["10 row(s) of 1 part(s) not in some.txt dropped, e.g. 3003 (10) (data.target_parts)"] == 10
    assert "1 target part(s) of some.txt have no row" in capsys.readouterr().out


def test_duplicated_rows_and_copies_never_reach_two_splits(tmp_path: Path) -> None:
    rows = [{**r, "group_id": ""} for r in _float_id_rows(tmp_path)]  # no groups: each row its own
    copies = []
    for r in rows[:5]:
        copy = r["path"].replace(".png", "_copy.png")
        shutil.copy(tmp_path / r["path"], tmp_path / copy)
        copies.append({**r, "path": copy})
    _write_manifest(tmp_path, rows + rows + copies)
    dm = LegoDataModule(root=str(tmp_path), image_size=12, seed=2)
    dm.setup()
    assert sum(len(v) for v in dm.splits.values()) == 20
    assert ("duplicates dropped (same file or content, kept once): " f"{tmp_path / 'manifest.csv'} 25", 25) \
        in dm.manifests_used()

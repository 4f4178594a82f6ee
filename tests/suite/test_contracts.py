"""The task contract (suite/contracts.py): types, checks, and a sixth task that plugs in through it alone."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datamodules.grouped_split import grouped_split
from suite.contracts import (
    ContractError,
    DataSpec,
    Head,
    InputSpec,
    PredictionRow,
    StepOutput,
    check_callback_needs,
    check_split_disjoint,
    score_columns,
    step_output,
)
from suite.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]
GLYPHS = ["hydra.searchpath=[file://tests/glyph_task/conf]", "experiment=glyphs"]


def run_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "train.py", *args, f"paths.data_dir={tmp_path / 'data'}"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


def test_sixth_task_trains_through_the_contract_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_cli([*GLYPHS, "debug=fast", f"hydra.run.dir={run}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "label_map.json").read_text())["digit"] == {"0": 0, "1": 1, "2": 2, "3": 3}
    splits = json.loads((run / "splits.json").read_text())
    # debug=fast keeps the subset its few batches read (data.dev_samples, conf/debug/fast.yaml) of the 96 items
    assert all(splits[s] for s in ("train", "val", "test")) and sum(len(splits[s]) for s in splits) == 12
    assert not set(splits["train"]) & set(splits["test"]) and not set(splits["val"]) & set(splits["test"])
    with open(run / "predictions_agg.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:4] == ["item_id", "group", "label", "pred"]
    assert set(score_columns(rows[0])) == {"0", "1", "2", "3"}
    assert {r["item_id"] for r in rows} <= set(splits["test"])
    manifests = (run / "manifests_used.txt").read_text()
    assert "glyphs-" in manifests and "\t96" in manifests and "data.dev_samples=12" in manifests
    # the generic callbacks work for it: ClassGap logged per-class accuracy of its own class names
    history = json.loads((run / "training_history.json").read_text())
    assert "val/acc_3" in history[0] and "val/class_gap" in history[0]


def test_the_sixth_task_touches_no_suite_or_callbacks_file() -> None:
    task_files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests" / "glyph_task").rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts)
    assert all(f.startswith("tests/glyph_task/") for f in task_files)
    for folder in ("suite", "callbacks", "datamodules", "lightning_modules", "conf"):
        hits = [p for p in (ROOT / folder).rglob("*") if p.is_file() and "glyph" in p.read_text(errors="ignore")]
        assert not hits, f"{folder} knows about the glyph task: {hits}"


def test_callback_needing_a_step_output_the_task_does_not_give_fails_at_start(tmp_path: Path) -> None:
    result = run_cli([*GLYPHS, f"hydra.run.dir={tmp_path / 'run'}",
                      "+callbacks.needy._target_=tests.helpers.NeedsRowsInValidation"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "callbacks.needy" in result.stderr and "'rows'" in result.stderr
    assert not (tmp_path / "data").exists(), "the data was read before the contract was checked"


def test_selection_metric_that_nothing_logs_is_refused_before_data(make_cfg, tmp_path: Path) -> None:
    from suite.training import train

    cfg = make_cfg(["experiment=segmentation", "selection_metric=val/f2", "model.pretrained=false"],
                   tmp_path / "run")
    with pytest.raises(ConfigError, match=r"selection_metric: 'val/f2' is not logged.*val/f1"):
        train(cfg)
    assert not (tmp_path / "run" / "splits.json").exists()


def test_step_output_is_typed_and_loud() -> None:
    out = StepOutput(loss=torch.tensor(1.0), preds=torch.tensor([1]))
    assert step_output(out.for_training(), "x") is out and step_output(out, "x") is out
    assert out.require("preds", "ClassGap") is out.preds
    with pytest.raises(ContractError, match=r"ClassGap needs the step output field 'target'"):
        out.require("target", "ClassGap")
    with pytest.raises(ContractError, match=r"expected a StepOutput.*dict"):
        step_output({"preds": torch.tensor([1])}, "callbacks.ClassGap")
    with pytest.raises(ContractError, match="PredictionWriter needs the step output field 'rows'"):
        out.require("rows", "PredictionWriter")  # a test step that forgot its rows: never an empty file
    with pytest.raises(ContractError, match="no loss"):
        StepOutput(preds=torch.tensor([1])).for_training()


def test_callback_needs_are_checked_against_module_declarations() -> None:
    class Needy:
        needs = {"val": ("preds", "target")}

    check_callback_needs({"gap": Needy()}, {"val": ("preds", "target", "prob")}, "M")
    with pytest.raises(ContractError, match=r"callbacks.gap \(Needy\) needs \['target'\] from the val step"):
        check_callback_needs({"gap": Needy()}, {"val": ("preds",)}, "M")


def test_prediction_row_schema() -> None:
    row = PredictionRow("a.png", label="cat", pred="dog", group="g1", scores={"cat": 0.25, "dog": 0.75},
                        extras={"source": "real"})
    record = row.as_record()
    assert list(record) == ["item_id", "group", "label", "pred", "score_cat", "score_dog", "source"]
    assert score_columns(record) == {"cat": "score_cat", "dog": "score_dog"}
    with pytest.raises(ContractError, match="reuse schema columns"):
        PredictionRow("a", extras={"label": 1}).as_record()


def test_data_spec_round_trip_and_label_map() -> None:
    spec = DataSpec("t", (Head("label", ("normal", "tail"), positive=1),), InputSpec("clip", (8, 3, None, None)),
                    sources=(("m.csv", 3),), split_ids={"train": ("a", "b"), "val": ("c",)}, extras={"fps": 25})
    again = DataSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again.heads == spec.heads and again.input == spec.input and again.extras == {"fps": 25}
    assert spec.split_sizes == {"train": 2, "val": 1}
    assert spec.label_map() == {"label": {"normal": 0, "tail": 1}, "fps": 25}
    with pytest.raises(ContractError, match="no head 'part'"):
        spec.head("part")
    with pytest.raises(ContractError, match="repeat"):
        Head("x", ("a", "a"))


def test_overlapping_splits_are_refused_naming_examples() -> None:
    check_split_disjoint({"train": ["a", "b"], "val": ["c"], "test": ["d"]})
    with pytest.raises(DataError, match=r"the train and test splits share 1 items \(e.g. b\)"):
        check_split_disjoint({"train": ["a", "b"], "val": ["c"], "test": ["b"]})


def test_grouped_split_keeps_groups_whole_and_is_seeded() -> None:
    groups = [f"video{i // 4}" for i in range(80)]
    labels = [int(i % 4 == 0) for i in range(80)]
    parts = grouped_split(80, {"val": 0.2, "test": 0.2}, seed=3, labels=labels, groups=groups)
    assert parts == grouped_split(80, {"val": 0.2, "test": 0.2}, seed=3, labels=labels, groups=groups)
    assert sorted(i for p in parts.values() for i in p) == list(range(80))
    owners = {}
    for name, indices in parts.items():
        for i in indices:
            assert owners.setdefault(groups[i], name) == name, f"{groups[i]} in two splits"
    assert {name: len(v) for name, v in parts.items()} == {"train": 48, "val": 16, "test": 16}
    with pytest.raises(DataError, match="need at least 3 groups"):
        grouped_split(4, {"val": 0.2, "test": 0.2}, 0, groups=["a", "a", "b", "b"])
    with pytest.raises(ConfigError, match=r"data.val_fraction must be in \(0, 1\)"):
        grouped_split(10, {"val": 1.5}, 0)


def test_synthetic_cli_writes_any_task_layout(tmp_path: Path) -> None:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run([sys.executable, "-m", "datamodules.synthetic", "segmentation", str(tmp_path / "seg"),
                             "n_images=3", "size=32"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "seg" / "images").glob("*.png"))) == 3
    bad = subprocess.run([sys.executable, "-m", "datamodules.synthetic", "segmentation", str(tmp_path / "x"),
                          "n_imgs=3"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "n_imgs" in bad.stderr and "n_images" in bad.stderr

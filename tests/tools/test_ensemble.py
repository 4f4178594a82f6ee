"""tools.ensemble: averaging on hand-made runs, refusals (task, items, labels, no probabilities), real tiny runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tools.ensemble import build_ensemble, main

NAMES = ("normal", "tail")


BEHAVIOR = "lightning_modules.behavior.BehaviorModule"


def make_run(path: Path, probs: list[float], labels: list[int], target: str = BEHAVIOR,
             items: list[str] | None = None, extra: dict[str, list] | None = None) -> Path:
    """A finished run dir of a binary task: config, metrics and predictions_agg.csv with the suite's columns."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"seed": 1, "task_name": "intravideo", "model": {"_target_": target, "threshold": 0.5}}))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=intravideo"]))
    (path / "metrics").mkdir()
    (path / "metrics" / "metrics.json").write_text(json.dumps({"test/f1_tail": 0.5}))
    items = items or [f"e{i}" for i in range(len(probs))]
    rows = []
    for i, (item, p, t) in enumerate(zip(items, probs, labels, strict=True)):
        row = {"item_id": item, "group": f"v{i % 2}", "label": NAMES[t], "pred": NAMES[int(p >= 0.5)],
               "score_normal": 1 - p, "score_tail": p}
        row.update({k: v[i] for k, v in (extra or {}).items()})
        rows.append(row)
    with (path / "predictions_agg.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    labels = [0, 1, 1, 0, 1, 0]
    make_run(root / "0", [0.2, 0.9, 0.4, 0.6, 0.7, 0.1], labels)
    make_run(root / "1", [0.4, 0.5, 0.8, 0.2, 0.3, 0.3], labels)
    make_run(root / "2", [0.0, 0.7, 0.6, 0.4, 0.8, 0.5], labels)
    return root


def test_probabilities_are_averaged_per_item_and_scored(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(sweep)]) == 0
    out = sweep / "ensemble"
    rows = {r["item_id"]: r for r in read_csv(out / "ensemble_predictions.csv")}
    means = np.mean([[0.2, 0.9, 0.4, 0.6, 0.7, 0.1], [0.4, 0.5, 0.8, 0.2, 0.3, 0.3],
                     [0.0, 0.7, 0.6, 0.4, 0.8, 0.5]], axis=0)
    for i, mean in enumerate(means):
        row = rows[f"e{i}"]
        assert float(row["score_tail"]) == pytest.approx(mean, abs=1e-6)
        assert float(row["score_normal"]) == pytest.approx(1 - mean, abs=1e-6)
        assert row["pred"] == NAMES[int(mean >= 0.5)]
    # e3: run 0 says tail, runs 1 and 2 normal; the mean 0.4 is normal: 2 of 3 agree
    assert float(rows["e3"]["agreement"]) == pytest.approx(2 / 3, abs=1e-3)
    assert float(rows["e0"]["score_tail@1"]) == pytest.approx(0.4)
    metrics = json.loads((out / "ensemble_metrics.json").read_text())
    assert metrics["items"] == 6 and set(metrics["members"]) == {"0", "1", "2"}
    # the ensemble gets every item right (means .2 .7 .6 .4 .6 .3 against 0 1 1 0 1 0); each run does not
    assert metrics["ensemble"]["accuracy"] == pytest.approx(1.0)
    assert metrics["ensemble"]["f1_tail"] == pytest.approx(1.0)
    assert metrics["ensemble"]["auroc"] == pytest.approx(1.0)
    # run 1: 0.5 on e1 counts as tail (p >= threshold, as the modules predict); e4 at 0.3 is missed
    assert metrics["members"]["1"]["accuracy"] == pytest.approx(5 / 6)
    assert metrics["members"]["1"]["recall_tail"] == pytest.approx(2 / 3)
    assert metrics["mean_of_members"]["accuracy"] == pytest.approx(
        np.mean([metrics["members"][k]["accuracy"] for k in "012"]))
    assert json.loads((out / ".output.json").read_text())["kind"] == "ensemble"
    printed = capsys.readouterr().out
    assert "ensemble" in printed and "f1_tail" in printed


def test_rerun_replaces_its_own_output_and_out_is_honoured(sweep: Path, tmp_path: Path) -> None:
    assert main([str(sweep)]) == 0
    assert main([str(sweep)]) == 0  # an earlier ensemble output is replaced as a unit
    assert main([str(sweep / "0"), str(sweep / "2"), "--out", str(tmp_path / "ens")]) == 0
    assert json.loads((tmp_path / "ens" / "ensemble_metrics.json").read_text())["runs"].keys() == {"0", "2"}
    other = tmp_path / "user_folder"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main([str(sweep), "--out", str(other)]) == 2  # never written over what a user had
    assert (other / "notes.txt").read_text() == "mine"


def test_mismatched_items_are_refused_naming_the_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_run(tmp_path / "s" / "a", [0.1, 0.9, 0.5], [0, 1, 1])
    make_run(tmp_path / "s" / "b", [0.1, 0.9, 0.5], [0, 1, 1], items=["e0", "e1", "x9"])
    assert main([str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "runs a and b" in err and "different items" in err and "e2" in err and "x9" in err
    assert not (tmp_path / "s" / "ensemble").exists() and not (tmp_path / "s" / "ensemble.partial").exists()


def test_different_labels_tasks_and_single_runs_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_run(tmp_path / "l" / "a", [0.1, 0.9], [0, 1])
    make_run(tmp_path / "l" / "b", [0.1, 0.9], [1, 1])
    assert main([str(tmp_path / "l")]) == 2
    assert "label 1 test item(s) differently" in capsys.readouterr().err
    make_run(tmp_path / "t" / "a", [0.1, 0.9], [0, 1])
    make_run(tmp_path / "t" / "b", [0.1, 0.9], [0, 1], target="lightning_modules.violence.ViolenceModule")
    assert main([str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "different tasks" in err and "BehaviorModule: a" in err and "ViolenceModule: b" in err
    assert main([str(tmp_path / "t" / "a")]) == 2
    assert "at least 2 runs" in capsys.readouterr().err


def test_unfinished_run_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_run(tmp_path / "s" / "a", [0.1, 0.9], [0, 1])
    make_run(tmp_path / "s" / "b", [0.1, 0.9], [0, 1])
    (tmp_path / "s" / "b" / "predictions_agg.csv").unlink()
    assert main([str(tmp_path / "s")]) == 2
    assert "run b" in capsys.readouterr().err


def test_rows_without_probabilities_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for name in ("a", "b"):
        run = tmp_path / "s" / name
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
            {"task_name": "segmentation", "model": {"_target_": "lightning_modules.segmentation.SegmentationModule"}}))
        (run / ".hydra" / "overrides.yaml").write_text("[]\n")
        (run / "predictions_agg.csv").write_text("item_id,group,label,pred,f1,iou\nimg0,,,,0.5,0.4\n")
    assert main([str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "SegmentationModule" in err and "no score_<class> columns" in err and "f1, iou" in err


def test_tta_column_is_averaged_and_scored(tmp_path: Path) -> None:
    labels = [0, 1, 1, 0]
    make_run(tmp_path / "s" / "a", [0.4, 0.6, 0.6, 0.4], labels, extra={"prob_tail_tta": [0.9, 0.9, 0.9, 0.1]})
    make_run(tmp_path / "s" / "b", [0.4, 0.6, 0.6, 0.4], labels, extra={"prob_tail_tta": [0.0, 0.9, 0.9, 0.1]})
    result = build_ensemble([tmp_path / "s"])
    assert result["members"]["a"]["tta_accuracy"] == pytest.approx(0.75)
    assert result["ensemble"]["tta_accuracy"] == pytest.approx(1.0)  # e0: (0.9 + 0.0) / 2 < 0.5
    assert result["table"]["prob_tail_tta"].tolist() == pytest.approx([0.45, 0.9, 0.9, 0.1])


def test_multiclass_top_k_and_colour_vote(tmp_path: Path) -> None:
    """LEGO-like rows: part probabilities are averaged (top-1/top-5), the colour head is voted by confidence."""
    parts = [f"p{i}" for i in range(6)]
    probs = {"a": [[0.5, 0.3, 0.1, 0.05, 0.03, 0.02], [0.1, 0.2, 0.6, 0.05, 0.03, 0.02]],
             "b": [[0.1, 0.6, 0.1, 0.1, 0.05, 0.05], [0.1, 0.2, 0.6, 0.05, 0.03, 0.02]]}
    colours = {"a": [("red", 0.9), ("blue", 0.6)], "b": [("blue", 0.5), ("green", 0.7)]}
    for name in ("a", "b"):
        run = tmp_path / "s" / name
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"model": {"_target_": "x.LegoModule"}}))
        (run / ".hydra" / "overrides.yaml").write_text("[]\n")
        rows = []
        for i, p in enumerate(probs[name]):
            pred = parts[int(np.argmax(p))]
            rows.append({"item_id": f"img{i}", "group": "", "label": "p0", "pred": pred,
                         **{f"score_{c}": v for c, v in zip(parts, p, strict=True)},
                         "part_true": "p0", "part_pred": pred, "part_confidence": max(p),
                         "color_true": "red", "color_pred": colours[name][i][0],
                         "color_confidence": colours[name][i][1]})
        with (run / "predictions_agg.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    result = build_ensemble([tmp_path / "s"])
    # img0: mean p0 0.30 < p1 0.45 -> p1 (wrong); img1: p2 (wrong) with p0 at rank 4 of 6
    assert result["table"]["pred"].tolist() == ["p1", "p2"]
    assert result["ensemble"]["top1"] == pytest.approx(0.0)
    assert result["ensemble"]["top5"] == pytest.approx(1.0)
    assert result["members"]["a"]["top1"] == pytest.approx(0.5)
    # colour: img0 red 0.9 beats blue 0.5; img1 green 0.7 beats blue 0.6
    assert result["table"]["color_pred"].tolist() == ["red", "green"]
    assert result["ensemble"]["color_accuracy"] == pytest.approx(0.5)
    assert result["members"]["b"]["color_accuracy"] == pytest.approx(0.0)
    assert "part_accuracy" not in result["ensemble"]  # the primary head is averaged, not voted


@pytest.mark.slow
def test_two_seeds_of_a_real_lego_run(tmp_path: Path, shared_data_dir: Path) -> None:
    from tests.conf.test_experiments import FAST
    from tests.conftest import train_run

    sweep = tmp_path / "sweep"
    for seed in (1, 2):
        # data.seed fixed: the seeds change the weights, not the split, so the test items are the same
        train_run(["experiment=lego_multitask", *FAST, "data.image_size=32", "data.batch_size=16", f"seed={seed}",
                   "data.seed=0"], sweep / str(seed), shared_data_dir)
    assert main([str(sweep)]) == 0
    metrics = json.loads((sweep / "ensemble" / "ensemble_metrics.json").read_text())
    assert metrics["task"] == "LegoModule" and set(metrics["members"]) == {"1", "2"}
    assert {"top1", "top5", "color_accuracy"} <= set(metrics["ensemble"])
    assert 0.0 <= metrics["ensemble"]["top1"] <= metrics["ensemble"]["top5"] <= 1.0
    rows = read_csv(sweep / "ensemble" / "ensemble_predictions.csv")
    assert len(rows) == metrics["items"] > 0
    member_rows = read_csv(sweep / "1" / "predictions_agg.csv")
    assert {r["item_id"] for r in rows} == {r["item_id"] for r in member_rows}


def test_out_that_is_a_file_is_refused_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing"), "--out", str(tmp_path / "file.txt")])
    assert exit_info.value.code == 2 and "is a file" in capsys.readouterr().err


def test_ctrl_c_exits_130_without_a_traceback() -> None:
    import subprocess
    import sys

    code = ("import argparse, runpy, sys\n"
            "def interrupted(*args, **kwargs):\n    raise KeyboardInterrupt\n"
            "argparse.ArgumentParser.parse_args = interrupted\n"
            "sys.argv = ['tools.ensemble']\nrunpy.run_module('tools.ensemble', run_name='__main__')\n")
    root = Path(__file__).resolve().parents[2]
    env = {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr

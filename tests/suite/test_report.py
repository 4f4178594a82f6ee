"""suite.report: report.md and its pictures, from hand-written run dirs (fast) and tiny real runs of every task
(slow: training is the slow part, done once per module)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ALERTS = [
    {"epoch": 0, "step": 4, "batch": None, "rule": "class_gap", "severity": "warn", "action": "warn", "seed": "000",
     "message": "val class gap 0.90 above 0.50", "values": {"val/class_gap": 0.9}, "hint": "check the class balance"},
    {"epoch": None, "step": 9, "batch": 1, "rule": "collapse", "severity": "critical", "action": "stop",
     "seed": "000", "message": "predictions collapsed to one class", "values": {"train/collapse": 1.0}, "hint": None},
]
VERDICT = {"seed": "000", "split": "test", "met": 1, "missed": 1, "unknown": 1, "passed": False, "criteria": [
    {"name": "test tail recall", "metric": "test/tail_recall", "op": ">", "target": 0.35, "value": 0.41, "met": True,
     "note": "seed 003"},
    {"name": "test balanced accuracy", "metric": "test/balanced_acc", "op": ">=", "target": 0.8, "value": 0.55,
     "met": False, "note": ""},
    {"name": "latency", "metric": "export/latency_ms", "op": "<", "target": 50, "value": None, "met": None,
     "note": "not measured"},
]}


def fake_run(path: Path, *, alerts: list[dict[str, Any]] | None = None, verdict: dict[str, Any] | None = None,
             epochs: int = 4) -> Path:
    """A finished run dir of a binary video task as train.py lays it out, without training (no video files:
    the worst-items section has to say it found none)."""
    rng = np.random.default_rng(0)
    (path / ".hydra").mkdir(parents=True)
    (path / "metrics").mkdir()
    (path / ".hydra" / "config.yaml").write_text(
        "task_name: violence_optimal\nseed: 3\nselection_metric: val/balanced_acc\nselection_mode: max\n"
        "model:\n  _target_: lightning_modules.violence.ViolenceModule\ndata:\n  root: null\n")
    metrics: dict[str, Any] = {"test/balanced_acc": 0.55, "test/loss": 0.7, "best_val/balanced_acc": 0.6,
                               "epochs_trained": epochs, "evaluated_checkpoint": str(path / "checkpoints/best.ckpt")}
    if verdict is not None:
        metrics["verdict"] = verdict
    (path / "metrics" / "metrics.json").write_text(json.dumps(metrics))
    history = [{"epoch": e, "step": 5 * (e + 1), "train/loss": 1.0 / (e + 1), "val/loss": 1.1 / (e + 1),
                "train/balanced_acc": 0.5 + 0.1 * e, "val/balanced_acc": 0.5 + 0.05 * e, "val/f1": 0.4 + 0.1 * e}
               for e in range(epochs)]
    (path / "training_history.json").write_text(json.dumps(history))
    with (path / "predictions_agg.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["item_id", "group", "label", "pred", "score_non_violent", "score_violent", "correct"])
        for i in range(40):
            label = "violent" if i % 2 else "non_violent"
            p = float(np.clip(rng.normal(0.65 if i % 2 else 0.35, 0.2), 0.01, 0.99))
            pred = "violent" if p > 0.5 else "non_violent"
            writer.writerow([f"test/{label}/v{i:03d}.mp4", f"source{i % 4}", label, pred, round(1 - p, 6),
                             round(p, 6), int(pred == label)])
    (path / "label_map.json").write_text(json.dumps({"class": {"non_violent": 0, "violent": 1}}))
    if alerts is not None:
        (path / "alerts.json").write_text(json.dumps(alerts))
    return path


def pictures(report: Path) -> list[Path]:
    """The PNGs report.md links."""
    return [report.parent / link for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())]


def assert_valid_pictures(report: Path) -> list[Path]:
    found = pictures(report)
    assert found, report.read_text()
    for path in found:
        assert path.is_file() and path.parent.name == "report", path
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 100, (path, image.size)
            # not a blank canvas: a drawn figure has many grey levels
            assert len(np.unique(np.asarray(image.convert("L")))) > 10, path
    return found


# -- hand-written runs (fast) -------------------------------------------------------------------------------
def test_alarms_and_verdict_are_reported(tmp_path: Path) -> None:
    from suite.report import write_run_report

    run = fake_run(tmp_path / "run", alerts=ALERTS, verdict=VERDICT)
    report = write_run_report(run)
    text = report.read_text()
    assert report == run / "report.md"
    assert "not passed" in text and "1 met, 1 missed, 1 unknown" in text
    assert "| test balanced accuracy | test/balanced_acc | >= 0.8 | 0.55 | missed |" in text
    assert "| latency | export/latency_ms | < 50 | — | unknown | not measured |" in text
    assert "2 alarm(s) fired" in text and "class_gap (warn) ×1" in text and "1 stopped the run" in text
    assert "predictions collapsed to one class" in text
    names = {p.name for p in assert_valid_pictures(report)}
    assert {"alarms.png", "curves.png", "confusion.png", "calibration.png"} <= names
    # seed 3 of the config, per-group table of the `group` column, ECE in the calibration caption
    assert "| seed | 3 |" in text and "**Per group**" in text and re.search(r"ECE\) \d\.\d{3}", text)
    assert "Worst items" in text and "none found on disk" in text


@pytest.mark.parametrize(("alerts", "expected"), [(None, "The run was not watched"), ([], "No alarms")])
def test_no_alerts_file_differs_from_no_alarms(tmp_path: Path, alerts: list | None, expected: str) -> None:
    from suite.report import write_run_report

    text = write_run_report(fake_run(tmp_path / "run", alerts=alerts)).read_text()
    assert expected in text
    assert "No verdict recorded" in text


def test_report_replaces_the_previous_one_as_a_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import suite.report.writer as writer

    run = fake_run(tmp_path / "run", alerts=[])
    (run / "report").mkdir()
    (run / "report" / "stale.png").write_bytes(b"old")
    writer.write_run_report(run)
    assert not (run / "report" / "stale.png").exists()  # the pictures' folder is the new one, whole
    before = (run / "report.md").read_text()
    pngs = sorted(p.name for p in (run / "report").iterdir())

    def broken(*args: Any) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "render", broken)
    with pytest.raises(RuntimeError):
        writer.write_run_report(run)
    assert (run / "report.md").read_text() == before and sorted(p.name for p in (run / "report").iterdir()) == pngs
    assert not [p for p in run.iterdir() if p.name.startswith(".report-")]  # no temp folder left behind


def test_a_section_that_fails_does_not_cost_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import suite.report.writer as writer

    def broken(*args: Any) -> None:
        raise ValueError("odd column")

    monkeypatch.setattr(writer, "confusion_section", broken)
    text = writer.write_run_report(fake_run(tmp_path / "run", alerts=[])).read_text()
    assert "could not be drawn: ValueError: odd column" in text and "## Calibration" in text


def test_unfinished_run_is_a_data_error(tmp_path: Path) -> None:
    from suite.errors import DataError
    from suite.report import write_run_report

    run = fake_run(tmp_path / "run")
    (run / "metrics" / "metrics.json").unlink()
    with pytest.raises(DataError, match="not a finished training run"):
        write_run_report(run)
    (run / "metrics" / "metrics.json").write_text("{}")
    (run / "alerts.json").write_text("{not json")
    with pytest.raises(DataError, match="alerts.json cannot be read"):
        write_run_report(run)


def test_wall_time_from_launch_record_else_log(tmp_path: Path) -> None:
    from suite.report.run import load_run
    from suite.report.summary import wall_time_s

    run = fake_run(tmp_path / "run")
    assert wall_time_s(load_run(run)) is None
    (run / "train.log").write_text("[2026-11-27 13:34:14,662][x][INFO] - Seed set\nplain line\n"
                                   "[2026-11-27 13:36:02,819][x][INFO] - Loaded model weights\n")
    assert wall_time_s(load_run(run)) == (108.0, "train.log, first to last line")
    (run / "launch.json").write_text(json.dumps({"started": 100.0, "finished": 190.5}))
    assert wall_time_s(load_run(run)) == (90.5, "launch.json")


def test_expected_calibration_error() -> None:
    from suite.report.classification import expected_calibration_error

    confidence = np.array([0.9, 0.9, 0.9, 0.9, 0.3, 0.3])
    correct = np.array([1, 1, 1, 0, 0, 1], float)
    # bin 0.9: 4/6 share, |0.75 - 0.9| = 0.15; bin 0.3: 2/6 share, |0.5 - 0.3| = 0.2
    assert expected_calibration_error(correct, confidence) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.2)
    assert expected_calibration_error(np.ones(3), np.ones(3)) == pytest.approx(0.0)


def test_sources_of_every_manifests_used_format(tmp_path: Path) -> None:
    from suite.report.run import _sources

    listing = tmp_path / "manifests_used.txt"
    listing.write_text("path\trows\n/d/events.csv\t5\n"
                       "train: /d/events.csv (data.split=intravideo, seed 42)\t56\n"
                       "138 row(s) of 1 part(s) not in target_parts.txt dropped, e.g. 99999 (138)\t138\n")
    assert _sources(listing) == ["/d/events.csv", "/d/events.csv"]


# -- tiny real runs of every task (slow) ----------------------------------------------------------------------
TASK_RUNS: dict[str, list[str]] = {
    "segmentation": ["experiment=segmentation", "data.synthetic_images=12", "data.synthetic_size=32"],
    "lego": ["experiment=lego_multitask", "data.image_size=32"],
    "behavior": ["experiment=intravideo"],
    "violence": ["experiment=violence_optimal"],
    "relevance": ["experiment=relevance_segmentation"],
}
WORST_PICTURE = {"segmentation": "worst_masks.png", "lego": "confused_pairs.png", "behavior": "worst_events.png",
                 "violence": "worst_events.png", "relevance": "worst_events.png"}


def _force_an_error(run_dir: Path) -> None:
    """A tiny run may get every test item right: make the first labelled row wrong, so that the worst-items
    section has something to draw (segmentation ranks every image by F1 and needs no error)."""
    path = run_dir / "predictions_agg.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    classes = [c[len("score_"):] for c in rows[0] if c.startswith("score_")]
    for row in rows:
        if row.get("label") and row["label"] == row["pred"] and len(classes) >= 2:
            # the positive (last) class missed where there is one, else any other class read
            row["pred"] = classes[0] if row["label"] == classes[-1] else classes[-1]
            break
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> dict[str, Path]:
    """One tiny run per task (1 epoch, synthetic data), trained once for the module."""
    from tests.conf.test_experiments import FAST
    from tests.conftest import train_run

    runs = {}
    for task, overrides in TASK_RUNS.items():
        run_dir = tmp_path_factory.mktemp(f"report_{task}") / "run"
        train_run([*overrides, *FAST], run_dir, shared_data_dir)
        _force_an_error(run_dir)
        runs[task] = run_dir
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASK_RUNS))
def test_report_of_a_real_run(task: str, task_runs: dict[str, Path]) -> None:
    from suite.report import write_run_report

    run = task_runs[task]
    shutil.rmtree(run / "report", ignore_errors=True)  # training may have written one: this one is ours
    (run / "report.md").unlink(missing_ok=True)
    report = write_run_report(run)
    text = report.read_text()
    assert f"({task})" in text.splitlines()[0]
    assert "## Verdict" in text and "## Alarms" in text and "could not be drawn" not in text
    names = {p.name for p in assert_valid_pictures(report)}
    assert "curves.png" in names and WORST_PICTURE[task] in names, text
    if task != "segmentation":
        assert "confusion.png" in names
        with (run / "predictions_agg.csv").open(newline="") as fh:
            scored = sum(bool(row["label"]) for row in csv.DictReader(fh))
        # a reliability diagram needs two labelled items at least (a debug=fast lego test split may hold one)
        assert ("calibration.png" in names) == (scored >= 2), (scored, names)


@pytest.mark.slow
def test_hand_written_alerts_and_verdict_on_a_real_run(task_runs: dict[str, Path], tmp_path: Path) -> None:
    from suite.report import write_run_report

    run = shutil.copytree(task_runs["behavior"], tmp_path / "run")
    (run / "alerts.json").write_text(json.dumps(ALERTS))
    metrics = json.loads((run / "metrics" / "metrics.json").read_text())
    (run / "metrics" / "metrics.json").write_text(json.dumps({**metrics, "verdict": VERDICT}))
    text = write_run_report(run).read_text()
    assert "2 alarm(s) fired" in text and "| test tail recall | test/tail_recall | > 0.35 | 0.41 | met |" in text
    assert (run / "report" / "alarms.png").is_file()

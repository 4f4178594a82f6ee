"""tools.compare on hand-made run dirs: grouping, mean ± std over seeds, outputs, plots, errors."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from tools.compare import assign_groups, build_report, find_runs, load_run, main

# experiment -> test/f1 per seed (seeds 1, 2, 3)
F1 = {"baseline_old_split": [0.20, 0.30, 0.25], "intravideo": [0.50, 0.40, 0.45],
      "intravideo_boosted": [0.60, 0.70, 0.65]}


def make_run(path: Path, overrides: list[str], metrics: dict | None, history: int = 3,
             predictions: list[tuple[float, int]] | None = None) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    seed = next(int(o.split("=")[1]) for o in overrides if o.startswith("seed="))
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"seed": seed, "task_name": "behavior", "selection_metric": "val/f1_tail"}))
    hist = [{"epoch": e, "step": 10 * e, "val/f1_tail": 0.1 * e, "val/loss": 1 - 0.1 * e, "train/loss": 1 - 0.2 * e}
            for e in range(history)]
    (path / "training_history.json").write_text(json.dumps(hist))
    if metrics is not None:
        (path / "metrics").mkdir()
        (path / "metrics" / "metrics.json").write_text(json.dumps(metrics))
    if predictions:
        names = ("normal", "tail")
        rows = ["item_id,group,label,pred,score_normal,score_tail"] + [
            f"e{i},,{names[t]},{names[int(p >= 0.5)]},{1 - p},{p}" for i, (p, t) in enumerate(predictions)]
        (path / "predictions_agg.csv").write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    rng = np.random.default_rng(0)
    job = 0
    for experiment, values in F1.items():
        for seed, f1 in zip((1, 2, 3), values, strict=True):
            probs = rng.uniform(size=40)
            preds = [(float(p), int(rng.uniform() < p)) for p in probs]
            make_run(root / str(job), [f"experiment={experiment}", f"seed={seed}", "+sweep=behavior_splits",
                                       "trainer.max_epochs=3"],
                     {"test/f1_tail": f1, "test/loss": 1 - f1, "test/acc_tail": f1, "test/acc_normal": 0.9,
                      "best_val/f1_tail": f1 + 0.1, "evaluated_checkpoint": "x/best.ckpt", "epochs_trained": 3,
                      "final_val": {"val/f1_tail": f1}},
                     predictions=preds)
            job += 1
    # a job that crashed before writing its metrics
    make_run(root / str(job), ["experiment=intravideo", "seed=4", "+sweep=behavior_splits", "trainer.max_epochs=3"],
             None)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_report_groups_by_experiment_with_mean_and_std(sweep: Path) -> None:
    result = build_report([sweep])
    assert result["groups"] == list(F1)
    rows = {(r["experiment"], r["metric"]): r for r in result["summary"]}
    for experiment, values in F1.items():
        row = rows[(experiment, "test/f1_tail")]
        assert row["n"] == 3
        assert row["mean"] == pytest.approx(statistics.fmean(values))
        assert row["std"] == pytest.approx(statistics.stdev(values))
        assert sorted(row["seeds"]) == ["1", "2", "3"]
    # the unfinished job is listed, not averaged in
    assert rows[("intravideo", "test/f1_tail")]["n"] == 3
    report = result["report"]
    assert "| metric | baseline_old_split | intravideo | intravideo_boosted |" in report
    assert f"**{statistics.fmean(F1['intravideo_boosted']):.4f} ± " in report  # best mean in bold
    assert "unfinished" in report
    assert "evaluated_checkpoint" not in report and "epochs_trained" not in report


def test_outputs_are_written_and_consistent(sweep: Path) -> None:
    result = build_report([sweep])
    out = result["out"]
    assert out == sweep / "report"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiments"] == list(F1)
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    boosted = next(r for r in rows if r["experiment"] == "intravideo_boosted" and r["metric"] == "test/f1_tail")
    assert float(boosted["mean"]) == pytest.approx(0.65)
    with open(out / "runs.csv") as fh:
        runs = list(csv.DictReader(fh))
    assert len(runs) == 10 and sum(r["finished"] == "False" for r in runs) == 1
    for name in ("metrics_bars.png", "curves.png", "per_class_accuracy.png", "reliability.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, name
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files


def test_two_experiments_get_a_difference_column(tmp_path: Path) -> None:
    for i, (exp, f1) in enumerate([("violence_failed", 0.5), ("violence_failed", 0.6), ("violence_optimal", 0.9),
                                   ("violence_optimal", 0.8)]):
        make_run(tmp_path / "s" / str(i), [f"experiment={exp}", f"seed={i}"],
                 {"test/accuracy": f1, "final_val": {"val/accuracy": f1 + 0.1}})
    report = build_report([tmp_path / "s"], plots=False)["report"]
    assert "Δ (violence_optimal − violence_failed)" in report
    assert "+0.3000" in report
    assert "| `accuracy` (val → test) | 0.650 → 0.550 | 0.950 → 0.850 |" in report


def test_groups_by_any_varying_override_and_ignores_constant_ones(tmp_path: Path) -> None:
    dirs = []
    for i, (lr, seed) in enumerate([(0.1, 1), (0.1, 2), (0.01, 1), (0.01, 2)]):
        dirs.append(make_run(tmp_path / f"r{i}", ["experiment=segmentation", f"model.optimizer.lr={lr}",
                                                   f"seed={seed}", "debug=fast"], {"test/f1": lr}))
    runs = [load_run(d) for d in find_runs([tmp_path])]
    groups = assign_groups(runs)
    assert groups == ["model.optimizer.lr=0.1", "model.optimizer.lr=0.01"]


def test_several_run_dirs_and_chosen_metrics(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    code = main([str(sweep / "0"), str(sweep / "3"), "--out", str(out), "--metrics", "test/f1_tail", "--no-plots"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"] == ["test/f1_tail"]
    assert summary["experiments"] == ["baseline_old_split", "intravideo"]
    assert not list(out.glob("*.png"))


def test_clear_errors(tmp_path: Path, sweep: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no runs" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(sweep), "--metrics", "test/nope", "--no-plots"]) == 2
    assert "test/nope" in capsys.readouterr().err


def test_reliability_from_class_name_labels(tmp_path: Path) -> None:
    """Violence-style predictions in the suite's schema: class names as labels, score_<class> columns."""
    for i, exp in enumerate(["violence_failed", "violence_optimal"]):
        run = make_run(tmp_path / "s" / str(i), [f"experiment={exp}", "seed=1"], {"test/acc": 0.5})
        rows = ["item_id,group,label,pred,score_non_violent,score_violent,prob_violent_tta"] + [
            f"v{k},,{'violent' if k % 2 else 'non_violent'},,{0.9 - 0.08 * k},{0.1 + 0.08 * k},0.99"
            for k in range(10)]
        (run / "predictions_agg.csv").write_text("\n".join(rows) + "\n")
    result = build_report([tmp_path / "s"])
    assert "reliability.png" in result["plots"]
    from tools.compare import binary_predictions

    probs, targets = binary_predictions(result["runs"][0])
    assert targets == [k % 2 for k in range(10)] and probs[0] == pytest.approx(0.1)


def test_long_group_names_get_short_labels_with_a_legend(tmp_path: Path) -> None:
    """Optuna trials differ in many sampled floats: columns become G1, G2 with the overrides listed once."""
    for i, lr in enumerate([0.000413039957, 0.00269302108]):
        make_run(tmp_path / "s" / str(i), [f"model.optimizer.lr={lr}", f"model.optimizer.weight_decay={lr / 10}",
                                           "data.batch_size=16", "seed=1"], {"best_val/f1": lr})
    result = build_report([tmp_path / "s"], plots=False)
    assert result["groups"] == ["G1", "G2"]
    assert "| G1 | `model.optimizer.lr=0.000413 model.optimizer.weight_decay=4.13e-05` |" in result["report"]


def test_unreadable_files_of_one_run_are_named_and_do_not_stop_the_report(
        sweep: Path, capsys: pytest.CaptureFixture) -> None:
    (sweep / "0" / "metrics" / "metrics.json").write_text("{not json")
    (sweep / "1" / ".hydra" / "config.yaml").write_text("seed: [1\n")
    result = build_report([sweep], plots=False)
    warnings = capsys.readouterr().err
    assert f"{sweep / '0' / 'metrics' / 'metrics.json'} cannot be read" in warnings
    assert f"{sweep / '1' / '.hydra' / 'config.yaml'} cannot be read" in warnings
    runs = {r.name: r for r in result["runs"]}
    assert not runs["0"].finished and runs["1"].finished and runs["1"].config == {}
    assert runs["2"].config["selection_metric"] == "val/f1_tail"  # the others are read as before


def test_an_evaluation_folder_inside_a_run_is_not_a_run(sweep: Path) -> None:
    eval_dir = sweep / "0" / "eval" / "2026-01-01_10-00-00"
    (eval_dir / "metrics").mkdir(parents=True)
    (eval_dir / "metrics" / "metrics.json").write_text('{"test/f1_tail": 0.99}')
    (eval_dir / ".output.json").write_text('{"kind": "evaluate"}')
    assert eval_dir not in find_runs([sweep]) and len(find_runs([sweep])) == 10


def test_runs_of_two_tasks_are_compared_with_a_note_not_a_key_error(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """One run of the default experiment (no experiment= override) beside a run of another task."""
    lego = make_run(tmp_path / "lego", ["experiment=lego_part", "seed=1"], {"test/part_acc": 0.5})
    (lego / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 1, "task_name": "lego"}))
    seg = make_run(tmp_path / "seg", ["seed=1"], {"test/f1": 0.4})
    (seg / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 1, "task_name": "segmentation"}))
    assert main([str(lego), str(seg), "--no-plots", "--out", str(tmp_path / "report")]) == 0
    captured = capsys.readouterr()
    assert "note: these runs belong to 2 tasks (lego: lego; segmentation: seg)" in captured.err
    assert "| metric | lego_part | segmentation (default) |" in captured.out
    assert "| `test/part_acc` | 0.5000 (n=1) | – |" in captured.out
    assert main([str(lego), str(seg), "--no-plots", "--metrics", "test/iou", "--out", str(tmp_path / "r2")]) == 2
    assert ("--metrics: test/iou logged by no run; the runs log lego: test/part_acc; segmentation: test/f1"
            in capsys.readouterr().err)

"""A behavior preset end to end: metrics.json keys, per-event TTA predictions in the suite's schema, held-out
test split, bad input fails before training."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from suite.errors import DataError
from suite.training import train

FAST = ["debug=fast", "model.pretrained=false", "trainer.accelerator=cpu"]


def test_intravideo_writes_plan_metrics_and_tta_rows(make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(make_cfg(["experiment=intravideo", *FAST, "model.tta.aggregation=max"], run_dir))
    metrics = json.loads((run_dir / "metrics" / "metrics.json").read_text())
    for key in ("tail_recall", "tail_precision", "f1_tail", "macro_f1", "ece", "prob_clusters", "skipped_events",
                "videos"):
        assert f"test/{key}" in metrics, key
    assert "best_val/f1_tail" in metrics
    assert not {"tail_f1", "test/tail_f1", "tail_recall"} & set(metrics), "one name per metric"
    assert any(k.startswith("test/per_video/") and k.endswith("/accuracy") for k in metrics)
    rows = pd.read_csv(run_dir / "predictions_agg.csv")
    clip_cols = [f"p_clip{i}" for i in range(5)]
    assert list(rows.columns[:6]) == ["item_id", "group", "label", "pred", "score_normal", "score_tail"]
    assert {"video_id", "prob_tail", *clip_cols} <= set(rows.columns)
    assert rows["item_id"].is_unique and (rows["group"] == rows["video_id"]).all()
    pd.testing.assert_series_equal(rows[clip_cols].max(axis=1), rows["prob_tail"], check_names=False, atol=1e-5)
    assert (rows["pred"] == rows["prob_tail"].ge(0.5).map({True: "tail", False: "normal"})).all()
    assert set(rows["label"]) <= {"normal", "tail"}
    label_map = json.loads((run_dir / "label_map.json").read_text())
    assert label_map["label"] == label_map["classes"] == {"normal": 0, "tail": 1}
    # test = the held-out cameras: no video of it was trained on or used to select the checkpoint
    splits = json.loads((run_dir / "splits.json").read_text())
    assert set(rows["item_id"]) <= set(splits["test"])
    assert set(splits["groups"]["test"]).isdisjoint(set(splits["groups"]["train"]) | set(splits["groups"]["val"]))
    assert "test.csv" in (run_dir / "manifests_used.txt").read_text()


def test_bad_manifest_fails_before_training(make_cfg, tmp_path: Path) -> None:
    bad = tmp_path / "train.csv"
    pd.DataFrame([{"video_path": "x.mp4", "video_id": "v", "start_s": 0, "label": "tail"}]).to_csv(bad, index=False)
    cfg = make_cfg(["experiment=baseline_old_split", *FAST, f"data.train_manifest={bad}",
                    f"data.val_manifest={bad}", f"data.test_manifest={bad}"], tmp_path / "run")
    with pytest.raises(DataError, match=r"train.csv lacks column\(s\) \['end_s'\]"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()

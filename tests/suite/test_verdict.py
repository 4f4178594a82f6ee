"""Verdicts: criteria checked against metrics (met / missed / unknown), figures derived from a run dir, every
preset's criteria naming metrics its task really logs, and a tiny training whose metrics.json has the block."""

from __future__ import annotations

import inspect
import json
import math
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from suite.errors import ConfigError
from suite.verdict import (
    VerdictConfig,
    alert_metrics,
    evaluate,
    export_latency,
    history_metrics,
    parse_criteria,
    run_metrics,
    run_verdict,
    verdict_text,
)
from tests.conftest import train_run

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


def crit(metric, op=">", target=0.5, name="c"):
    return parse_criteria([{"name": name, "metric": metric, "op": op, "target": target}])[0]


# -- evaluation ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("op", "value", "target", "met"), [
    (">", 0.41, 0.35, True), (">", 0.35, 0.35, False), (">=", 0.88, 0.88, True), (">=", 0.87, 0.88, False),
    ("<", 0.07, 0.08, True), ("<", 0.08, 0.08, False), ("<=", 0, 0, True), ("<=", 1, 0, False),
])
def test_each_operator_decides_met_or_missed(op, value, target, met):
    block = evaluate([crit("test/x", op, target)], {"test/x": value})
    assert block["criteria"][0]["met"] is met
    assert (block["met"], block["missed"]) == ((1, 0) if met else (0, 1))


def test_missing_or_nan_metric_is_unknown_not_a_crash():
    block = evaluate([crit("test/roc_auc"), crit("test/ece", "<", 0.2)], {"test/ece": float("nan")}, seed="003")
    assert [c["met"] for c in block["criteria"]] == [None, None]
    assert block["unknown"] == 2 and block["passed"] is None  # unknown is never a pass
    assert "no test/roc_auc" in block["criteria"][0]["note"]


def test_passed_needs_every_criterion_met():
    criteria = [crit("a", ">", 0.5), crit("b", "<", 0.1)]
    assert evaluate(criteria, {"a": 0.9, "b": 0.05})["passed"] is True
    assert evaluate(criteria, {"a": 0.9, "b": 0.5})["passed"] is False
    assert evaluate(criteria, {"a": 0.9})["passed"] is None
    assert evaluate(criteria, {"a": 0.1})["passed"] is False  # a miss decides even with an unknown


def test_block_has_the_shared_format():
    block = evaluate([crit("test/tail_recall", ">", 0.35, name="test tail recall")], {"test/tail_recall": 0.41},
                     seed="003")
    assert set(block) == {"seed", "split", "criteria", "met", "missed", "unknown", "passed"}
    assert block["criteria"][0] == {"name": "test tail recall", "metric": "test/tail_recall", "op": ">",
                                    "target": 0.35, "value": 0.41, "met": True, "note": ""}
    json.dumps(block)  # written into metrics.json as is


def test_metric_alternatives_use_the_first_the_run_has():
    criterion = crit(["test/part_acc/real", "test/part_acc"], ">", 0.9)
    assert evaluate([criterion], {"test/part_acc": 0.95})["criteria"][0]["metric"] == "test/part_acc"
    entry = evaluate([criterion], {"test/part_acc": 0.95, "test/part_acc/real": 0.5})["criteria"][0]
    assert (entry["metric"], entry["met"]) == ("test/part_acc/real", False)


def test_target_may_name_another_metric():
    criterion = crit("test/alert_acc", ">", "test/untrained_alert_acc")
    entry = evaluate([criterion], {"test/alert_acc": 0.7, "test/untrained_alert_acc": 0.5})["criteria"][0]
    assert entry["met"] is True and entry["target_value"] == 0.5
    assert evaluate([criterion], {"test/alert_acc": 0.7})["criteria"][0]["met"] is None


@pytest.mark.parametrize(("node", "words"), [
    ({"metric": "a", "op": "=>", "target": 1}, "op"),
    ({"metric": "a", "op": ">"}, "target"),
    ({"op": ">", "target": 1}, "metric"),
    ({"metric": "a", "op": ">", "target": [1]}, "target"),
    ("a > 1", "mapping"),
])
def test_malformed_criterion_is_a_config_error_naming_it(node, words):
    with pytest.raises(ConfigError, match=rf"verdict\.criteria\[0\].*{words}|{words}.*verdict\.criteria\[0\]"):
        parse_criteria([node])


def test_verdict_text_lists_every_criterion():
    block = evaluate([crit("a", name="first"), crit("b", name="second")], {"a": 1.0})
    text = verdict_text(block)
    assert "| first | a | > 0.5 | 1 | yes |" in text and "| second | b | > 0.5 | — | unknown |" in text


# -- figures derived from the run dir -----------------------------------------------------------------------------
def test_history_metrics_first_last_min_max_rise():
    records = [{"epoch": 0, "step": 5, "val/f1": 0.15, "train/loss": 0.42},
               {"epoch": 1, "step": 10, "val/f1": 0.31, "train/loss": None}]
    out = history_metrics(records)
    assert math.isclose(out["history/val/f1/rise"], 0.16)
    assert out["history/train/loss/min"] == 0.42 and "history/train/loss/rise" not in out  # one epoch of it
    assert "history/epoch/first" not in out
    assert history_metrics([{"val/f1": 0.2}]).get("history/val/f1/rise") is None


def test_alert_metrics_count_severities_and_rules():
    alerts = [{"rule": "prediction_collapse", "severity": "critical"}, {"rule": "class_gap", "severity": "warn"}]
    out = alert_metrics(alerts, ["alerts/rule/collapse", "alerts/rule/plateau"])
    assert out == {"alerts/total": 2.0, "alerts/warn": 1.0, "alerts/critical": 1.0, "alerts/rule/collapse": 1.0,
                   "alerts/rule/plateau": 0.0}
    assert alert_metrics(None, ["alerts/rule/collapse"]) == {}  # not watched: unknown, not 0


def test_export_latency_prefers_the_pi_export(tmp_path):
    export = tmp_path / "export"
    (export / "int8").mkdir(parents=True)
    (export / "parity.json").write_text(json.dumps({"graphs": {"model": {"latency": {"onnxruntime": 12.5}}}}))
    assert export_latency(export)["export/latency_ms"] == 12.5
    (export / "int8" / "latency.json").write_text(json.dumps(
        {"models": {"ort_fp32": {"1": 40.0}, "ort_int8_qdq": {"1": 21.0}}, "chosen_int8": "qdq"}))
    out = export_latency(export)
    assert out["export/latency_ms"] == 21.0 and "ort_int8_qdq" in out["export/latency_source"]
    assert export_latency(tmp_path / "none") == {}


def test_run_verdict_reads_the_run_dir(tmp_path):
    (tmp_path / "training_history.json").write_text(json.dumps([{"val/f1": 0.1}, {"val/f1": 0.3}]))
    (tmp_path / "alerts.json").write_text("[]")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "parity.json").write_text(json.dumps({"graphs": {"m": {"latency": {"onnxruntime": 150}}}}))
    node = {"seed": "004", "criteria": [
        {"name": "rise", "metric": "history/val/f1/rise", "op": ">", "target": 0},
        {"name": "alarms", "metric": "alerts/rule/collapse", "op": "<=", "target": 0},
        {"name": "latency", "metric": "export/latency_ms", "op": "<", "target": 100}]}
    block = run_verdict(node, {}, tmp_path)
    assert [c["met"] for c in block["criteria"]] == [True, True, False]
    assert "read on" in block["criteria"][2]["note"]  # says on which machine the figure was read
    assert run_verdict({"criteria": []}, {}, tmp_path) is None
    assert set(run_metrics(tmp_path)) >= {"alerts/total", "export/latency_ms", "history/val/f1/last"}


# -- every preset's criteria resolve to metrics its task logs ------------------------------------------------------
# Test metrics a module logs beyond the test/ twins of its val/ metrics, each with the source text that logs it
# (so a rename in the module fails here).
TEST_ONLY = {
    "ViolenceModule": {"test/class_gap": 'f"{prefix}class_gap"', "test/tta_class_gap": '("test/tta_", self.test_tta',
                       "test/acc_violent": 'f"{prefix}acc_{name}"', "test/tta_acc_violent": '"violent")'},
    "BehaviorModule": {"test/roc_auc": '"roc_auc"'},
    "RelevanceSegmentationModule": {"test/alert_acc": '"alert_acc"', "test/region_acc": '"region_acc"',
                                    "test/untrained_alert_acc": '"test/untrained_"'},
    "SegmentationModule": {"test/loss": 'f"{stage}/loss"'},
    "ContrastiveModule": {"test/triplet_acc": 'f"{stage}/triplet_acc"'},
    "LegoModule": {},
}
DERIVED = ("history/", "alerts/", "export/latency_ms")
EXPERIMENTS = ["segmentation", "baseline_old_split", "intravideo", "intravideo_boosted", "violence_failed",
               "violence_optimal", "lego_multitask", "lego_part", "lego_color", "relevance_contrastive",
               "relevance_segmentation"]


def _compose(overrides):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="train", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _logged_test_metrics(model) -> set[str]:
    names = {"test/" + m.removeprefix("val/") for m in model.logged_metrics()}
    source = inspect.getsource(sys.modules[type(model).__module__])
    for name, text in TEST_ONLY[type(model).__name__].items():
        assert text in source, f"{type(model).__name__} no longer logs {name} ({text!r} not in its source)"
        names.add(name)
    if type(model).__name__ == "LegoModule":  # per subset: <metric>/<subset key>; the seed's real captures
        names |= {f"{n}/real" for n in names if n.endswith("_acc") or n.endswith("_top5")}
    return names


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_preset_criteria_name_metrics_the_task_logs(experiment):
    from suite.training import build_model

    cfg = _compose([f"experiment={experiment}", "model.pretrained=false"])
    verdict = VerdictConfig.from_node(OmegaConf.to_container(cfg.verdict, resolve=True))
    assert verdict.criteria and verdict.seed in {"000", "001", "002", "003", "004"}
    logged = _logged_test_metrics(build_model(cfg))
    for criterion in verdict.criteria:
        names = list(criterion.metric) + ([criterion.target] if isinstance(criterion.target, str) else [])
        for name in names:
            assert name.startswith(DERIVED) or name in logged, \
                f"{experiment}: criterion '{criterion.name}' names {name}, which {type(build_model(cfg)).__name__} " \
                f"does not log ({sorted(logged)})"


def test_seed_targets_of_the_brief():
    """The presets carry the seeds' figures (a changed target is a changed contract)."""
    def targets(name):
        cfg = OmegaConf.load(CONF / "verdict" / f"{name}.yaml")
        return {c["name"]: (c["op"], c["target"]) for c in cfg.criteria}

    assert targets("behavior")["test tail recall"] == (">", 0.35)
    assert targets("behavior")["ROC AUC"] == (">", 0.60)
    assert targets("behavior")["calibration (ECE)"] == ("<", 0.2)
    assert targets("violence")["TTA accuracy"] == (">=", 0.88)
    assert targets("violence")["class gap"] == ("<", 0.08)
    assert targets("lego")["part top-1"] == (">", 0.90) and targets("lego")["part top-5"] == (">", 0.98)
    assert targets("lego")["colour"] == (">", 0.85) and targets("lego")["latency"] == ("<", 100)
    assert targets("relevance_segmentation")["alert accuracy above the random baseline"] == (">", 0.5)


# -- a tiny training --------------------------------------------------------------------------------------------------
def test_tiny_training_writes_the_verdict_block(tmp_path, shared_data_dir):
    run = train_run(["debug=fast", "model.pretrained=false", "logger=none", "trainer.max_epochs=2"],
                    tmp_path / "run", shared_data_dir)
    metrics = json.loads((run / "metrics" / "metrics.json").read_text())
    verdict = metrics["verdict"]
    assert verdict["seed"] == "002" and verdict["split"] == "test"
    assert verdict["met"] + verdict["missed"] + verdict["unknown"] == len(verdict["criteria"]) == 4
    by_metric = {c["metric"]: c for c in verdict["criteria"]}
    assert by_metric["test/f1"]["value"] == pytest.approx(metrics["test/f1"])
    assert by_metric["history/val/f1/rise"]["value"] is not None  # two epochs: the rise is known
    assert isinstance(metrics["test/f1"], float)  # the test metrics stay at the top level for the tools

    from suite.evaluation import evaluate as evaluate_run

    evaluated = evaluate_run(run, out_dir=tmp_path / "eval")
    written = json.loads((tmp_path / "eval" / "metrics" / "metrics.json").read_text())
    assert written["verdict"] == evaluated["verdict"]
    assert written["verdict"]["seed"] == "002" and written["verdict"]["split"] == "test"
    evaluated_f1 = {c["metric"]: c["value"] for c in written["verdict"]["criteria"]}["test/f1"]
    assert evaluated_f1 == pytest.approx(written["test/f1"])

"""Health rules on recorded metric histories: every condition fires on one and stays quiet on another, and
every task's preset rules do the same on the failure their seed describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from suite.health import CONDITIONS, HealthMonitor, Rule, evaluate_history, format_message, rules_from_config

HEALTH = Path(__file__).resolve().parents[2] / "conf" / "health"


def history(**series: list[float | None]) -> list[dict[str, Any]]:
    """Per-epoch records from columns: history(val__acc=[...]) -> [{"epoch": 0, "val/acc": ...}, ...]."""
    n = max(len(v) for v in series.values())
    out = []
    for epoch in range(n):
        record: dict[str, Any] = {"epoch": epoch, "step": 10 * (epoch + 1)}
        for key, values in series.items():
            if epoch < len(values) and values[epoch] is not None:
                record[key.replace("__", "/")] = values[epoch]
        out.append(record)
    return out


def rule(condition: str, metric: Any, **node: Any) -> Rule:
    return Rule.from_config("r", {"condition": condition, "metric": metric, **node})


def fires(r: Rule, records: list[dict[str, Any]]) -> bool:
    return bool(evaluate_history([r], records))


# one (rule, firing history, quiet history) per condition
CASES = {
    "above": (rule("above", "val/class_gap", threshold=0.25, window=3),
              history(val__class_gap=[0.1, 0.3, 0.4, 0.35]), history(val__class_gap=[0.3, 0.1, 0.3, 0.3])),
    "below": (rule("below", "val/f1", threshold=0.2, window=2),
              history(val__f1=[0.5, 0.1, 0.1]), history(val__f1=[0.1, 0.5, 0.1])),
    "plateau_below": (rule("plateau_below", "val/acc_violent", threshold=0.75, window=4, eps=0.01),
                      history(val__acc_violent=[0.5, 0.6, 0.6, 0.605, 0.6, 0.59]),
                      history(val__acc_violent=[0.5, 0.55, 0.6, 0.65, 0.7, 0.72])),
    "dropping": (rule("dropping", "val/acc_violent", window=3, delta=0.10),
                 history(val__acc_violent=[0.6, 0.8, 0.75, 0.65]), history(val__acc_violent=[0.6, 0.8, 0.78, 0.8])),
    "oscillating": (rule("oscillating", "val/acc", window=4, threshold=0.10),
                    history(val__acc=[0.5, 0.8, 0.5, 0.8]), history(val__acc=[0.5, 0.55, 0.6, 0.62])),
    "stuck_while_other_improves": (
        rule("stuck_while_other_improves", ["val/acc_violent", "val/acc_non_violent"], window=4),
        history(val__acc_violent=[0.3, 0.3, 0.29, 0.3], val__acc_non_violent=[0.6, 0.7, 0.8, 0.9]),
        history(val__acc_violent=[0.3, 0.4, 0.5, 0.6], val__acc_non_violent=[0.6, 0.7, 0.8, 0.9])),
    "far_below": (rule("far_below", "train/loss", other="val/loss", ratio=0.5, window=2),
                  history(train__loss=[0.5, 0.2, 0.1], val__loss=[0.6, 0.6, 0.7]),
                  history(train__loss=[0.5, 0.4, 0.35], val__loss=[0.6, 0.5, 0.45])),
    "near_zero_while_low": (rule("near_zero_while_low", "train/loss", other="val/f1", threshold=0.2),
                            history(train__loss=[0.3, 0.0], val__f1=[0.1, 0.05]),
                            history(train__loss=[0.3, 0.005], val__f1=[0.4, 0.8])),
    "zero_while_falling": (rule("zero_while_falling", "val/iou", other="train/loss", window=3),
                           history(val__iou=[0.0, 0.0, 0.0], train__loss=[0.9, 0.7, 0.5]),
                           history(val__iou=[0.0, 0.1, 0.2], train__loss=[0.9, 0.7, 0.5])),
    "group_gap": (rule("group_gap", "val/part_acc/*", threshold=0.2, window=2),
                  history(**{"val__part_acc/b200c": [0.9, 0.9], "val__part_acc/real": [0.4, 0.5], "val__loss": [1, 1]}),
                  history(**{"val__part_acc/b200c": [0.9, 0.9], "val__part_acc/real": [0.4, 0.8]})),
    "exploding": (rule("exploding", "train/loss", factor=10.0),
                  history(train__loss=[1.0, 0.2, 0.1, 3.0]), history(train__loss=[1.0, 0.2, 0.1, 0.5])),
    "far_from": (rule("far_from", "train/drawn_share_*", target=0.5, tolerance=0.15, window=2),
                 history(train__drawn_share_tail=[0.1, 0.12], train__drawn_share_normal=[0.9, 0.88]),
                 history(train__drawn_share_tail=[0.45, 0.55], train__drawn_share_normal=[0.55, 0.45])),
}


def test_every_condition_has_a_case() -> None:
    assert set(CASES) == set(CONDITIONS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_condition_fires_on_its_failure_and_stays_quiet_otherwise(name: str) -> None:
    r, firing, quiet = CASES[name]
    assert fires(r, firing), f"{name} should fire on {firing}"
    assert not fires(r, quiet), f"{name} should stay quiet on {quiet}"


def test_a_rule_fires_once_per_episode_and_again_after_it_ended() -> None:
    r = rule("above", "val/class_gap", threshold=0.15)
    alerts = evaluate_history([r], history(val__class_gap=[0.2, 0.3, 0.1, 0.2, 0.25]))
    assert [a["epoch"] for a in alerts] == [0, 3]


def test_a_metric_the_latest_epoch_did_not_log_keeps_the_rule_quiet() -> None:
    # phase 1 logged val/iou = 0, phase 2 does not log it: the rule must not keep firing on old values
    r = rule("below", "val/iou", threshold=0.1)
    monitor = HealthMonitor([r])
    assert monitor.firing(history(val__iou=[0.0, 0.0, None], val__loss=[1, 1, 1])) == {}


def test_alert_has_the_alerts_json_fields_and_a_formatted_message() -> None:
    r = Rule.from_config("gap", {"condition": "above", "metric": "val/class_gap", "threshold": 0.15,
                                 "severity": "critical", "action": "stop", "hint": "check the weights",
                                 "message": "gap {value:.0%} > {threshold:.0%} at epoch {epoch} {unknown:.2f}"},
                         seed="001")
    (alert,) = evaluate_history([r], history(val__class_gap=[0.3]))
    assert alert == {"epoch": 0, "step": 10, "batch": None, "rule": "gap", "severity": "critical", "action": "stop",
                     "seed": "001", "message": "gap 30% > 15% at epoch 0 ?", "values": {"val/class_gap": 0.3},
                     "hint": "check the weights"}


def test_a_message_without_template_names_the_rule_and_values() -> None:
    r = rule("above", "val/x", threshold=1.0)
    assert format_message(r, {"val/x": 2.0}, 3) == "r: val/x=2"


@pytest.mark.parametrize(("node", "match"), [
    ({"condition": "sideways", "metric": "a"}, "condition must be one of"),
    ({"condition": "above", "metric": "a"}, r"missing \['threshold'\]"),
    ({"condition": "above", "metric": "a", "threshold": 1, "treshold": 2}, r"unknown \['treshold'\]"),
    ({"condition": "above", "threshold": 1}, "'metric' is required"),
    ({"condition": "far_below", "metric": "a", "ratio": 0.5}, "set 'other'"),
    ({"condition": "oscillating", "metric": "a", "threshold": 0.1, "window": 2}, "window >= 3"),
    ({"condition": "above", "metric": "a", "threshold": 1, "severity": "fatal"}, "severity must be one of"),
])
def test_a_bad_rule_is_refused_naming_the_rule(node: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        Rule.from_config("my_rule", node)
    assert "health rule 'my_rule'" in str(err.value)


def test_disabled_and_null_rules_are_left_out() -> None:
    rules = rules_from_config({"a": {"condition": "above", "metric": "x", "threshold": 1, "enabled": False},
                               "b": None, "c": {"condition": "above", "metric": "x", "threshold": 1}})
    assert [r.name for r in rules] == ["c"]


def test_monitor_state_roundtrip_keeps_the_episode() -> None:
    r = rule("above", "val/class_gap", threshold=0.15)
    records = history(val__class_gap=[0.2, 0.3])
    first = HealthMonitor([r])
    assert len(first.evaluate(records[:1])) == 1
    resumed = HealthMonitor([r])
    resumed.load_state_dict(first.state_dict())
    assert resumed.evaluate(records) == []  # the same episode: not reported again


# -- the task presets on their seeds' failures ----------------------------------------------------------
def preset(task: str, **data: Any) -> list[Rule]:
    cfg = OmegaConf.create({"health": OmegaConf.load(HEALTH / f"{task}.yaml"), "data": data})
    return rules_from_config(OmegaConf.to_container(cfg.health.rules, resolve=True), cfg.health.seed)


def fired(task: str, records: list[dict[str, Any]], **data: Any) -> set[str]:
    return {a["rule"] for a in evaluate_history(preset(task, **data), records)}


def test_violence_preset_on_the_failed_model_and_a_healthy_one() -> None:
    failed = history(val__acc_violent=[0.40, 0.30, 0.23, 0.23, 0.23, 0.23, 0.23],
                     val__acc_non_violent=[0.60, 0.70, 0.80, 0.86, 0.86, 0.86, 0.86],
                     val__class_gap=[0.20, 0.40, 0.57, 0.63, 0.63, 0.63, 0.63],
                     val__acc=[0.5, 0.5, 0.52, 0.55, 0.55, 0.55, 0.55],
                     val__pred_share_violent=[0.4, 0.2, 0.04, 0.03, 0.03, 0.03, 0.03],
                     val__pred_share_non_violent=[0.6, 0.8, 0.96, 0.97, 0.97, 0.97, 0.97],
                     train__loss=[0.7, 0.6, 0.5, 0.45, 0.4, 0.38, 0.37])
    assert {"class_gap_warning", "class_gap_critical", "class_stuck", "violent_plateau", "violent_dropping",
            "one_class_only"} <= fired("violence", failed)
    healthy = history(val__acc_violent=[0.6, 0.75, 0.85, 0.9], val__acc_non_violent=[0.62, 0.76, 0.86, 0.9],
                      val__class_gap=[0.02, 0.01, 0.01, 0.0], val__acc=[0.61, 0.75, 0.85, 0.9],
                      val__pred_share_violent=[0.5, 0.5, 0.5, 0.5], val__pred_share_non_violent=[0.5, 0.5, 0.5, 0.5],
                      train__loss=[0.7, 0.5, 0.3, 0.2])
    assert fired("violence", healthy) == set()
    assert "loss_exploding" in fired("violence", history(train__loss=[0.7, 0.05, 0.9]))
    assert "val_accuracy_oscillating" in fired("violence", history(val__acc=[0.5, 0.8, 0.5, 0.8]))


def test_behavior_preset_overfitting_tail_plateau_and_sampler() -> None:
    bad = history(train__loss=[0.5, 0.2, 0.1, 0.05, 0.05, 0.05], val__loss=[0.6, 0.6, 0.7, 0.8, 0.9, 0.9],
                  val__tail_recall=[0.2, 0.25, 0.25, 0.255, 0.25, 0.24], train__drawn_share_tail=[0.15] * 6,
                  train__drawn_share_normal=[0.85] * 6)
    assert fired("behavior", bad, balanced_sampling=True) == {"train_far_below_val", "tail_recall_plateau",
                                                              "sampler_not_balanced"}
    # without balanced sampling nothing says the drawn share should be one half
    assert "sampler_not_balanced" not in fired("behavior", bad, balanced_sampling=False)
    good = history(train__loss=[0.5, 0.45, 0.4], val__loss=[0.55, 0.5, 0.45], val__tail_recall=[0.3, 0.45, 0.6],
                   train__drawn_share_tail=[0.48, 0.52, 0.5], train__drawn_share_normal=[0.52, 0.48, 0.5])
    assert fired("behavior", good, balanced_sampling=True) == set()


def test_segmentation_relevance_and_lego_presets() -> None:
    assert fired("segmentation", history(train__loss=[0.3, 0.0], val__f1=[0.1, 0.0])) == {"loss_zero_f1_low"}
    assert fired("segmentation", history(train__loss=[0.3, 0.05], val__f1=[0.4, 0.6])) == set()
    # seed 002 on sparse masks: F1 stays 0 while the loss falls, well before the loss nears 0
    assert fired("segmentation", history(train__loss=[0.64, 0.58, 0.52], val__f1=[0.0, 0.0, 0.0])) == {
        "f1_stuck_at_zero"}
    assert fired("segmentation", history(train__loss=[0.64, 0.58, 0.52], val__f1=[0.0, 0.44, 0.5])) == set()
    (alert,) = evaluate_history(preset("relevance"), history(val__iou=[0.0] * 3, train__loss=[0.9, 0.6, 0.4]))
    assert alert["rule"] == "iou_zero_loss_falling" and "32x32" in alert["hint"] and alert["seed"] == "000"
    assert fired("relevance", history(val__iou=[0.0, 0.1, 0.3], train__loss=[0.9, 0.6, 0.4])) == set()
    gap = {"val__part_acc/b200c": [0.9, 0.92], "val__part_acc/real": [0.3, 0.35], "val__part_acc": [0.6, 0.6]}
    assert fired("lego", history(**gap)) == {"source_gap"}
    close = {"val__part_acc/b200c": [0.9, 0.92], "val__part_acc/real": [0.8, 0.85]}
    assert fired("lego", history(**close)) == set()
    # a model that predicts one part for everything: per-source accuracies are each source's share of that
    # part, spread apart but none learned -> not a domain gap
    one_part = {"val__part_acc/legacy": [0.43, 0.43], "val__part_acc/real": [0.17, 0.16],
                "val__part_acc/b200c": [0.14, 0.14]}
    assert fired("lego", history(**one_part)) == set()


def test_group_gap_min_best_needs_a_learned_group() -> None:
    r = rule("group_gap", "val/part_acc/*", threshold=0.2, window=2, min_best=0.5)
    learned = {"val__part_acc/legacy": [0.55, 0.8], "val__part_acc/real": [0.2, 0.3]}
    assert fires(r, history(**learned))
    # the gap is as large, but the best group sits under min_best at one epoch of the window
    assert not fires(r, history(**{"val__part_acc/legacy": [0.45, 0.8], "val__part_acc/real": [0.2, 0.3]}))
    assert not fires(r, history(**{"val__part_acc/legacy": [0.45, 0.45], "val__part_acc/real": [0.1, 0.1]}))
    # without min_best the same flat spread fires, as before
    assert fires(rule("group_gap", "val/part_acc/*", threshold=0.2, window=2),
                 history(**{"val__part_acc/legacy": [0.45, 0.45], "val__part_acc/real": [0.1, 0.1]}))

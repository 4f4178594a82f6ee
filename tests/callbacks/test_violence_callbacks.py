"""Class-gap alarms with the violence preset's health rules, and the early-decision rule."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch
from omegaconf import OmegaConf

from callbacks import ClassGap
from callbacks.early_decision import EarlyDecision
from suite.contracts import StepOutput
from suite.health import HealthMonitor, rules_from_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "callbacks" / "violence.yaml"
HEALTH = Path(__file__).resolve().parents[2] / "conf" / "health" / "violence.yaml"


def trainer(epoch: int = 0, **metrics: float) -> SimpleNamespace:
    return SimpleNamespace(sanity_checking=False, should_stop=False, current_epoch=epoch,
                           callback_metrics={k.replace("__", "/"): torch.tensor(v) for k, v in metrics.items()})


def module() -> MagicMock:
    m = MagicMock()
    m.device = torch.device("cpu")
    m.class_names = ["non_violent", "violent"]
    return m


def preset_class_gap() -> ClassGap:
    node = OmegaConf.load(CONF).class_gap
    return ClassGap(class_names=list(node.class_names))


def gap_monitor() -> HealthMonitor:
    node = OmegaConf.load(HEALTH)
    rules = OmegaConf.to_container(node.rules)
    return HealthMonitor([r for r in rules_from_config(rules, node.seed) if r.name.startswith("class_gap")])


def run_gap(cb: ClassGap, preds: list[int], target: list[int]) -> tuple[SimpleNamespace, MagicMock]:
    tr, mod = trainer(), module()
    cb.on_validation_epoch_start(tr, mod)
    cb.on_validation_batch_end(tr, mod, StepOutput(preds=torch.tensor(preds), target=torch.tensor(target)), None, 0)
    cb.on_validation_epoch_end(tr, mod)
    return tr, mod


def test_preset_thresholds_are_the_seeds() -> None:
    rules = {r.name: r for r in gap_monitor().rules}
    assert rules["class_gap_warning"].params["threshold"] == 0.15  # the seed's 15 points
    assert rules["class_gap_critical"].params["threshold"] == 0.25  # and 25 points, "consistently"
    assert rules["class_gap_critical"].severity == "critical" and rules["class_gap_critical"].window == 3


def test_class_gap_critical_like_the_failed_model() -> None:
    # seed's failed model: violent 23 %, non-violent 86 % -> gap 63 points
    target = [1] * 100 + [0] * 100
    preds = [1] * 23 + [0] * 77 + [0] * 86 + [1] * 14
    cb = preset_class_gap()
    _, mod = run_gap(cb, preds, target)
    assert cb.last_gap == pytest.approx(0.63)
    logged = {c.args[0]: float(c.args[1]) for c in mod.log.call_args_list}
    assert logged["val/acc_violent"] == pytest.approx(0.23)
    assert logged["val/acc_non_violent"] == pytest.approx(0.86)
    monitor, history, fired = gap_monitor(), [], []
    for epoch in range(3):
        history.append({"epoch": epoch, "step": epoch, "val/class_gap": logged["val/class_gap"]})
        fired.append([a["rule"] for a in monitor.evaluate(history)])
    # a warning at once, critical once it held three epochs in a row; neither repeats within the episode
    assert fired == [["class_gap_warning"], [], ["class_gap_critical"]]


def test_class_gap_warns_between_15_and_25() -> None:
    target = [1] * 10 + [0] * 10
    preds = [1] * 7 + [0] * 3 + [0] * 9 + [1] * 1  # 70 % vs 90 %
    cb = preset_class_gap()
    run_gap(cb, preds, target)
    alerts = gap_monitor().evaluate([{"epoch": 0, "step": 1, "val/class_gap": cb.last_gap}])
    assert [a["rule"] for a in alerts] == ["class_gap_warning"] and "20.0%" in alerts[0]["message"]


def test_class_gap_silent_when_balanced() -> None:
    target = [1] * 10 + [0] * 10
    preds = [1] * 9 + [0] * 1 + [0] * 9 + [1] * 1
    cb = preset_class_gap()
    run_gap(cb, preds, target)
    assert gap_monitor().evaluate([{"epoch": 0, "step": 1, "val/class_gap": cb.last_gap}]) == []


def test_early_decision_stops_a_doomed_run(capsys) -> None:
    cb = EarlyDecision(threshold=0.70, by_epoch=20)
    for epoch in range(19):
        tr = trainer(epoch, val__acc_violent=0.45)
        cb.on_validation_end(tr, module())
        assert not tr.should_stop and cb.decision is None
    tr = trainer(19, val__acc_violent=0.55)
    cb.on_validation_end(tr, module())
    assert tr.should_stop and cb.decision == "stop"
    out = capsys.readouterr().out
    assert "early decision at epoch 20" in out and "0.55" in out and "stopping" in out


def test_early_decision_lets_a_learning_run_continue(capsys) -> None:
    cb = EarlyDecision(threshold=0.70, by_epoch=20)
    tr = trainer(19, val__acc_violent=0.85)
    cb.on_validation_end(tr, module())
    assert not tr.should_stop and cb.decision == "continue"
    assert "continue training" in capsys.readouterr().out
    tr = trainer(25, val__acc_violent=0.10)  # decided once: later epochs are not judged again
    cb.on_validation_end(tr, module())
    assert not tr.should_stop


def test_early_decision_best_so_far_or_current_value() -> None:
    best = EarlyDecision(threshold=0.70, by_epoch=3, use_best=True)
    current = EarlyDecision(threshold=0.70, by_epoch=3, use_best=False)
    for cb in (best, current):
        for epoch, value in enumerate([0.50, 0.80, 0.60]):
            cb.on_validation_end(trainer(epoch, val__acc_violent=value), module())
    assert best.decision == "continue" and current.decision == "stop"


def test_early_decision_warn_only_and_state_roundtrip() -> None:
    cb = EarlyDecision(threshold=0.70, by_epoch=1, stop=False)
    tr = trainer(0, val__acc_violent=0.30)
    cb.on_validation_end(tr, module())
    assert cb.decision == "stop" and not tr.should_stop
    other = EarlyDecision()
    other.load_state_dict(cb.state_dict())
    assert other.decision == "stop" and other.best == pytest.approx(0.30)


def test_early_decision_ignores_sanity_check_and_missing_metric() -> None:
    cb = EarlyDecision(by_epoch=1)
    tr = trainer(0, val__acc_violent=0.0)
    tr.sanity_checking = True
    cb.on_validation_end(tr, module())
    assert cb.decision is None
    tr = trainer(0)
    cb.on_validation_end(tr, module())
    assert cb.decision is None and not tr.should_stop


def test_early_decision_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="mode"):
        EarlyDecision(mode="best")
    with pytest.raises(ValueError, match="by_epoch"):
        EarlyDecision(by_epoch=0)


def test_early_decision_ignores_epochs_that_predict_everything_violent() -> None:
    cb = EarlyDecision(threshold=0.70, by_epoch=3, max_gap=0.25)
    values = [(1.0, 1.0), (0.60, 0.10), (0.65, 0.05)]  # (violent accuracy, class gap)
    trainers = [trainer(e, val__acc_violent=v, val__class_gap=g) for e, (v, g) in enumerate(values)]
    for tr in trainers:
        cb.on_validation_end(tr, module())
    assert cb.best == pytest.approx(0.65) and cb.decision == "stop" and trainers[-1].should_stop
    node = OmegaConf.load(CONF).early_decision
    assert node.max_gap == 0.25 and node.by_epoch == 20 and node.threshold == 0.70


@pytest.mark.parametrize("experiment", ["violence_failed", "violence_optimal"])
def test_preset_callbacks_get_the_step_outputs_they_need(experiment: str, make_cfg) -> None:
    """Checked before any data is read: every callback of the presets finds its fields in the module's
    step outputs, and the selection metric is one the module logs."""
    from suite.training import build_callbacks, check_task_contract, instantiate

    cfg = make_cfg([f"experiment={experiment}", "model.pretrained=false"])
    callbacks = build_callbacks(cfg)
    assert {"class_gap", "tensorboard_panels", "prediction_collapse", "prediction_writer"} <= set(callbacks)
    check_task_contract(cfg, instantiate(cfg.model), callbacks)

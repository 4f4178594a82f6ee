"""RunHealth: alerts.json from the start of fitting, one console line per alarm, stop, resume, and the
per-batch alarms (collapse, non-finite loss, early decision) going through the same sink."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch

from callbacks import NonFiniteLossGuard, PredictionCollapse, RunHealth
from callbacks.early_decision import EarlyDecision
from callbacks.non_finite import NonFiniteLossError
from suite.contracts import StepOutput

GAP_RULES = {
    "class_gap_warning": {"condition": "above", "metric": "val/class_gap", "threshold": 0.15,
                          "message": "class gap {value:.1%}", "hint": "check the class weights"},
    "class_gap_critical": {"condition": "above", "metric": "val/class_gap", "threshold": 0.25, "window": 2,
                           "severity": "critical", "action": "stop"},
}


def fake_trainer(tmp_path: Path, sink: RunHealth | None = None, **kw) -> SimpleNamespace:
    tb = MagicMock()
    type(tb).__name__ = "TensorBoardLogger"
    base = dict(sanity_checking=False, should_stop=False, current_epoch=0, global_step=0, is_global_zero=True,
                callback_metrics={}, default_root_dir=str(tmp_path), loggers=[tb],
                callbacks=[sink] if sink is not None else [])
    base.update(kw)
    return SimpleNamespace(**base)


def epoch(cb: RunHealth, trainer: SimpleNamespace, n: int, **metrics: float) -> None:
    trainer.current_epoch, trainer.global_step = n, 10 * (n + 1)
    trainer.callback_metrics = {k.replace("__", "/"): torch.tensor(v) for k, v in metrics.items()}
    cb.on_train_epoch_end(trainer, MagicMock())


def alerts(tmp_path: Path) -> list[dict]:
    return json.loads((tmp_path / "alerts.json").read_text())


def test_clean_run_writes_an_empty_alerts_json(tmp_path: Path, capsys) -> None:
    cb = RunHealth(GAP_RULES, seed="001")
    trainer = fake_trainer(tmp_path, cb)
    cb.on_fit_start(trainer, MagicMock())
    assert alerts(tmp_path) == []
    for n in range(3):
        epoch(cb, trainer, n, val__class_gap=0.05)
    assert alerts(tmp_path) == [] and capsys.readouterr().out == "" and not trainer.should_stop


def test_fired_rule_is_recorded_once_console_once_and_stop_stops(tmp_path: Path, capsys) -> None:
    cb = RunHealth(GAP_RULES, seed="001")
    trainer = fake_trainer(tmp_path, cb)
    cb.on_fit_start(trainer, MagicMock())
    epoch(cb, trainer, 0, val__class_gap=0.20, train__loss=0.5)
    epoch(cb, trainer, 1, val__class_gap=0.30)
    out = capsys.readouterr().out
    assert out.count("class gap 20.0%") == 1 and "check the class weights" in out
    assert not trainer.should_stop
    epoch(cb, trainer, 2, val__class_gap=0.30)  # critical: two epochs in a row above 0.25, action stop
    assert trainer.should_stop and "stopping: health rule 'class_gap_critical'" in capsys.readouterr().out
    written = alerts(tmp_path)
    assert [a["rule"] for a in written] == ["class_gap_warning", "class_gap_critical"]
    assert written[0] == {"epoch": 0, "step": 10, "batch": None, "rule": "class_gap_warning", "severity": "warn",
                          "action": "warn", "seed": "001", "message": "class gap 20.0%",
                          "values": {"val/class_gap": pytest.approx(0.2)}, "hint": "check the class weights"}
    tb = trainer.loggers[0]
    tags = [c.args[0] for c in tb.experiment.add_text.call_args_list]
    assert tags == ["health/class_gap_warning", "health/class_gap_critical"]
    scalars = [c.args[0] for c in tb.log_metrics.call_args_list]
    assert {"health/alerts": 2.0, "health/class_gap_critical": 1.0} in scalars


def test_resume_keeps_the_alerts_and_the_episode(tmp_path: Path, capsys) -> None:
    cb = RunHealth(GAP_RULES)
    trainer = fake_trainer(tmp_path, cb)
    cb.on_fit_start(trainer, MagicMock())
    epoch(cb, trainer, 0, val__class_gap=0.2)
    resumed = RunHealth(GAP_RULES)
    resumed.load_state_dict(cb.state_dict())
    trainer = fake_trainer(tmp_path, resumed)
    resumed.on_fit_start(trainer, MagicMock())
    assert [a["rule"] for a in alerts(tmp_path)] == ["class_gap_warning"]
    capsys.readouterr()
    epoch(resumed, trainer, 1, val__class_gap=0.2)  # the same episode: not reported again
    assert len(alerts(tmp_path)) == 1 and capsys.readouterr().out == ""


def test_sanity_check_epochs_are_not_judged(tmp_path: Path) -> None:
    cb = RunHealth(GAP_RULES)
    trainer = fake_trainer(tmp_path, cb, sanity_checking=True)
    cb.on_fit_start(trainer, MagicMock())
    epoch(cb, trainer, 0, val__class_gap=0.9)
    assert alerts(tmp_path) == [] and cb.history == []


def test_a_bad_rule_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="health rule 'x'"):
        RunHealth({"x": {"condition": "above", "metric": "val/a"}})


# -- per-batch alarms through the same sink ---------------------------------------------------------------
def collapsed() -> dict:
    out = StepOutput(loss=torch.tensor(0.1), pred_mean=torch.tensor(1e-5), target_mean=torch.tensor(0.2))
    return out.for_training()


def test_collapse_reports_once_per_episode_with_the_seed_line(tmp_path: Path, capsys) -> None:
    sink = RunHealth(seed="002")
    trainer = fake_trainer(tmp_path, sink)
    sink.on_fit_start(trainer, MagicMock())
    cb = PredictionCollapse(warn_every=2)
    for batch in range(3):
        cb.on_train_batch_end(trainer, MagicMock(), collapsed(), None, batch)
    out = capsys.readouterr().out
    # the seed's line at the first collapsed batch, repeated (console only) every warn_every batches
    assert "Predictions may be collapsing! Batch 0: pred_mean=0.000010, target_mean=0.2000" in out
    assert "Batch 2:" in out and "Batch 1:" not in out
    (alert,) = alerts(tmp_path)
    assert alert["rule"] == "prediction_collapse" and alert["batch"] == 0 and alert["seed"] == "002"
    assert alert["severity"] == "critical" and alert["values"]["target_mean"] == pytest.approx(0.2)
    healthy = StepOutput(loss=torch.tensor(0.1), pred_mean=torch.tensor(0.2), target_mean=torch.tensor(0.2))
    cb.on_train_batch_end(trainer, MagicMock(), healthy.for_training(), None, 3)
    cb.on_train_batch_end(trainer, MagicMock(), collapsed(), None, 4)  # a new episode
    assert [a["batch"] for a in alerts(tmp_path)] == [0, 4]


def test_non_finite_loss_is_recorded_before_raising(tmp_path: Path) -> None:
    sink = RunHealth()
    trainer = fake_trainer(tmp_path, sink, global_step=41)
    sink.on_fit_start(trainer, MagicMock())
    with pytest.raises(NonFiniteLossError, match="batch 7"):
        NonFiniteLossGuard().on_train_batch_end(
            trainer, MagicMock(), StepOutput(loss=torch.tensor(float("inf"))).for_training(), None, 7)
    (alert,) = alerts(tmp_path)
    assert alert["rule"] == "non_finite_loss" and alert["batch"] == 7 and alert["step"] == 41
    assert alert["values"] == {"loss": None} and "inf" in alert["message"]


def test_early_decision_reports_through_the_sink(tmp_path: Path, capsys) -> None:
    sink = RunHealth(seed="001")
    trainer = fake_trainer(tmp_path, sink)
    sink.on_fit_start(trainer, MagicMock())
    decision = EarlyDecision(threshold=0.70, by_epoch=1)
    trainer.callback_metrics = {"val/acc_violent": torch.tensor(0.4)}
    decision.on_validation_end(trainer, MagicMock())
    assert trainer.should_stop
    (alert,) = alerts(tmp_path)
    assert alert["rule"] == "early_decision" and alert["action"] == "stop" and alert["seed"] == "001"
    assert capsys.readouterr().out.count("early decision at epoch 1") == 1


# -- a real run -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("experiment", ["segmentation", pytest.param("intravideo", marks=pytest.mark.slow)])
def test_a_tiny_training_writes_alerts_json(experiment: str, make_cfg, tmp_path: Path) -> None:
    from suite.training import train

    run_dir = tmp_path / "run"
    cfg = make_cfg([f"experiment={experiment}", "debug=fast", "model.pretrained=false", "trainer.accelerator=cpu",
                    "trainer.max_epochs=1"], run_dir)
    train(cfg)
    written = json.loads((run_dir / "alerts.json").read_text())
    assert isinstance(written, list)
    for alert in written:
        assert set(alert) == {"epoch", "step", "batch", "rule", "severity", "action", "seed", "message", "values",
                              "hint"}
    if experiment == "intravideo":  # the drawn class shares are logged for the sampler rule
        history = json.loads((run_dir / "training_history.json").read_text())
        assert {"train/drawn_share_normal", "train/drawn_share_tail"} <= set(history[-1])

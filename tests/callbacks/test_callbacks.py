"""The shared callbacks, each both firing and not firing."""

from __future__ import annotations

import json
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch

from callbacks import ClassGap, EpochSummary, NonFiniteLossGuard, PredictionCollapse, TrainingHistory
from callbacks.non_finite import NonFiniteLossError
from suite.contracts import DataSpec, Head, InputSpec, StepOutput


def fake_trainer(**kw) -> SimpleNamespace:
    base = dict(sanity_checking=False, should_stop=False, current_epoch=0, global_step=0, is_global_zero=True,
                callback_metrics={}, max_epochs=5, default_root_dir=".")
    base.update(kw)
    return SimpleNamespace(**base)


def fake_module() -> MagicMock:
    module = MagicMock()
    module.device = torch.device("cpu")
    module.spec = DataSpec("violence", (Head("label", ("nonviolent", "violent"), positive=1),),
                           InputSpec("features", (30, 8)))
    return module


def train_output(pred_mean: float, target_mean: float) -> dict:
    """What Lightning hands ``on_train_batch_end`` for a training step's StepOutput."""
    return StepOutput(loss=torch.tensor(0.5), pred_mean=torch.tensor(pred_mean),
                      target_mean=torch.tensor(target_mean)).for_training()


# -- PredictionCollapse ------------------------------------------------------------------
def test_collapse_fires_like_the_seed(capsys) -> None:
    cb = PredictionCollapse(low=1e-3, high=1 - 1e-3)
    trainer, module = fake_trainer(), fake_module()
    outputs = StepOutput(loss=torch.tensor(0.1), pred_mean=torch.tensor(0.000012),
                         target_mean=torch.tensor(0.1234)).for_training()
    cb.on_train_batch_end(trainer, module, outputs, None, 50)
    out = capsys.readouterr().out
    assert "Predictions may be collapsing! Batch 50: pred_mean=0.000012, target_mean=0.1234" in out
    assert cb.fired == 1 and not trainer.should_stop
    module.log.assert_called_with("train/collapse", 1.0, on_step=True, on_epoch=False, prog_bar=False)


def test_collapse_silent_on_healthy_or_empty_target_batches(capsys) -> None:
    cb = PredictionCollapse()
    trainer, module = fake_trainer(), fake_module()
    cb.on_train_batch_end(trainer, module, train_output(0.11, 0.12), None, 0)
    # an all-background batch predicted as background is not a collapse
    cb.on_train_batch_end(trainer, module, train_output(1e-5, 0.0), None, 1)
    assert cb.fired == 0 and "collapsing" not in capsys.readouterr().out


def test_collapse_patience_and_stop() -> None:
    cb = PredictionCollapse(patience=3, stop_training=True)
    trainer, module = fake_trainer(), fake_module()
    bad = train_output(0.99999, 0.2)
    for i in range(2):
        cb.on_train_batch_end(trainer, module, bad, None, i)
    assert not trainer.should_stop and cb.fired == 0
    cb.on_train_batch_end(trainer, module, bad, None, 2)
    assert trainer.should_stop and cb.fired == 1


def test_collapse_rejects_bad_thresholds() -> None:
    with pytest.raises(ValueError):
        PredictionCollapse(low=0.6, high=0.4)


# -- ClassGap ----------------------------------------------------------------------------
def run_gap(cb: ClassGap, preds: list[int], target: list[int]) -> tuple[SimpleNamespace, MagicMock]:
    trainer, module = fake_trainer(current_epoch=3), fake_module()
    cb.on_validation_epoch_start(trainer, module)
    cb.on_validation_batch_end(trainer, module, StepOutput(preds=torch.tensor(preds), target=torch.tensor(target)),
                               None, 0)
    cb.on_validation_epoch_end(trainer, module)
    return trainer, module


def test_class_gap_ok_when_balanced(capsys) -> None:
    cb = ClassGap(num_classes=2)
    trainer, module = run_gap(cb, [0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 0, 1])  # 2/3 each
    assert cb.last_gap == pytest.approx(0.0)
    module.log.assert_any_call("val/class_gap", pytest.approx(0.0), prog_bar=True)
    assert "gap" not in capsys.readouterr().out


def test_class_gap_logs_gap_and_predicted_shares_without_printing(capsys) -> None:
    """The alarms on the gap are health rules now (conf/health/violence.yaml): the callback only measures."""
    cb = ClassGap(num_classes=2)
    # class 0: 100 %, class 1: 20 % -> 80 points; 9 of 10 predictions are class 0
    trainer, module = run_gap(cb, [0, 0, 0, 0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    logged = {c.args[0]: float(c.args[1]) for c in module.log.call_args_list}
    assert cb.last_gap == pytest.approx(0.80) and logged["val/class_gap"] == pytest.approx(0.80)
    assert logged["val/pred_share_nonviolent"] == pytest.approx(0.9)
    assert logged["val/pred_share_violent"] == pytest.approx(0.1)
    assert not trainer.should_stop and capsys.readouterr().out == ""


# -- TrainingHistory ---------------------------------------------------------------------
def test_history_appends_one_record_per_epoch_and_resumes(tmp_path) -> None:
    path = tmp_path / "training_history.json"
    cb = TrainingHistory(filename=str(path))
    module = fake_module()
    for epoch in range(2):
        metrics = {"train/loss": torch.tensor(1.0 - epoch / 10), "val/f1": torch.tensor(0.5 + epoch / 10),
                   "train/loss_step": torch.tensor(9.0), "other": torch.tensor(1.0)}
        cb.on_train_epoch_end(fake_trainer(current_epoch=epoch, callback_metrics=metrics), module)
    records = json.loads(path.read_text())
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[1]["val/f1"] == pytest.approx(0.6) and "other" not in records[1]
    assert "train/loss_step" not in records[0]
    resumed = TrainingHistory(filename=str(path))
    resumed.load_state_dict(cb.state_dict())
    resumed.on_train_epoch_end(fake_trainer(current_epoch=2, callback_metrics={"val/f1": torch.tensor(0.9)}),
                               module)
    assert [r["epoch"] for r in json.loads(path.read_text())] == [0, 1, 2]


def test_history_skips_sanity_check(tmp_path) -> None:
    path = tmp_path / "h.json"
    TrainingHistory(filename=str(path)).on_train_epoch_end(fake_trainer(sanity_checking=True), fake_module())
    assert not path.exists()


# -- NonFiniteLossGuard ------------------------------------------------------------------
def test_non_finite_loss_stops_with_batch_index() -> None:
    guard = NonFiniteLossGuard()
    guard.on_train_batch_end(fake_trainer(), fake_module(), StepOutput(loss=torch.tensor(0.3)).for_training(), None, 0)
    with pytest.raises(NonFiniteLossError, match="batch 7"):
        nan = StepOutput(loss=torch.tensor(float("nan"))).for_training()
        guard.on_train_batch_end(fake_trainer(), fake_module(), nan, None, 7)


# -- EpochSummary ------------------------------------------------------------------------
def test_epoch_summary_format_matches_the_seed() -> None:
    text = EpochSummary().format({"train/loss": 0.32, "val/loss": 0.28, "train/f1": 0.45, "val/f1": 0.48,
                                  "val/precision": 0.4556, "val/iou": 0.3178}, epoch=5, max_epochs=50)
    lines = text.splitlines()
    assert lines[0] == ("Epoch 5/50 Complete - Train Loss: 0.3200, Val Loss: 0.2800 | Train F1: 0.4500, "
                        "Val F1: 0.4800")
    assert lines[-1] == "Val Metrics - Precision: 0.4556 | F1: 0.4800 | Iou: 0.3178"


def test_class_gap_accepts_the_thresholds_of_earlier_run_configs() -> None:
    """evaluate.py rebuilds an old run's callbacks from its config, which still names warn/critical."""
    cb = ClassGap(num_classes=2, warn=0.15, critical=0.25, stop_on_critical=False)
    _, module = run_gap(cb, [0, 0, 1, 1], [0, 0, 1, 1])
    assert cb.last_gap == pytest.approx(0.0)


def test_a_callback_never_skips_a_missing_field_silently() -> None:
    """Renaming or dropping a step output must not turn an alarm off without a word."""
    from suite.contracts import ContractError

    gap = ClassGap(class_names=["nonviolent", "violent"])
    gap.on_validation_epoch_start(fake_trainer(), fake_module())
    with pytest.raises(ContractError, match="'target'"):
        gap.on_validation_batch_end(fake_trainer(), fake_module(), StepOutput(preds=torch.tensor([1])), None, 0)
    with pytest.raises(ContractError, match="expected a StepOutput"):
        PredictionCollapse().on_train_batch_end(fake_trainer(), fake_module(), {"loss": torch.tensor(1.0)}, None, 0)

"""The two phases through the real config: encoder hand-over, refusal of another architecture, the
deprecated ``data.mode``, and the per-phase training log of the TrainingHistory callback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from callbacks.history import TrainingHistory
from lightning_modules.nets.relevance import ContrastiveNet, encoder_payload
from suite.errors import ConfigError, UserError
from suite.training import train

FAST = ["debug=fast", "model.pretrained=false", "trainer.accelerator=cpu", "data.image_size=64"]


def test_encoder_of_another_architecture_stops_the_run(make_cfg, tmp_path: Path) -> None:
    encoder = tmp_path / "contrastive.pth"
    torch.save(encoder_payload(ContrastiveNet(backbone="resnet18")), encoder)
    cfg = make_cfg(["experiment=relevance_segmentation", *FAST, f"model.encoder_ckpt={encoder}",
                    "model.net.backbone=resnet34"], tmp_path / "run")
    with pytest.raises(UserError, match="encoder_ckpt"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_data_mode_of_the_other_phase_stops_the_run(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(["experiment=relevance_contrastive", *FAST, "data.mode=segmentation"], tmp_path / "run")
    with pytest.raises(ConfigError, match="data.mode is deprecated: use experiment=relevance_segmentation"):
        train(cfg)


def test_presets_pick_each_phases_datamodule(make_cfg, tmp_path: Path) -> None:
    one = make_cfg(["experiment=relevance_contrastive"], tmp_path / "a")
    two = make_cfg(["experiment=relevance_segmentation"], tmp_path / "b")
    assert one.data._target_.endswith("RelevanceContrastiveDataModule") and "motion" not in one.data
    assert two.data._target_.endswith("RelevanceSegmentationDataModule") and two.data.motion.threshold == 30
    assert one.data.mode is None and two.data.mode is None
    assert two.model.net._target_ == "lightning_modules.nets.relevance.relevance_unet"
    assert two.model.net.head_size is None
    assert one.callbacks.training_history.summary.endswith("training_log_contrastive.json")


def test_history_summary_holds_the_phase_losses_and_test_metrics() -> None:
    history = TrainingHistory(summary="training_log_x.json", summary_fields={"phase": "x"})
    history.records = [{"epoch": 0, "train/loss": 0.8}, {"epoch": 1, "train/loss": 0.6}]
    history.test_metrics = {"test/iou": 0.5}
    summary = history.summary_record()
    assert summary["phase"] == "x" and summary["epochs"] == history.records
    assert (summary["initial_loss"], summary["final_loss"]) == (0.8, 0.6)
    assert summary["improvement"] == pytest.approx(0.25) and summary["test"] == {"test/iou": 0.5}


@pytest.mark.slow
def test_phases_chain_and_write_their_files(make_cfg, tmp_path: Path) -> None:
    p1, p2 = tmp_path / "p1", tmp_path / "p2"
    train(make_cfg(["experiment=relevance_contrastive", *FAST], p1))
    encoder = p1 / "checkpoints" / "contrastive.pth"
    assert encoder.is_file() and (p1 / "training_log_contrastive.json").is_file()
    train(make_cfg(["experiment=relevance_segmentation", *FAST, f"model.encoder_ckpt={encoder}"], p2))
    for name in ("checkpoints/segmentation.pth", "checkpoints/complete.pth", "comparison.jpg",
                 "training_log_segmentation.json"):
        assert (p2 / name).is_file(), name
    log = json.loads((p2 / "training_log_segmentation.json").read_text())
    assert log["phase"] == "segmentation" and "test/iou" in log["test"]
    history = json.loads((p2 / "training_history.json").read_text())
    assert log["epochs"] == history
    assert json.loads((p2 / "splits.json").read_text()) == json.loads((p1 / "splits.json").read_text())
    header = (p2 / "predictions_agg.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["item_id", "group", "label", "pred", "score_irrelevant", "score_relevant"]

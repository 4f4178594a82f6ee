"""The two phases through the real config: encoder hand-over, refusal of another architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_modules.nets.relevance import ContrastiveNet, save_encoder
from suite.errors import UserError
from suite.training import train

FAST = ["debug=fast", "model.pretrained=false", "trainer.accelerator=cpu", "data.image_size=64"]


def test_encoder_of_another_architecture_stops_the_run(make_cfg, tmp_path: Path) -> None:
    encoder = tmp_path / "contrastive.pth"
    save_encoder(ContrastiveNet(backbone="resnet18"), encoder)
    cfg = make_cfg(["experiment=relevance_segmentation", *FAST, f"model.encoder_ckpt={encoder}",
                    "model.net.backbone=resnet34"], tmp_path / "run")
    with pytest.raises(UserError, match="encoder_ckpt"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


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

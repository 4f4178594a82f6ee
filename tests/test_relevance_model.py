"""Relevance networks, encoder hand-over between phases, and the predictor's decisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.motion import MotionResult, Region
from deploy.relevance import RelevanceMaskPredictor
from lightning_modules.nets.relevance import ContrastiveNet, RelevanceNet, load_encoder, region_scores, save_encoder
from suite.errors import UserError


@pytest.mark.parametrize("size", [(224, 224), (96, 128)])
def test_decoder_output_has_input_size(size: tuple[int, int]) -> None:
    net = RelevanceNet(backbone="resnet18")
    assert net(torch.zeros(1, 3, *size)).shape == (1, 1, *size)


def test_phase_one_encoder_loads_into_phase_two(tmp_path: Path) -> None:
    phase1 = ContrastiveNet(backbone="resnet18")
    path = tmp_path / "contrastive.pth"
    save_encoder(phase1, path)
    phase2 = RelevanceNet(backbone="resnet18")
    load_encoder(phase2, path)
    for key, value in phase1.encoder.state_dict().items():
        assert torch.equal(value, phase2.encoder.state_dict()[key])


def test_encoder_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "contrastive.pth"
    save_encoder(ContrastiveNet(backbone="resnet18"), path)
    with pytest.raises(UserError, match="resnet18.*resnet34|encoder_ckpt"):
        load_encoder(RelevanceNet(backbone="resnet34"), path)
    # same name claimed, other shapes: still a clear error
    payload = torch.load(path, weights_only=True)
    payload["backbone"] = "resnet34"
    torch.save(payload, path)
    with pytest.raises(UserError, match="does not fit"):
        load_encoder(RelevanceNet(backbone="resnet34"), path)
    junk = tmp_path / "junk.pth"
    torch.save({"weights": torch.zeros(3)}, junk)
    with pytest.raises(UserError, match="no relevance encoder"):
        load_encoder(RelevanceNet(backbone="resnet18"), junk)


def _motion() -> MotionResult:
    labels = np.zeros((40, 40), np.int32)
    labels[2:12, 2:12] = 1
    labels[20:30, 20:35] = 2
    regions = [Region(1, (2, 2, 10, 10), 100, (7.0, 7.0)), Region(2, (20, 20, 15, 10), 150, (27.0, 25.0))]
    return MotionResult(frame_masks=(labels > 0)[None], mask=labels > 0, labels=labels, regions=regions)


def test_predictor_decisions_on_hand_made_masks() -> None:
    predictor = RelevanceMaskPredictor(net=RelevanceNet(), region_threshold=0.5)
    relevance = np.zeros((40, 40), np.float32)
    relevance[2:12, 2:12] = 0.9
    relevance[20:30, 20:35] = 0.2
    result = predictor.decide(relevance, _motion())
    assert [r["relevant"] for r in result["regions"]] == [True, False]
    assert result["regions"][0]["score"] == pytest.approx(0.9)
    assert result["alert"] and result["num_relevant"] == 1
    quiet = predictor.decide(np.full((40, 40), 0.1, np.float32), _motion())
    assert not quiet["alert"] and quiet["num_relevant"] == 0


def test_region_scores_match_numpy() -> None:
    motion = _motion()
    prob = torch.rand(40, 40)
    scores = region_scores(prob, torch.from_numpy(motion.labels), [1, 2])
    for rid, score in zip([1, 2], scores, strict=True):
        assert score == pytest.approx(float(prob.numpy()[motion.labels == rid].mean()), rel=1e-5)


def test_predictor_runs_end_to_end_on_frames() -> None:
    predictor = RelevanceMaskPredictor(net=RelevanceNet(), image_size=64)
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 40, 3), dtype=np.uint8)
    out = predictor.predict(frames, _motion())
    assert out["num_regions"] == 2 and all(0.0 <= r["score"] <= 1.0 for r in out["regions"])

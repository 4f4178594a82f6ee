"""Relevance networks, encoder hand-over between phases, the one region rule, the modules' typed step
outputs and files, and the predictor: same preprocessing and decisions as the test of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from callbacks.artifacts import write_artifact
from datamodules.motion import MotionResult, Region
from datamodules.relevance import (
    RelevanceContrastiveDataModule,
    RelevanceSegmentationDataModule,
    preprocess_frame,
    sample_frames,
)
from datamodules.synthetic.relevance import GENERATOR
from deploy.relevance import RelevanceMaskPredictor
from lightning_modules.losses import CombinedSegmentationLoss
from lightning_modules.nets.relevance import (
    ContrastiveNet,
    decide_regions,
    encoder_payload,
    load_encoder,
    net_from_payload,
    region_scores,
)
from lightning_modules.nets.segmentation import UNet
from lightning_modules.relevance import ContrastiveModule, RelevanceSegmentationModule
from suite.contracts import ContractError, PredictionRow, StepOutput
from suite.errors import UserError

# the modules' steps run here without a Trainer, where self.log() only warns
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def _optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return GENERATOR.ensure(tmp_path_factory.mktemp("relm") / "syn", 0, cameras=2, events_per_camera=4, frames=5,
                            width=80, height=60)


def _save_encoder(net: torch.nn.Module, path: Path) -> Path:
    torch.save(encoder_payload(net), path)
    return path


@pytest.mark.parametrize("size", [(224, 224), (96, 128)])
def test_relevance_net_output_has_input_size(size: tuple[int, int]) -> None:
    net = UNet(backbone="resnet18", num_classes=1)
    assert net(torch.zeros(1, 3, *size)).shape == (1, 1, *size)


def test_phase_one_encoder_loads_into_phase_two(tmp_path: Path) -> None:
    phase1 = ContrastiveNet(backbone="resnet18")
    path = _save_encoder(phase1, tmp_path / "contrastive.pth")
    phase2 = UNet(backbone="resnet18")
    load_encoder(phase2, path)
    for key, value in phase1.encoder.state_dict().items():
        assert torch.equal(value, phase2.encoder.state_dict()[key])


def test_encoder_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = _save_encoder(ContrastiveNet(backbone="resnet18"), tmp_path / "contrastive.pth")
    with pytest.raises(UserError, match="resnet18.*resnet34|encoder_ckpt"):
        load_encoder(UNet(backbone="resnet34"), path)
    # same name claimed, other shapes: still a clear error
    payload = torch.load(path, weights_only=True)
    payload["backbone"] = "resnet34"
    torch.save(payload, path)
    with pytest.raises(UserError, match="does not fit"):
        load_encoder(UNet(backbone="resnet34"), path)
    junk = tmp_path / "junk.pth"
    torch.save({"weights": torch.zeros(3)}, junk)
    with pytest.raises(UserError, match="no relevance encoder"):
        load_encoder(UNet(backbone="resnet18"), junk)


def _motion() -> MotionResult:
    labels = np.zeros((40, 40), np.int32)
    labels[2:12, 2:12] = 1
    labels[20:30, 20:35] = 2
    regions = [Region(1, (2, 2, 10, 10), 100, (7.0, 7.0)), Region(2, (20, 20, 15, 10), 150, (27.0, 25.0))]
    return MotionResult(frame_masks=(labels > 0)[None], mask=labels > 0, labels=labels, regions=regions)


def test_predictor_decisions_on_hand_made_masks() -> None:
    predictor = RelevanceMaskPredictor(net=UNet(), region_threshold=0.5)
    relevance = np.zeros((40, 40), np.float32)
    relevance[2:12, 2:12] = 0.9
    relevance[20:30, 20:35] = 0.2
    result = predictor.decide(relevance, _motion())
    assert [r["relevant"] for r in result["regions"]] == [True, False]
    assert result["regions"][0]["score"] == pytest.approx(0.9)
    assert result["alert"] and result["num_relevant"] == 1
    quiet = predictor.decide(np.full((40, 40), 0.1, np.float32), _motion())
    assert not quiet["alert"] and quiet["num_relevant"] == 0


def test_region_scores_match_numpy_and_are_taken_at_the_labels_size() -> None:
    motion = _motion()
    labels = torch.from_numpy(motion.labels)
    prob = torch.rand(40, 40)
    scores = region_scores(prob, labels, [1, 2])
    for rid, score in zip([1, 2], scores, strict=True):
        assert score == pytest.approx(float(prob.numpy()[motion.labels == rid].mean()), rel=1e-5)
    # a relevance map at the network's resolution is resized to the regions', not the other way round
    coarse = torch.zeros(20, 20)
    coarse[1:6, 1:6] = 1.0
    decision = decide_regions(coarse, labels, [1, 2], threshold=0.5)
    assert decision.relevant == [True, False] and decision.alert
    assert decision.event_score == pytest.approx(max(decision.scores))


def test_predictor_runs_end_to_end_on_frames() -> None:
    predictor = RelevanceMaskPredictor(net=UNet(), image_size=64)
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 40, 3), dtype=np.uint8)
    out = predictor.predict(frames, _motion())
    assert out["num_regions"] == 2 and all(0.0 <= r["score"] <= 1.0 for r in out["regions"])


def test_deploy_preprocessing_equals_the_training_preprocessing(synthetic_root: Path) -> None:
    dm = RelevanceSegmentationDataModule(root=str(synthetic_root), image_size=48, eval_frames=3, augment=True,
                                         cache_dir=None)
    train_item = dm.dataset("val")[0]  # the training pipeline without its random ops: the middle frame
    event_item = dm.event_dataset("val")[0]
    event = dm.split("val")[0]
    from datamodules.motion import read_frames
    from lightning_modules.relevance import RawRelevance

    frames = read_frames(event.frames)
    predictor = RelevanceMaskPredictor(net=UNet(), image_size=48, max_frames=3)
    raw = torch.from_numpy(predictor.network_input(frames))  # resized RGB 0-255: normalised inside the graph
    wrapper = RawRelevance(torch.nn.Identity())
    served = (raw - wrapper.mean) / wrapper.std
    picks = sample_frames(len(frames), 3)
    middle = int(np.flatnonzero(picks == len(frames) // 2)[0])
    assert served.shape == (len(picks), 3, 48, 48)
    torch.testing.assert_close(served[middle], train_item["image"], atol=1e-5, rtol=0)
    torch.testing.assert_close(served, event_item["frames"], atol=1e-5, rtol=0)
    torch.testing.assert_close(served[0], preprocess_frame(frames[picks[0]], 48), atol=1e-5, rtol=0)


def _segmentation_module(**kwargs: Any) -> RelevanceSegmentationModule:
    return RelevanceSegmentationModule(net=UNet(), loss=CombinedSegmentationLoss(), optimizer=_optimizer, **kwargs)


def test_segmentation_test_step_gives_typed_rows_with_the_served_decision(synthetic_root: Path) -> None:
    dm = RelevanceSegmentationDataModule(root=str(synthetic_root), image_size=48, cache_dir=None)
    module = _segmentation_module(comparison_events=2)
    module.configure(dm.spec())
    module.on_fit_start()  # the untrained copy the test compares against
    module.eval()
    loader = dm.test_dataloader()
    predictor = RelevanceMaskPredictor(net=module.net, image_size=48, max_frames=dm.eval_frames,
                                       region_threshold=module.region_threshold)
    module.on_test_epoch_start()
    for index, event in enumerate(loader):
        out = module.test_step(event, index)
        assert isinstance(out, StepOutput) and out.loss is not None
        assert out.prob.shape == out.target.shape == (1, 1, 48, 48)
        [row] = out.rows
        assert isinstance(row, PredictionRow) and row.item_id == event["event_id"]
        assert row.label in ("irrelevant", "relevant") and row.pred in ("irrelevant", "relevant")
        assert set(row.scores) == {"irrelevant", "relevant"}
        assert {"camera", "regions", "relevant_regions", "region_scores", "alert_untrained"} <= set(row.extras)
        # the deploy path decides the same on the same event
        source = dm.split("test")[index]
        from datamodules.motion import read_frames

        served = predictor.predict(read_frames(source.frames), dm.motion[source.event_id])
        assert row.pred == ("relevant" if served["alert"] else "irrelevant")
        assert [f"{r['score']:.3f}" for r in served["regions"]] == (row.extras["region_scores"].split(";")
                                                                     if row.extras["region_scores"] else [])
    assert set(module.step_outputs["test"]) == {"loss", "preds", "target", "prob", "rows"}


def test_segmentation_files_come_from_artifacts_and_serve(synthetic_root: Path, tmp_path: Path) -> None:
    dm = RelevanceSegmentationDataModule(root=str(synthetic_root), image_size=48, eval_frames=2, cache_dir=None)
    module = _segmentation_module(region_threshold=0.4)
    module.configure(dm.spec())
    assert module.artifacts("fit") == {}
    module.on_fit_start()
    module.eval()
    module.on_test_epoch_start()
    for index, event in enumerate(dm.test_dataloader()):
        module.test_step(event, index)
    files = module.artifacts("test")
    assert {"checkpoints/segmentation.pth", "checkpoints/complete.pth"} <= set(files)
    assert not list(tmp_path.iterdir())  # the module returns content; the callback writes it
    image = files["comparison.jpg"]  # the seed's motion | untrained | trained picture
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    for name, content in files.items():
        write_artifact(tmp_path / name, content)
    rebuilt = net_from_payload(torch.load(tmp_path / "checkpoints/segmentation.pth", weights_only=True), "x")
    for key, value in module.net.state_dict().items():
        assert torch.equal(value.cpu(), rebuilt.state_dict()[key])
    predictor = RelevanceMaskPredictor(tmp_path / "checkpoints/complete.pth")
    assert (predictor.image_size, predictor.region_threshold, predictor.max_frames) == (48, 0.4, 2)
    assert predictor.detector.settings() == dm.detector.settings()


def test_validation_output_and_picture(synthetic_root: Path) -> None:
    dm = RelevanceSegmentationDataModule(root=str(synthetic_root), image_size=48, cache_dir=None, batch_size=2)
    module = _segmentation_module(log_images=2)
    module.configure(dm.spec())
    batch = next(iter(dm.val_dataloader()))
    out = module.validation_step(batch, 0)
    assert out.preds.shape == out.target.shape == batch["mask"].shape
    picture = module.visualize(batch, out)["relevance"]
    assert picture.shape[0] == 3 and 0.0 <= float(picture.min()) and float(picture.max()) <= 1.0
    assert module.logged_metrics() >= {"val/f1", "val/iou", "val/loss"}


def test_contrastive_module_rows_picture_and_encoder_file(synthetic_root: Path, tmp_path: Path) -> None:
    dm = RelevanceContrastiveDataModule(root=str(synthetic_root), image_size=32, batch_size=3)
    module = ContrastiveModule(net=ContrastiveNet(), optimizer=_optimizer, log_images=2)
    module.configure(dm.spec())
    batch = next(iter(DataLoader(dm.dataset("test"), batch_size=3)))
    out = module.test_step(batch, 0)
    assert [row.item_id for row in out.rows] == list(batch["event_id"])
    row = out.rows[0]
    assert row.extras["triplet_right"] == int(row.extras["d_positive"] < row.extras["d_negative"])
    assert row.extras["negative_event"] == batch["negative_event_id"][0]
    train = module.training_step(next(iter(DataLoader(dm.dataset("train"), batch_size=3))), 0)
    assert isinstance(train["step_output"], StepOutput) and train["loss"].requires_grad
    picture = module.visualize(batch, module.validation_step(batch, 0))["triplets"]
    assert picture.shape[0] == 3
    files = module.artifacts("test")
    path = tmp_path / "contrastive.pth"
    write_artifact(path, files["checkpoints/contrastive.pth"])
    phase2 = UNet()
    load_encoder(phase2, path)
    assert torch.equal(phase2.encoder.state_dict()["conv1.weight"], module.net.encoder.state_dict()["conv1.weight"])


def test_module_refuses_the_other_phases_data(synthetic_root: Path) -> None:
    spec = RelevanceSegmentationDataModule(root=str(synthetic_root), cache_dir=None).spec()
    with pytest.raises(ContractError, match="experiment=relevance_contrastive"):
        ContrastiveModule(net=ContrastiveNet(), optimizer=_optimizer).configure(spec)

"""Violence LightningModule: focal loss of the presets on hand-checked values, Keras-style L2,
input checks, TTA averaging, the network built from the data's spec, typed step outputs and rows."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import torch

from lightning_modules.losses import FocalLoss
from lightning_modules.nets.violence import HybridBiLSTM, StackedBiLSTM
from lightning_modules.violence import ViolenceModule
from suite.contracts import DataSpec, Head, InputSpec, PredictionRow, StepOutput
from suite.errors import ConfigError, DataError


def make_spec(dim: int = 16, encoder: dict | None = None) -> DataSpec:
    return DataSpec(task="violence", heads=(Head("class", ("non_violent", "violent"), positive=1),),
                    input=InputSpec("features", (5, dim)),
                    extras={"frame_encoder": encoder or {"backbone": "test_efficientnet", "feature_dim": dim}})


def make_module(net: torch.nn.Module | None = None, l2: float = 0.0, gamma: float = 3.0) -> ViolenceModule:
    module = ViolenceModule(net=net or HybridBiLSTM(input_dim=16, compressed_dim=8, hidden_sizes=(4, 4, 2)),
                            loss=FocalLoss(gamma=gamma, alpha=None), optimizer=partial(torch.optim.Adam, lr=1e-3),
                            l2=l2)
    module.configure(make_spec(getattr(module.net, "input_dim", 16)))
    module.log = lambda *a, **k: None  # no trainer: logging is not what these tests check
    module.log_dict = lambda *a, **k: None
    return module


def eval_batch(n: int = 3, dim: int = 16) -> dict:
    return {"features": torch.randn(n, 5, dim), "tta": torch.randn(n, 4, 5, dim), "label": torch.tensor([0, 1, 1])[:n],
            "item_id": [f"v{i}.mp4" for i in range(n)], "group": [f"cam{i}" for i in range(n)]}


@pytest.mark.parametrize("gamma", [2.0, 3.0])
def test_focal_loss_hand_checked(gamma: float) -> None:
    # logits (0, ln 3): p(violent) = 0.75.
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    loss = FocalLoss(gamma=gamma, alpha=None, reduction="none")(logits, torch.tensor([1, 0]))
    expected_violent = 0.25 ** gamma * -math.log(0.75)  # p_t = 0.75
    expected_safe = 0.75 ** gamma * -math.log(0.25)  # p_t = 0.25
    assert loss[0].item() == pytest.approx(expected_violent, rel=1e-5)
    assert loss[1].item() == pytest.approx(expected_safe, rel=1e-5)
    # gamma 2: 0.0179801 / 0.7797905; gamma 3: 0.0044950 / 0.5848429
    table = {2.0: (0.0179801, 0.7797905), 3.0: (0.0044950, 0.5848429)}[gamma]
    assert loss.tolist() == pytest.approx(table, abs=1e-6)


def test_higher_gamma_down_weights_easy_examples_more() -> None:
    logits = torch.tensor([[0.0, 3.0]])
    target = torch.tensor([1])
    assert FocalLoss(gamma=3.0, alpha=None)(logits, target) < FocalLoss(gamma=2.0, alpha=None)(logits, target)


def test_l2_penalty_counts_kernels_not_recurrent_weights_or_biases() -> None:
    net = StackedBiLSTM(input_dim=3, hidden_sizes=(2,), dense_units=2)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1.0)
    module = make_module(net, l2=0.01)
    # kernels: w_ih 3x16 = 48, dense 4->2 = 8, output 2->2 = 4; w_hh (2x2x8) and biases excluded
    assert module.l2_penalty().item() == pytest.approx(48 + 8 + 4)


def test_training_step_adds_l2_times_penalty() -> None:
    torch.manual_seed(0)
    module = make_module(l2=0.003)
    batch = {"features": torch.randn(4, 5, 16), "label": torch.tensor([0, 1, 0, 1])}
    module.eval()  # dropout off: the two computations see the same network
    out = module.training_step(batch, 0)
    focal = module.loss_fn(module(batch["features"]), batch["label"])
    assert out["loss"].item() == pytest.approx((focal + 0.003 * module.l2_penalty()).item(), rel=1e-5)
    step = out["step_output"]
    assert isinstance(step, StepOutput) and step.loss is out["loss"]
    assert 0.0 <= step.pred_mean.item() <= 1.0 and step.target_mean.item() == pytest.approx(0.5)


def test_wrong_feature_dimension_is_a_clear_error() -> None:
    module = make_module()
    with pytest.raises(DataError, match="features are 32-d but the network expects 16"):
        module(torch.randn(2, 5, 32))
    with pytest.raises(DataError, match=r"\[batch, time, dim\]"):
        module(torch.randn(2, 16))


def test_tta_probability_is_the_mean_over_crops() -> None:
    torch.manual_seed(0)
    module = make_module().eval()
    tta = torch.randn(3, 4, 5, 16)
    with torch.no_grad():
        got = module._tta_prob(tta)
        expected = torch.stack([torch.softmax(module(tta[:, c]), 1) for c in range(4)]).mean(0)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(1), torch.ones(3))


def test_network_is_built_from_the_spec_with_the_features_size() -> None:
    factory = partial(HybridBiLSTM, compressed_dim=8, hidden_sizes=(4, 4, 2))
    module = ViolenceModule(net=factory, loss=FocalLoss(gamma=3.0, alpha=None), optimizer=partial(torch.optim.Adam))
    with pytest.raises(Exception, match="configure"):
        module(torch.randn(1, 5, 24))
    module.configure(make_spec(24))
    assert isinstance(module.net, HybridBiLSTM) and module.net.input_dim == 24
    assert module(torch.randn(2, 5, 24)).shape == (2, 2)
    assert module.class_names == ["non_violent", "violent"]
    assert module.artifacts("fit")["model_size.json"]["parameters"] == sum(p.numel() for p in module.net.parameters())
    assert module.artifacts("test") == {}


def test_model_and_data_feature_sizes_must_agree_before_training() -> None:
    declared = partial(HybridBiLSTM, input_dim=16, compressed_dim=8, hidden_sizes=(4, 4, 2))
    module = ViolenceModule(net=declared, loss=FocalLoss(gamma=3.0, alpha=None), optimizer=partial(torch.optim.Adam))
    with pytest.raises(ConfigError, match="model.net.input_dim=16 but the cached features are 32-d"):
        module.configure(make_spec(32))
    built = ViolenceModule(net=HybridBiLSTM(input_dim=16, compressed_dim=8, hidden_sizes=(4, 4, 2)),
                           loss=FocalLoss(gamma=3.0, alpha=None), optimizer=partial(torch.optim.Adam))
    with pytest.raises(ConfigError, match="model.net.input_dim=16 but the cached features are 32-d"):
        built.configure(make_spec(32))
    built.configure(make_spec(16))


def test_step_outputs_are_the_declared_fields(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    module = make_module().eval()
    with torch.no_grad():
        train = module.training_step({"features": torch.randn(3, 5, 16), "label": torch.tensor([0, 1, 1])}, 0)
        outputs = {"train": train["step_output"], "val": module.validation_step(eval_batch(), 0),
                   "test": module.test_step(eval_batch(), 0)}
    for stage, out in outputs.items():
        assert isinstance(out, StepOutput)
        filled = {f for f in StepOutput.FIELDS if getattr(out, f) is not None and getattr(out, f) != []}
        assert filled == set(module.step_outputs[stage]), stage
    val = outputs["val"]
    assert val.preds.shape == (3,) and val.prob.shape == (3, 2)
    torch.testing.assert_close(val.prob.sum(1), torch.ones(3))
    assert not list(tmp_path.iterdir())  # the module wrote no file


def test_test_rows_have_scores_per_class_and_tta_extras() -> None:
    torch.manual_seed(0)
    module = make_module().eval()
    batch = eval_batch()
    with torch.no_grad():
        out = module.test_step(batch, 0)
        tta = module._tta_prob(batch["tta"])
    assert len(out.rows) == 3 and all(isinstance(r, PredictionRow) for r in out.rows)
    record = out.rows[1].as_record()
    assert list(record)[:6] == ["item_id", "group", "label", "pred", "score_non_violent", "score_violent"]
    assert record["item_id"] == "v1.mp4" and record["group"] == "cam1" and record["label"] == "violent"
    assert record["score_violent"] == pytest.approx(float(out.prob[1, 1]), abs=1e-6)
    assert record["prob_violent_tta"] == pytest.approx(float(tta[1, 1]), abs=1e-6)
    assert record["pred_tta"] == module.class_names[int(tta[1].argmax())]
    assert record["correct"] == int(record["pred"] == "violent")
    assert record["correct_tta"] == int(record["pred_tta"] == "violent")


def test_checkpoint_of_another_frame_encoder_is_refused() -> None:
    module = make_module()
    stored = make_spec(16, {"backbone": "vgg16", "feature_dim": 16}).to_dict()
    with pytest.raises(ConfigError, match="trained on features of the frame encoder"):
        module.on_load_checkpoint({"data_spec": stored})
    module.on_load_checkpoint({"data_spec": make_spec(16).to_dict()})  # the same encoder loads

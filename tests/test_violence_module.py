"""Violence LightningModule: focal loss of the presets on hand-checked values, Keras-style L2,
input checks, TTA averaging."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from lightning_modules.losses import FocalLoss
from lightning_modules.nets.violence import HybridBiLSTM, StackedBiLSTM
from lightning_modules.violence import ViolenceModule
from suite.errors import DataError


def make_module(net: torch.nn.Module | None = None, l2: float = 0.0, gamma: float = 3.0) -> ViolenceModule:
    return ViolenceModule(net=net or HybridBiLSTM(input_dim=16, compressed_dim=8, hidden_sizes=(4, 4, 2)),
                          loss=FocalLoss(gamma=gamma, alpha=None), optimizer=partial(torch.optim.Adam, lr=1e-3),
                          l2=l2)


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
    module.log = lambda *a, **k: None
    batch = {"features": torch.randn(4, 5, 16), "label": torch.tensor([0, 1, 0, 1])}
    module.eval()  # dropout off: the two computations see the same network
    out = module.training_step(batch, 0)
    focal = module.loss_fn(module(batch["features"]), batch["label"])
    assert out["loss"].item() == pytest.approx((focal + 0.003 * module.l2_penalty()).item(), rel=1e-5)
    assert 0.0 <= out["pred_mean"].item() <= 1.0


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


def test_class_names_are_plain_strings_in_hparams() -> None:
    from omegaconf import OmegaConf

    module = ViolenceModule(net=HybridBiLSTM(input_dim=4, compressed_dim=4, hidden_sizes=(2, 2, 2)),
                            loss=FocalLoss(gamma=3.0, alpha=None), optimizer=partial(torch.optim.Adam),
                            class_names=OmegaConf.create(["non_violent", "violent"]))
    assert type(module.hparams["class_names"]) is list


def test_model_and_data_feature_sizes_must_agree_before_training(capsys) -> None:
    from types import SimpleNamespace

    from suite.errors import ConfigError

    module = make_module()  # input_dim 16
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(feature_dim=32), is_global_zero=True)
    with pytest.raises(ConfigError, match="model.net.input_dim=16 but the cached features are 32-d"):
        module.setup("fit")
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(feature_dim=16), is_global_zero=True)
    module.setup("fit")
    out = capsys.readouterr().out
    assert "HybridBiLSTM: " in out and "parameters (the seed quotes 1.2M)" in out

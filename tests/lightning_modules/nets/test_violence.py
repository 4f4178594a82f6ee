"""Violence networks: the hand-written LSTM matches nn.LSTM, recurrent dropout acts only on the
recurrent path and only in training, residual/attention shapes, parameter counts; the frame encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lightning_modules.nets.violence import (
    FrameEncoder,
    HybridBiLSTM,
    RecurrentDropoutBiLSTM,
    StackedBiLSTM,
    parameter_count,
)
from suite.errors import ConfigError, UserError


def test_lstm_without_dropout_matches_torch_bidirectional_lstm() -> None:
    torch.manual_seed(0)
    ours = RecurrentDropoutBiLSTM(7, 5, recurrent_dropout=0.0)
    ref = nn.LSTM(7, 5, batch_first=True, bidirectional=True)
    h = 5
    with torch.no_grad():
        for d, suffix in ((0, ""), (1, "_reverse")):
            getattr(ref, f"weight_ih_l0{suffix}").copy_(ours.w_ih.weight[d * 4 * h:(d + 1) * 4 * h])
            getattr(ref, f"bias_ih_l0{suffix}").copy_(ours.w_ih.bias[d * 4 * h:(d + 1) * 4 * h])
            getattr(ref, f"weight_hh_l0{suffix}").copy_(ours.w_hh[d].T)
            getattr(ref, f"bias_hh_l0{suffix}").zero_()
    x = torch.randn(3, 6, 7)
    out, last = ours(x)
    ref_out, (ref_h, _) = ref(x)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, torch.cat([ref_h[0], ref_h[1]], dim=-1), atol=1e-5, rtol=1e-5)


def test_recurrent_dropout_active_in_training_inactive_in_eval() -> None:
    torch.manual_seed(0)
    layer = RecurrentDropoutBiLSTM(4, 16, recurrent_dropout=0.3)
    x = torch.randn(2, 10, 4)
    layer.train()
    a, _ = layer(x)
    mask = layer.last_mask
    b, _ = layer(x)
    assert mask is not None and mask.shape == (2, 2, 16)
    kept = (mask > 0).float().mean().item()
    assert 0.4 < kept < 0.95  # about 70 % of the units kept
    assert torch.allclose(mask[mask > 0], torch.full_like(mask[mask > 0], 1 / 0.7))  # inverted dropout scale
    assert not torch.allclose(a, b)
    layer.eval()
    c, _ = layer(x)
    d, _ = layer(x)
    assert layer.last_mask is None
    torch.testing.assert_close(c, d)


def test_recurrent_dropout_acts_on_the_recurrent_connections_only() -> None:
    """With the hidden-to-hidden weights at zero there is nothing for recurrent dropout to drop:
    training outputs are then deterministic, so the dropout sits on h_{t-1} and nowhere else."""
    torch.manual_seed(0)
    layer = RecurrentDropoutBiLSTM(4, 8, recurrent_dropout=0.5).train()
    with torch.no_grad():
        layer.w_hh.zero_()
    x = torch.randn(2, 5, 4)
    a, _ = layer(x)
    b, _ = layer(x)
    torch.testing.assert_close(a, b)


def test_recurrent_dropout_mask_is_fixed_over_time() -> None:
    """Variational dropout: one mask per sequence. A unit dropped at one step stays dropped, so its
    contribution to the next step is zero at every step: check through the gradient of w_hh."""
    torch.manual_seed(1)
    layer = RecurrentDropoutBiLSTM(3, 6, recurrent_dropout=0.5).train()
    x = torch.randn(1, 8, 3)
    out, _ = layer(x)
    out.sum().backward()
    mask = layer.last_mask
    assert mask is not None
    for d in range(2):
        dropped = (mask[d, 0] == 0).nonzero().flatten()
        if len(dropped):
            assert torch.all(layer.w_hh.grad[d, dropped] == 0)  # rows of dropped units got no gradient
        kept = (mask[d, 0] > 0).nonzero().flatten()
        assert torch.any(layer.w_hh.grad[d, kept] != 0)


def test_hybrid_residual_and_attention_shapes() -> None:
    net = HybridBiLSTM(input_dim=40, compressed_dim=16, hidden_sizes=(6, 6, 3), attention_dim=8).eval()
    x = torch.randn(4, 9, 40)
    parts = net.encode(x)
    assert parts["states"].shape == (4, 9, 6)
    assert parts["attention"].shape == (4, 9)
    torch.testing.assert_close(parts["attention"].sum(1), torch.ones(4))
    assert parts["pooled"].shape == (4, 6)
    assert net(x).shape == (4, 2)
    # layer 2 keeps the width (identity shortcut), layer 3 halves it (projection)
    assert net.has_shortcut == [False, True, True]
    assert isinstance(net.shortcuts[1], nn.Identity)
    assert isinstance(net.shortcuts[2], nn.Linear) and net.shortcuts[2].weight.shape == (6, 12)


def test_attention_pooling_follows_the_weights() -> None:
    net = HybridBiLSTM(input_dim=8, compressed_dim=8, hidden_sizes=(4, 4, 2), attention_dim=4).eval()
    parts = net.encode(torch.randn(2, 5, 8))
    expected = (parts["attention"].unsqueeze(-1) * parts["states"]).sum(1)
    torch.testing.assert_close(parts["pooled"], expected)


def test_stacked_bilstm_output_and_parameter_count() -> None:
    net = StackedBiLSTM(input_dim=4096)
    first = 4096 * 2 * 4 * 128 + 2 * 4 * 128 + 2 * 128 * 4 * 128  # w_ih, bias, w_hh of BiLSTM 128
    assert parameter_count(net.lstms[0]) == first
    assert net(torch.randn(2, 5, 4096)).shape == (2, 2)


@pytest.mark.parametrize("cls", [StackedBiLSTM, HybridBiLSTM])
def test_backward_reaches_every_parameter(cls) -> None:
    net = cls(input_dim=32).train()
    net(torch.randn(3, 6, 32)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing


def tiny_encoder(feature_dim: int = 16, **kw) -> FrameEncoder:
    return FrameEncoder("test_efficientnet", pretrained=False, frame_size=32, feature_dim=feature_dim,
                        projection=True, **kw)


def test_frame_encoder_is_built_only_when_loaded() -> None:
    enc = FrameEncoder()  # VGG16 with ImageNet weights: constructing it must not touch the hub
    assert enc.model is None
    assert enc.describe() == {"backbone": "vgg16", "pretrained": True, "weights": None, "frame_size": 224,
                              "feature_dim": 4096, "projection": False}


def test_wrong_feature_dimension_names_the_encoder_key() -> None:
    enc = FrameEncoder("test_efficientnet", pretrained=False, frame_size=32, feature_dim=100)
    with pytest.raises(ConfigError, match=r"data.frame_encoder.feature_dim=100.*gives 256-d"):
        enc.load("cpu")
    other = enc.replace(config_key="data.synthetic_frame_encoder")
    with pytest.raises(ConfigError, match=r"data.synthetic_frame_encoder.feature_dim=100"):
        other.load("cpu")


def test_missing_weights_name_the_encoder_keys(tmp_path) -> None:
    enc = FrameEncoder("test_efficientnet", weights=str(tmp_path / "nope.pth"), frame_size=32, feature_dim=256)
    with pytest.raises(UserError, match=r"data.frame_encoder.weights: file not found"):
        enc.load("cpu")


def test_cache_key_of_a_pretrained_backbone_is_unchanged() -> None:
    """Caches extracted with a pretrained backbone before the encoder became a config node stay valid."""
    assert FrameEncoder(seed=1).key_fields() == {
        "backbone": "vgg16", "pretrained": True, "weights": None, "frame_size": 224, "feature_dim": 4096,
        "head_as_projection": False, "projection_version": 2}
    assert FrameEncoder(seed=1).key_fields() == FrameEncoder(seed=2).key_fields()
    # random weights depend on the seed: so does the key
    assert tiny_encoder(seed=1).key_fields() != tiny_encoder(seed=2).key_fields()


def test_tiny_backbone_projects_to_fc7_scale_features() -> None:
    """The synthetic stand-in for fc7 gives features of fc7's scale: non-negative, sparse, order 1.
    (At 1e-4, as a logits-initialised head gave, the seed's L2 penalty swamped every signal.)"""
    enc = tiny_encoder(4096).load("cpu")
    frames = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    out = enc(frames)
    assert out.shape == (6, 4096) and np.isfinite(out).all()
    assert out.min() >= 0.0 and 0.2 < (out == 0).mean() < 0.8
    assert 0.1 < out.mean() < 5.0 and out.std() > 0.1
    # different frames give different features
    assert np.abs(out[0] - out[1]).mean() > 0.01


def test_building_the_backbone_leaves_the_global_rng_alone() -> None:
    """A run that extracts and a run that reads the cache must draw the same shuffles and dropout."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = tiny_encoder(seed=5).load("cpu")
    assert torch.equal(torch.rand(3), expected)
    b = tiny_encoder(seed=5).load("cpu")
    frames = np.full((1, 32, 32, 3), 100, np.uint8)
    np.testing.assert_array_equal(a(frames), b(frames))  # same seed, same random backbone
    c = tiny_encoder(seed=6).load("cpu")
    assert not np.array_equal(a(frames), c(frames))

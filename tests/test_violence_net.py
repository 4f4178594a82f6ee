"""Violence networks: the hand-written LSTM matches nn.LSTM, recurrent dropout acts only on the
recurrent path and only in training, residual/attention shapes, parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_modules.nets.violence import (
    HybridBiLSTM,
    RecurrentDropoutBiLSTM,
    StackedBiLSTM,
    parameter_count,
)


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

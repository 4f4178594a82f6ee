"""Sequence classifiers over per-frame features ``[N, T, D]`` -> logits ``[N, 2]`` (seed 001).

- :class:`StackedBiLSTM` — the "failed" configuration: bidirectional LSTMs 128/64/32, heavy
  dropout (0.5-0.6) and recurrent dropout 0.3.
- :class:`HybridBiLSTM` — the "optimal hybrid": feature compression (4096 -> 512), bidirectional
  LSTMs 96/96/48 with residual connections, attention pooling, moderate dropout (0.32) and
  recurrent dropout 0.15-0.2.

Recurrent dropout is Keras's (Gal & Ghahramani's variational dropout): one mask per sequence,
applied to the hidden state h_{t-1} before it enters the hidden-to-hidden product at every step.
``nn.LSTM(dropout=...)`` only drops between layers and cuDNN offers no hook inside the recurrence,
so the LSTM step loop is written here (both directions advance together in one batched matmul).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class RecurrentDropoutBiLSTM(nn.Module):
    """Bidirectional LSTM layer with variational dropout on the recurrent connections.

    ``forward(x [N, T, I]) -> (outputs [N, T, 2H], last [N, 2H])``, where ``last`` concatenates the
    forward direction's final state and the backward direction's final state (its step at t=0),
    as Keras's ``Bidirectional(LSTM(return_sequences=False))`` does.
    """

    def __init__(self, input_size: int, hidden_size: int, recurrent_dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= recurrent_dropout < 1.0:
            raise ValueError(f"recurrent_dropout must be in [0, 1), got {recurrent_dropout}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.recurrent_dropout = recurrent_dropout
        # Input projections of both directions in one matmul over all time steps.
        self.w_ih = nn.Linear(input_size, 2 * 4 * hidden_size)
        self.w_hh = nn.Parameter(torch.empty(2, hidden_size, 4 * hidden_size))
        self.reset_parameters()
        self.last_mask: torch.Tensor | None = None  # kept for tests: the mask of the last forward

    def reset_parameters(self) -> None:
        h = self.hidden_size
        nn.init.xavier_uniform_(self.w_ih.weight)
        with torch.no_grad():
            self.w_ih.bias.zero_()
            # forget-gate bias 1 (Keras unit_forget_bias), gate order i, f, g, o per direction
            for d in range(2):
                self.w_ih.bias[d * 4 * h + h: d * 4 * h + 2 * h] = 1.0
            for d in range(2):
                for g in range(4):
                    nn.init.orthogonal_(self.w_hh[d, :, g * h:(g + 1) * h])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t, _ = x.shape
        h_size = self.hidden_size
        gates_x = self.w_ih(x).view(n, t, 2, 4 * h_size)
        h = x.new_zeros(2, n, h_size)
        c = x.new_zeros(2, n, h_size)
        mask = None
        if self.training and self.recurrent_dropout > 0:
            keep = 1.0 - self.recurrent_dropout
            mask = torch.bernoulli(x.new_full((2, n, h_size), keep)) / keep
        self.last_mask = mask
        outs_f, outs_b = [], []
        for step in range(t):
            gx = torch.stack([gates_x[:, step, 0], gates_x[:, t - 1 - step, 1]])  # [2, N, 4H]
            h_in = h * mask if mask is not None else h
            gates = gx + torch.bmm(h_in, self.w_hh)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs_f.append(h[0])
            outs_b.append(h[1])
        outputs = torch.cat([torch.stack(outs_f, 1), torch.stack(outs_b[::-1], 1)], dim=-1)
        last = torch.cat([h[0], h[1]], dim=-1)
        return outputs, last


class AttentionPooling(nn.Module):
    """Additive attention over time: ``softmax_t(v^T tanh(W h_t))``-weighted sum of the states."""

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.score(torch.tanh(self.proj(states))).squeeze(-1), dim=1)  # [N, T]
        return torch.bmm(weights.unsqueeze(1), states).squeeze(1), weights


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class StackedBiLSTM(nn.Module):
    """Seed 001's failed model: BiLSTM 128 -> 64 -> 32 (last state) -> dense 64 -> 2 logits."""

    def __init__(
        self,
        input_dim: int = 4096,
        hidden_sizes: Sequence[int] = (128, 64, 32),
        dropout: float = 0.5,
        dense_units: int = 64,
        dense_dropout: float = 0.6,
        recurrent_dropout: float = 0.3,
        num_classes: int = 2,
    ):
        super().__init__()
        self.input_dim = input_dim
        layers, size = [], input_dim
        for hidden in hidden_sizes:
            layers.append(RecurrentDropoutBiLSTM(size, hidden, recurrent_dropout))
            size = 2 * hidden
        self.lstms = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Sequential(nn.Linear(size, dense_units), nn.ReLU(inplace=True), nn.Dropout(dense_dropout),
                                  nn.Linear(dense_units, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = x
        for lstm in self.lstms:
            x, last = lstm(x)
            x = self.dropout(x)
        return self.head(self.dropout(last))


class HybridBiLSTM(nn.Module):
    """Seed 001's optimal hybrid: compression -> BiLSTM 96/96/48 with residuals -> attention -> head."""

    def __init__(
        self,
        input_dim: int = 4096,
        compressed_dim: int = 512,
        hidden_sizes: Sequence[int] = (96, 96, 48),
        dropout: float = 0.32,
        dense_units: int = 64,
        dense_dropout: float = 0.35,
        recurrent_dropout: float = 0.18,
        attention_dim: int = 64,
        num_classes: int = 2,
    ):
        super().__init__()
        self.input_dim = input_dim
        self.compress = nn.Sequential(nn.Linear(input_dim, compressed_dim), nn.LayerNorm(compressed_dim),
                                      nn.ReLU(inplace=True), nn.Dropout(dropout))
        layers, shortcuts, size = [], [], compressed_dim
        for i, hidden in enumerate(hidden_sizes):
            layers.append(RecurrentDropoutBiLSTM(size, hidden, recurrent_dropout))
            out = 2 * hidden
            # Residual from the previous LSTM's output (the first LSTM has none: its input is the
            # compressed feature, a different signal); a projection where the widths differ.
            if i == 0:
                shortcuts.append(None)
            else:
                shortcuts.append(nn.Identity() if size == out else nn.Linear(size, out, bias=False))
            size = out
        self.lstms = nn.ModuleList(layers)
        self.shortcuts = nn.ModuleList([s if s is not None else nn.Identity() for s in shortcuts])
        self.has_shortcut = [s is not None for s in shortcuts]
        self.dropout = nn.Dropout(dropout)
        self.attention = AttentionPooling(size, attention_dim)
        self.head = nn.Sequential(nn.Linear(size, dense_units), nn.ReLU(inplace=True), nn.Dropout(dense_dropout),
                                  nn.Linear(dense_units, num_classes))

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intermediate tensors: ``states`` [N, T, 2H_last], ``attention`` [N, T], ``pooled`` [N, 2H_last]."""
        x = self.compress(x)
        for lstm, shortcut, residual in zip(self.lstms, self.shortcuts, self.has_shortcut, strict=True):
            out, _ = lstm(x)
            x = self.dropout(out + shortcut(x) if residual else out)
        pooled, weights = self.attention(x)
        return {"states": x, "attention": weights, "pooled": pooled}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x)["pooled"])

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

- :class:`FrameEncoder` — the per-frame CNN whose features the sequence models read (seed: VGG16
  fc7, 4096-d). The DataModule receives it from the config (``data.frame_encoder``), runs it once per
  video and caches the features; it is built only when something is left to extract.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from suite.backbones import IMAGENET_MEAN, IMAGENET_STD
from suite.errors import ConfigError, UserError

# bumped when the synthetic fc7 stand-in changes, so that caches of the old one are not reused
PROJECTION_VERSION = 2


def _with_fc7_like_projection(model: nn.Module, feature_dim: int) -> nn.Module:
    """A stand-in for VGG16 fc7 on top of a tiny random backbone: ReLU(W norm(x)), W He-initialised.

    A tiny random backbone pools features around 1e-3, and a timm classifier head is initialised for
    logits; together they gave features around 1e-4, far below fc7's scale (order 1), so the seed's L2
    penalty swamped every signal. Normalising the pooled vector and a variance-keeping projection
    give sparse non-negative features of order 1, like fc7's.
    """
    projection = nn.Linear(model.num_features, feature_dim)
    nn.init.kaiming_normal_(projection.weight, nonlinearity="relu")
    nn.init.zeros_(projection.bias)
    return nn.Sequential(model, nn.LayerNorm(model.num_features, elementwise_affine=False), projection, nn.ReLU())


#: ``auto`` is resolved by the DataModule (:meth:`datamodules.violence.ViolenceDataModule.resolve_encoder_precision`)
ENCODER_PRECISIONS = ("fp32", "bf16", "auto")


class FrameEncoder:
    """A timm backbone in eval mode: uint8 RGB frames ``[N, H, W, 3]`` -> float32 features ``[N, D]``.

    ``backbone`` is any timm model, made with ``num_classes=0`` so that its output is the pre-logits
    feature (fc7 for ``vgg16``); ``feature_dim`` must be that size. ``pretrained`` takes the ImageNet
    weights from the hub, ``weights`` from a local file. ``projection`` adds a fixed random fc7-like
    projection to ``feature_dim`` values (the synthetic default's tiny backbone). Random weights
    (no pretrained weights, or a projection) are drawn from ``seed``.

    Constructing one is free: the network is built by :meth:`load`, which the feature cache calls only
    when something is left to extract, so a run that reads its cache never loads the backbone.
    ``config_key`` names the config node in error messages.
    """

    def __init__(
        self,
        backbone: str = "vgg16",
        pretrained: bool = True,
        weights: str | None = None,
        frame_size: int = 224,
        feature_dim: int = 4096,
        projection: bool = False,
        seed: int = 0,
        precision: str = "fp32",
        config_key: str = "data.frame_encoder",
    ):
        if precision not in ENCODER_PRECISIONS:
            raise ConfigError(f"{config_key}.precision must be one of {', '.join(ENCODER_PRECISIONS)}, "
                              f"got {precision!r}")
        if frame_size < 8:
            raise ConfigError(f"{config_key}.frame_size must be >= 8 pixels, got {frame_size}")
        if feature_dim < 1:
            raise ConfigError(f"{config_key}.feature_dim must be >= 1, got {feature_dim}")
        self.backbone = str(backbone)
        self.pretrained = bool(pretrained)
        self.weights = str(weights) if weights else None
        self.frame_size = int(frame_size)
        self.feature_dim = int(feature_dim)
        self.projection = bool(projection)
        self.seed = int(seed)
        self.precision = precision
        self.config_key = config_key
        self.model: nn.Module | None = None
        self.device = torch.device("cpu")
        self.batch_frames = 256

    def settings(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "pretrained": self.pretrained, "weights": self.weights,
                "frame_size": self.frame_size, "feature_dim": self.feature_dim, "projection": self.projection,
                "seed": self.seed, "precision": self.precision, "config_key": self.config_key}

    def replace(self, **changes: Any) -> FrameEncoder:
        """A copy with some settings changed (the network is not copied: it is built on demand)."""
        return FrameEncoder(**{**self.settings(), **changes})

    @property
    def random_init(self) -> bool:
        """True when some weights are drawn at random (then ``seed`` decides the features)."""
        return self.projection or not (self.pretrained or self.weights)

    def describe(self) -> dict[str, Any]:
        """What decides the features, JSON-able: kept in the data spec (and so in checkpoints)."""
        out: dict[str, Any] = {"backbone": self.backbone, "pretrained": self.pretrained,
                               "weights": Path(self.weights).name if self.weights else None,
                               "frame_size": self.frame_size, "feature_dim": self.feature_dim,
                               "projection": self.projection}
        if self.random_init:
            out["seed"] = self.seed
        if self.precision != "fp32":
            out["precision"] = self.precision
        return out

    def key_fields(self) -> dict[str, Any]:
        """The feature cache's key. Field names and values of a pretrained backbone are those of
        earlier versions, so their caches stay valid; a weights file counts with its size and time."""
        fields: dict[str, Any] = {"backbone": self.backbone, "pretrained": self.pretrained, "weights": self.weights,
                                  "frame_size": self.frame_size, "feature_dim": self.feature_dim,
                                  "head_as_projection": self.projection, "projection_version": PROJECTION_VERSION}
        if self.weights:
            path = Path(self.weights).expanduser()
            stat = path.stat() if path.is_file() else None
            fields["weights"] = [str(path.resolve()), stat.st_size if stat else None,
                                 stat.st_mtime_ns if stat else None]
        if self.random_init:
            fields["init_seed"] = self.seed
        if self.precision != "fp32":  # (fp32 caches keep the keys they always had)
            fields["precision"] = self.precision
        return fields

    def load(self, device: str = "auto", batch_frames: int = 256) -> FrameEncoder:
        """Build the network (once) on ``device`` (``auto``: a GPU when there is one) and check its
        output size against ``feature_dim``."""
        from suite.backbones import create_timm_model

        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.batch_frames = max(1, int(batch_frames))
        if self.model is None:
            # Random weights are fixed by the seed so that the cache key means something; the global
            # generator is left untouched, so a run that extracts and a run that reads the cache train alike.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                try:
                    model = create_timm_model(self.backbone, pretrained=self.pretrained, weights=self.weights,
                                              num_classes=0)
                except UserError as err:
                    # the shared helper names the model's keys; here the frame encoder's are meant
                    message = str(err)
                    for key in ("backbone", "pretrained", "weights"):
                        message = message.replace(f"model.{key}", f"{self.config_key}.{key}")
                    raise UserError(message) from None
                cfg = getattr(model, "pretrained_cfg", {}) or {}
                if self.projection:
                    model = _with_fc7_like_projection(model, self.feature_dim)
            self.model = model.eval()
            mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
            self._mean = torch.tensor(mean).view(1, 3, 1, 1) * 255.0
            self._std = torch.tensor(std).view(1, 3, 1, 1) * 255.0
        self.model.to(self.device)
        probe = self(np.zeros((1, self.frame_size, self.frame_size, 3), np.uint8))
        if probe.shape[1] != self.feature_dim:
            raise ConfigError(
                f"{self.config_key}.feature_dim={self.feature_dim}, but backbone '{self.backbone}' at "
                f"{self.frame_size}px gives {probe.shape[1]}-d features; set {self.config_key}.feature_dim="
                f"{probe.shape[1]} (the sequence network's input follows it)"
            )
        return self

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if self.model is None:
            self.load()
        assert self.model is not None
        mean, std = self._mean.to(self.device), self._std.to(self.device)
        out = []
        # bf16: autocast runs the convolutions in bf16 (features within about 1 % of fp32's); the output is fp32
        bf16 = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            for start in range(0, len(frames), self.batch_frames):
                x = torch.from_numpy(np.ascontiguousarray(frames[start:start + self.batch_frames]))
                x = (x.to(self.device).permute(0, 3, 1, 2).float() - mean) / std
                out.append(self.model(x).float().cpu().numpy())
        return np.concatenate(out)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "config_key")
        return f"FrameEncoder({shown})"


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
        # The input projection (most of the work) follows autocast; the recurrence runs in fp32: its small
        # matmuls gain little from bf16, and a bf16 cell state would round away what it adds up over time.
        gates_x = self.w_ih(x).float().view(n, t, 2, 4 * h_size)
        if not torch.is_autocast_enabled(x.device.type):  # (an exported graph never sees the context)
            return self._recur(gates_x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._recur(gates_x)

    def _recur(self, gates_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t = gates_x.shape[:2]
        h_size = self.hidden_size
        h = gates_x.new_zeros(2, n, h_size)
        c = gates_x.new_zeros(2, n, h_size)
        mask = None
        if self.training and self.recurrent_dropout > 0:
            keep = 1.0 - self.recurrent_dropout
            mask = torch.bernoulli(gates_x.new_full((2, n, h_size), keep)) / keep
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

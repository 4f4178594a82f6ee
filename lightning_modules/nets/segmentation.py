"""U-Net with any timm encoder; the output has the input's resolution.

The decoder is a few conv blocks written here rather than taken from
segmentation_models_pytorch so that every task gets its encoder and pretrained weights through
one path (``suite.backbones``) and the exported graph stays a plain module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from suite.backbones import create_timm_model


def timm_encoder(backbone: str, pretrained: bool = False, weights: str | None = None, in_channels: int = 3,
                 depth: int = 5) -> nn.Module:
    """The feature pyramid (``depth`` stages) of a timm backbone: the encoder of :class:`UNet`, and of any
    net whose encoder must load into a UNet's (the relevance task's contrastive phase)."""
    return create_timm_model(backbone, pretrained=pretrained, weights=weights, features_only=True,
                             in_chans=in_channels, out_indices=tuple(range(depth)))


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class UNetDecoder(nn.Module):
    """Upsample from the deepest feature map, concatenating each shallower one on the way."""

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int]):
        super().__init__()
        skips = list(encoder_channels[:-1])[::-1]
        if len(decoder_channels) < len(skips) + 1:
            raise ValueError(
                f"decoder_channels needs {len(skips) + 1} entries for this encoder, got {len(decoder_channels)}"
            )
        blocks = []
        in_ch = encoder_channels[-1]
        for skip_ch, out_ch in zip(skips, decoder_channels, strict=False):
            blocks.append(_conv_block(in_ch + skip_ch, out_ch))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.final = _conv_block(in_ch, decoder_channels[len(skips)])
        self.out_channels = decoder_channels[len(skips)]

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, features[:-1][::-1], strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.final(x)


class UNet(nn.Module):
    """``forward(images [N, C, H, W]) -> logits [N, classes, H, W]``.

    ``config`` holds the constructor's architecture arguments, so a weights file saved with it can
    rebuild the same net (``UNet(**config)``) without the run's Hydra config.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        in_channels: int = 3,
        num_classes: int = 1,
        decoder_channels: Sequence[int] = (128, 64, 48, 32, 16),
        encoder_depth: int = 5,
    ):
        super().__init__()
        self.config = {"backbone": backbone, "in_channels": in_channels, "num_classes": num_classes,
                       "decoder_channels": list(decoder_channels), "encoder_depth": encoder_depth}
        self.encoder = timm_encoder(backbone, pretrained, weights, in_channels, encoder_depth)
        channels = self.encoder.feature_info.channels()
        self.decoder = UNetDecoder(channels, decoder_channels)
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encoder(images)
        return self.head(self.decoder(features, images.shape[-2:]))

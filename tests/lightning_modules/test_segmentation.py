"""Whole-image evaluation of the segmentation module: padding to the net's stride, tiles above a bound."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_modules.nets.segmentation import UNet
from lightning_modules.segmentation import SegmentationModule, whole_image_logits
from suite.errors import ConfigError


@pytest.fixture(scope="module")
def unet() -> UNet:
    torch.manual_seed(0)
    return UNet("resnet18", decoder_channels=(16, 16, 16, 8, 8)).eval()


class Recorder(nn.Module):
    """A pointwise net (its output at a pixel depends on that pixel only) that records its input sizes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, kernel_size=1)
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return self.conv(x)


@torch.no_grad()
def test_an_image_that_fits_gets_the_nets_own_prediction(unet: UNet) -> None:
    images = torch.randn(2, 3, 64, 96)
    torch.testing.assert_close(whole_image_logits(unet, images, tile=1024), unet(images))


@torch.no_grad()
@pytest.mark.parametrize("tile", [1024, 256])
def test_odd_sizes_come_back_at_their_size(unet: UNet, tile: int) -> None:
    out = whole_image_logits(unet, torch.randn(1, 3, 500, 333), tile=tile)
    assert out.shape == (1, 1, 500, 333) and torch.isfinite(out).all()


@torch.no_grad()
def test_inputs_are_padded_to_the_stride_and_tiled_above_the_bound() -> None:
    net = Recorder()
    images = torch.randn(1, 3, 150, 100)
    whole = whole_image_logits(net, images, tile=1024)
    assert net.sizes == [(160, 128)]  # padded to multiples of 32, cut back
    net.sizes.clear()
    tiled = whole_image_logits(net, images, tile=64, overlap=0.25)
    assert len(net.sizes) > 1 and set(net.sizes) == {(64, 64)}
    # a pointwise net gives every tile the same value at a pixel: the blend must give exactly that value
    torch.testing.assert_close(tiled, whole)
    torch.testing.assert_close(whole, net.conv(images))


@torch.no_grad()
def test_validation_scores_whole_images_and_options_reach_the_predictor(unet: UNet) -> None:
    module = SegmentationModule(unet, nn.BCEWithLogitsLoss(), torch.optim.SGD, eval_tile=64).eval()
    batch = {"image": torch.randn(1, 3, 70, 45), "mask": torch.zeros(1, 1, 70, 45), "name": ["a"]}
    out = module.validation_step(batch, 0)
    assert out.prob.shape == (1, 1, 70, 45)
    assert module.inference_options()["tile_size"] == 64


def test_bad_tile_options_are_refused(unet: UNet) -> None:
    with pytest.raises(ConfigError, match="model.eval_tile=8"):
        SegmentationModule(unet, nn.BCEWithLogitsLoss(), torch.optim.SGD, eval_tile=8)

"""NED's renderer losses (``renderer/models/networks.py`` and ``head2head_model.py``, as
pix2pixHD): LSGAN summed over the discriminator's scales, feature matching over every stage but
the logits, and the VGG-19 perceptual loss at relu1_1 … relu5_1 with weights 1/32 … 1.

VGG-19's ImageNet weights are the user's file (torchvision's ``vgg19-dcbb9e9d.pth``; nothing is
downloaded). Without it the perceptual term is an L1 loss on the pixels, said in the log: a VGG
with random weights measured worse on the demo corpus (held-out face SSIM 0.77 against 0.81
after 300 steps) at four times the step time, so it is no perceptual loss worth its cost.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from scmcl import backbones
from scmcl.io.state_dicts import read_strict_state

log = logging.getLogger(__name__)

#: The ends of NED's VGG slices in ``vgg19().features`` (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1) and their weights.
VGG_SLICES = (2, 7, 12, 21, 30)
VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


class VggWeightsError(ValueError):
    """A VGG-19 weight file that cannot be read or is not torchvision's VGG-19."""


def lsgan(features: list[list[torch.Tensor]], real: bool) -> torch.Tensor:
    """MSE of every scale's patch logits to 1 (real) or 0 (fake), summed over scales."""
    target = 1.0 if real else 0.0
    return sum(F.mse_loss(stages[-1], torch.full_like(stages[-1], target)) for stages in features)


def feature_matching(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]], weight: float) -> torch.Tensor:
    """L1 between the fake's and the (detached) real's features at every stage but the logits,
    each weighted 1/scales · 4/(layers+1) · ``weight`` (NED's lambda_feat 10)."""
    scales, stages = len(real), len(real[0])
    factor = weight / scales * 4.0 / (stages - 1)  # stages = n_layers_D + 2
    return sum(factor * F.l1_loss(f, r.detach()) for fake_stages, real_stages in zip(fake, real, strict=True)
               for f, r in zip(fake_stages[:-1], real_stages[:-1], strict=True))


def _vgg19(weights: str) -> nn.Sequential:
    features = backbones.models().vgg19(weights=None).features
    expected = {f"features.{key}": value for key, value in features.state_dict().items()}
    state = read_strict_state(Path(weights), expected, "torchvision's VGG-19 (vgg19-dcbb9e9d.pth)", VggWeightsError,
                              drop="classifier.")  # the classifier is unused here
    features.load_state_dict({key.removeprefix("features."): value for key, value in state.items()}, strict=True)
    return features[:VGG_SLICES[-1]]


class VggLoss(nn.Module):
    """NED's perceptual loss: Σ_i w_i·L1(VGG_i(fake), VGG_i(real)) on images in [−1, 1] as NED
    feeds them (no ImageNet normalisation); frozen and in eval mode."""

    def __init__(self, weights: str) -> None:
        super().__init__()
        features = _vgg19(weights)
        starts = (0, *VGG_SLICES[:-1])
        self.slices = nn.ModuleList(features[a:b] for a, b in zip(starts, VGG_SLICES))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VggLoss:
        return super().train(False)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        loss = torch.zeros((), device=fake.device)
        for weight, block in zip(VGG_WEIGHTS, self.slices):
            fake, real = block(fake), block(real)
            loss = loss + weight * F.l1_loss(fake, real.detach())
        return loss


class PixelL1(nn.Module):
    """The perceptual term's fallback without VGG weights: L1 between the images."""

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(fake, real.detach())


def perceptual_loss(vgg_weights: str | None) -> nn.Module:
    """NED's VGG loss from the user's weights, or the logged pixel-L1 fallback."""
    if vgg_weights:
        return VggLoss(vgg_weights)
    log.warning("renderer: no VGG-19 ImageNet weights given (renderer.vgg_weights); the perceptual term falls back "
                "to an L1 loss on the pixels")
    return PixelL1()

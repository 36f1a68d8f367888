"""LPIPS (Zhang et al. 2018, the ``lpips`` package's VGG variant) for SCMCL's paired renderer
term, from two user files, since nothing is downloaded: the package's linear layers
(``lpips/weights/v0.1/vgg.pth``, keys ``lin{k}.model.1.weight``) and torchvision's VGG-16
ImageNet weights (``vgg16-397923af.pth``), both loaded strictly.

LPIPS(x, y) = Σ_k mean_hw w_k · (n(f_k(x)) − n(f_k(y)))², with f_k VGG-16 at relu1_2 … relu5_3
after the package's scaling layer, n the unit normalisation over channels."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from scmcl import backbones
from scmcl.io.state_dicts import read_strict_state

log = logging.getLogger(__name__)

#: The ends of the VGG-16 slices (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) and their widths.
SLICES = (4, 9, 16, 23, 30)
CHANNELS = (64, 128, 256, 512, 512)
#: The package's ScalingLayer: inputs in [−1, 1] shifted and scaled to ImageNet's statistics.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


class LpipsWeightsError(ValueError):
    """A file that is not the lpips package's vgg.pth or torchvision's VGG-16."""


class _Linear(nn.Module):
    """The package's NetLinLayer: dropout, then a bias-free 1×1 convolution to one channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Lpips(nn.Module):
    """Frozen LPIPS-VGG; ``forward`` gives one distance per image pair (N,)."""

    def __init__(self, linear: str, backbone: str) -> None:
        super().__init__()
        features = backbones.models().vgg16(weights=None).features[:SLICES[-1]]
        expected = {f"features.{k}": v for k, v in features.state_dict().items()}
        state = read_strict_state(Path(backbone), expected, "torchvision's VGG-16 (vgg16-397923af.pth)", LpipsWeightsError,
                                  drop="classifier.")
        features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()}, strict=True)
        starts = (0, *SLICES[:-1])
        self.slices = nn.ModuleList(features[a:b] for a, b in zip(starts, SLICES))
        self.lins = nn.ModuleDict({f"lin{k}": _Linear(c) for k, c in enumerate(CHANNELS)})  # the package's key names
        self.lins.load_state_dict(read_strict_state(Path(linear), self.lins.state_dict(), "the lpips package's vgg.pth",
                                                   LpipsWeightsError), strict=True)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Lpips:
        return super().train(False)

    @classmethod
    def from_files(cls, linear: str | None, backbone: str | None, device: torch.device) -> Lpips | None:
        """The metric when both files are given; otherwise None, said in the log."""
        if not (linear and backbone):
            log.warning("renderer scmcl: the LPIPS-weighted paired term is skipped (renderer.lpips_weights and "
                        "renderer.lpips_backbone name the lpips package's vgg.pth and torchvision's VGG-16 weights)")
            return None
        return cls(linear, backbone).to(device)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = (x - self.shift) / self.scale, (y - self.shift) / self.scale
        total = x.new_zeros(len(x))
        for block, lin in zip(self.slices, self.lins.values()):
            x, y = block(x), block(y)
            nx = x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + EPS)
            ny = y / (torch.linalg.vector_norm(y, dim=1, keepdim=True) + EPS)
            total = total + lin((nx - ny.detach()) ** 2).mean(dim=(1, 2, 3))
        return total

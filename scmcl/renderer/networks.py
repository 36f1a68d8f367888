"""NED's renderer generator (``renderer/models/networks.py``, unchanged in SCMCL), laid out so
that its state dict is the released ``XX_net_G.pth`` / ``01_net_G.pth``, key for key
(docs/ned-renderer-layout.md §2).

Input per frame: ``[NMFC(3), eye(3), shape(3), mask(1)]`` in [0, 1]; the generator takes
``frames`` of them, oldest first, drops the masks, and encodes the 27 channels
(``model_down_seg``); a second encoder (``model_down_img``) takes the ``frames - 1`` previous
generated RGB frames. The two codes are summed, decoded, and the current frame's mask sets the
background to -1.

Two facts of the official files the layout keeps:
- every ResNet block registers its Sequential twice (``resnetblock_sequential`` and
  ``conv_block``), so each of its tensors appears under both names;
- InstanceNorm keeps running statistics (``track_running_stats=True``), stored in the files but
  never used, because NED never leaves train mode: it always normalises with each image's own
  statistics, and so does :class:`InstanceNorm` here, in eval mode too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

#: Channels of one conditioning frame: NMFC, eye and shape images, then the face mask.
CONDITION_CHANNELS = 9
FRAME_CHANNELS = CONDITION_CHANNELS + 1
RGB = 3


@dataclass(frozen=True)
class RendererSizes:
    """The generator's sizes (NED: ngf 64, 3 downsamplings, 9 ResNet blocks, 3 frames)."""

    ngf: int
    downsample: int
    blocks: int
    frames: int


class InstanceNorm(nn.InstanceNorm2d):
    """Affine-free InstanceNorm with running statistics (the files hold them), normalising
    with the input's own statistics in train and eval mode alike, as NED's inference does."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=False, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)  # updates the running statistics, as NED's training does
        return F.instance_norm(x, eps=self.eps)


class ResnetBlock(nn.Module):
    """x + [pad, conv 3×3, norm, ReLU, pad, conv 3×3, norm](x), the Sequential registered under
    NED's two names."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.resnetblock_sequential = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), InstanceNorm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), InstanceNorm(channels))
        self.conv_block = self.resnetblock_sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _encoder(channels_in: int, ngf: int, downsample: int, blocks: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels_in, ngf, 7), InstanceNorm(ngf), nn.ReLU(True)]
    for i in range(downsample):
        width = ngf * 2 ** i
        layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), InstanceNorm(2 * width), nn.ReLU(True)]
    return nn.Sequential(*layers, *(ResnetBlock(ngf * 2 ** downsample) for _ in range(blocks)))


def _decoder(ngf: int, downsample: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(downsample):
        width = ngf * 2 ** (downsample - i)
        layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                   InstanceNorm(width // 2), nn.ReLU(True)]
    return nn.Sequential(*layers)


def _normal_init(module: nn.Module) -> None:
    """NED's ``weights_init``: conv weights from N(0, 0.02); biases keep PyTorch's default."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)


class Generator(nn.Module):
    """(B, frames·10, H, W) conditioning in [0, 1] and (B, (frames−1)·3, H, W) previous
    outputs in [−1, 1] (zeros before the first frame) → (B, 3, H, W) in [−1, 1], background −1.
    H and W must divide by 2^downsample."""

    def __init__(self, sizes: RendererSizes) -> None:
        super().__init__()
        encoder_blocks = sizes.blocks - sizes.blocks // 2
        self.frames = sizes.frames
        self.model_down_seg = _encoder(CONDITION_CHANNELS * sizes.frames, sizes.ngf, sizes.downsample, encoder_blocks)
        self.model_down_img = _encoder(RGB * (sizes.frames - 1), sizes.ngf, sizes.downsample, encoder_blocks)
        self.model_res_img = nn.Sequential(*(ResnetBlock(sizes.ngf * 2 ** sizes.downsample)
                                             for _ in range(sizes.blocks // 2)))
        self.model_up_img = _decoder(sizes.ngf, sizes.downsample)
        self.model_final_img = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(sizes.ngf, RGB, 7), nn.Tanh())
        self.apply(_normal_init)

    def forward(self, conditioning: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        frames = conditioning.chunk(self.frames, dim=1)
        images = torch.cat([frame[:, :CONDITION_CHANNELS] for frame in frames], dim=1)
        mask = frames[-1][:, CONDITION_CHANNELS:]
        code = self.model_down_seg(images) + self.model_down_img(previous)
        face = self.model_final_img(self.model_up_img(self.model_res_img(code)))
        return face * mask - (1 - mask)


#: NED's cap on a PatchGAN's width (``ndf_max``) and the stride-1 kernel padding it uses.
_NDF_MAX = 64
_D_KERNEL, _D_PAD = 4, 2


def _patch_layers(channels_in: int, ndf: int, layers: int) -> list[nn.Sequential]:
    """NED's ``NLayerDiscriminator`` as its ``layers + 2`` stages (``model0`` … ``model<layers+1>``)."""
    stages = [nn.Sequential(nn.Conv2d(channels_in, ndf, _D_KERNEL, 2, _D_PAD), nn.LeakyReLU(0.2, True))]
    width = ndf
    for n in range(1, layers + 1):
        previous, width = width, min(width * 2, 512)
        stride = 2 if n < layers else 1
        stages.append(nn.Sequential(nn.Conv2d(previous, width, _D_KERNEL, stride, _D_PAD), InstanceNorm(width),
                                    nn.LeakyReLU(0.2, True)))
    stages.append(nn.Sequential(nn.Conv2d(width, 1, _D_KERNEL, 1, _D_PAD)))
    return stages


@dataclass(frozen=True)
class DiscriminatorSizes:
    """NED's image, mouth and eye discriminators: ndf 64, 3 layers, 2 scales."""

    ndf: int
    layers: int
    scales: int


class MultiscaleDiscriminator(nn.Module):
    """NED's multiscale PatchGAN (the full frame, or a mouth or eye crop). Input: the current
    conditioning frame (10 channels, mask last) and an RGB image, concatenated (13 channels);
    the mask is dropped. Returns, per scale (full resolution first), every stage's features, the
    last being the patch logits (feature matching uses the others).

    Stages are attributes ``scale<i>_layer<j>``, as NED registers them, so the state dict is the
    released ``XX_net_D.pth`` / ``_Dm`` / ``_De``; the full-resolution input goes to the last scale.
    """

    def __init__(self, sizes: DiscriminatorSizes) -> None:
        super().__init__()
        self.scales, self.layers = sizes.scales, sizes.layers
        for i in range(sizes.scales):
            ndf = min(_NDF_MAX, sizes.ndf * 2 ** (sizes.scales - 1 - i))
            for j, stage in enumerate(_patch_layers(CONDITION_CHANNELS + RGB, ndf, sizes.layers)):
                setattr(self, f"scale{i}_layer{j}", stage)
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.apply(_normal_init)

    def forward(self, conditioning: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        x = torch.cat([conditioning[:, :CONDITION_CHANNELS], image], dim=1)
        features = []
        for i in reversed(range(self.scales)):
            stages, h = [], x
            for j in range(self.layers + 2):
                h = getattr(self, f"scale{i}_layer{j}")(h)
                stages.append(h)
            features.append(stages)
            x = self.downsample(x)
        return features

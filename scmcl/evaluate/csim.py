"""The SPFEM papers' "CSIM": an emotion (expression) similarity between real and generated faces,
not the identity CSIM of face-reenactment papers. Both sets of frames go through EfficientFace
(Zhao et al., AAAI 2021) trained on AffectNet-7, whose 1024-d pooled ``conv5`` features describe
expression; CSIM is the mean cosine similarity of every (real, generated) pair of those features.
It is computed as CDRL's ``metrics/csim.py`` (jianmanlincjx/CDRL, NED_CDRL) computes it, so the
numbers compare with the papers' tables: at most 100 frames per side and actor, drawn with seed 1,
the mean of the 100 × 100 cosines per actor, then the mean over actors.

The network is rebuilt here with the official parameter and buffer names (``models/EfficientFace.py``
and ``models/modulator.py`` of zengqunzhao/EfficientFace) so the released
``EfficientFace_Trained_on_AffectNet7.pth.tar`` (``{'state_dict': ...}`` of an ``nn.DataParallel``
wrapper) loads strictly; nothing is downloaded."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torchvision.transforms as TF
from PIL import Image
from torch import nn
from torch.nn import functional as F

from scmcl.evaluate.face_batches import batched_features, check_faces
from scmcl.io.state_dicts import read_strict_state

#: ``efficient_face()``: ShuffleNet-V2-like stages and their widths (conv1, stage2, stage3, stage4, conv5).
STAGES_REPEATS = (4, 8, 4)
STAGES_OUT_CHANNELS = (29, 116, 232, 464, 1024)
#: AffectNet-7: the released file's ``fc`` is 1024 → 7 (CDRL loads it into the default num_classes=7).
NUM_CLASSES = 7
FEATURES = 1024
#: CDRL's ``EfficientFace.get_transforms``: Resize(256) → CenterCrop(224) → ToTensor → Normalize (RAF-DB statistics).
RESIZE, CROP = 256, 224
MEAN = (0.57535914, 0.44928582, 0.40079932)
STD = (0.20735591, 0.18981615, 0.18132027)
#: CDRL's ``--num_samples`` and ``--seed`` defaults.
SAMPLES, SEED = 100, 1
#: ``torch.nn.functional.cosine_similarity``'s eps, applied to each norm.
EPS = 1e-8
#: The stage-2 map (56 × 56 at a 224 input) is cut into four 28 × 28 patches by the local branch, as officially.
_PATCH = 28
WHAT = "EfficientFace trained on AffectNet-7 (EfficientFace_Trained_on_AffectNet7.pth.tar from zengqunzhao/EfficientFace)"


class EfficientFaceWeightsError(ValueError):
    """A file that is not EfficientFace's AffectNet-7 release in the official layout."""


def _depthwise(inp: int, out: int, stride: int) -> nn.Conv2d:
    """The official ``depthwise_conv``: 3 × 3, padding 1, no bias, groups = input channels."""
    return nn.Conv2d(inp, out, 3, stride, 1, bias=False, groups=inp)


def _pointwise(inp: int, out: int) -> nn.Conv2d:
    return nn.Conv2d(inp, out, 1, 1, 0, bias=False)


def _shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """ShuffleNet's channel shuffle."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class _InvertedResidual(nn.Module):
    """The official ``InvertedResidual``: a strided block has both branches (``branch1``, ``branch2``),
    a unit-stride one passes half its channels through and only has ``branch2``."""

    def __init__(self, inp: int, out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = out // 2
        if stride > 1:
            self.branch1 = nn.Sequential(_depthwise(inp, inp, stride), nn.BatchNorm2d(inp), _pointwise(inp, half),
                                         nn.BatchNorm2d(half), nn.ReLU(inplace=True))
        self.branch2 = nn.Sequential(_pointwise(inp if stride > 1 else half, half), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                                     _depthwise(half, half, stride), nn.BatchNorm2d(half),
                                     _pointwise(half, half), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, changed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(changed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return _shuffle(out)


class _LocalFeatureExtractor(nn.Module):
    """The official ``LocalFeatureExtractor``: each quarter of the stage-1 map through its own two
    depthwise convolutions (``conv{k}_1`` strided, ``conv{k}_2``), put back in place. Quarter 1 is
    top left, 2 bottom left, 3 top right, 4 bottom right."""

    _PLACES = {1: (0, 0), 2: (1, 0), 3: (0, 1), 4: (1, 1)}  # quarter -> (row, column)

    def __init__(self, inp: int, out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        for k in self._PLACES:
            setattr(self, f"conv{k}_1", _depthwise(inp, out, 2))
            setattr(self, f"bn{k}_1", nn.BatchNorm2d(out))
            setattr(self, f"conv{k}_2", _depthwise(out, out, 1))
            setattr(self, f"bn{k}_2", nn.BatchNorm2d(out))

    def _quarter(self, k: int, x: torch.Tensor) -> torch.Tensor:
        row, col = self._PLACES[k]
        patch = x[:, :, row * _PATCH:(row + 1) * _PATCH, col * _PATCH:(col + 1) * _PATCH]
        patch = self.relu(getattr(self, f"bn{k}_1")(getattr(self, f"conv{k}_1")(patch)))
        return self.relu(getattr(self, f"bn{k}_2")(getattr(self, f"conv{k}_2")(patch)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = torch.cat([self._quarter(1, x), self._quarter(2, x)], dim=2)
        right = torch.cat([self._quarter(3, x), self._quarter(4, x)], dim=2)
        return torch.cat([left, right], dim=3)


class _ChannelGate(nn.Module):
    """The official ``Channel`` attention: global average, Linear → BatchNorm1d → ReLU → Linear."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        self.gate_c = nn.Sequential()
        self.gate_c.add_module("flatten", nn.Flatten())
        self.gate_c.add_module("gate_c_fc_0", nn.Linear(channels, hidden))
        self.gate_c.add_module("gate_c_bn_1", nn.BatchNorm1d(hidden))
        self.gate_c.add_module("gate_c_relu_1", nn.ReLU())
        self.gate_c.add_module("gate_c_fc_final", nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, x.size(2), stride=x.size(2))  # as officially: a square window of the map's height
        return self.gate_c(pooled).unsqueeze(2).unsqueeze(3).expand_as(x)


class _SpatialGate(nn.Module):
    """The official ``Spatial`` attention: 1 × 1 reduction, two dilated 3 × 3 convolutions, 1 × 1 to one map."""

    def __init__(self, channels: int, reduction: int = 16, dilated: int = 2, dilation: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        self.gate_s = nn.Sequential()
        self.gate_s.add_module("gate_s_conv_reduce0", nn.Conv2d(channels, hidden, 1))
        self.gate_s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(hidden))
        self.gate_s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(dilated):
            self.gate_s.add_module(f"gate_s_conv_di_{i}", nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation))
            self.gate_s.add_module(f"gate_s_bn_di_{i}", nn.BatchNorm2d(hidden))
            self.gate_s.add_module(f"gate_s_relu_di_{i}", nn.ReLU())
        self.gate_s.add_module("gate_s_conv_final", nn.Conv2d(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_s(x).expand_as(x)


class _Modulator(nn.Module):
    """The official ``Modulator``: x · sigmoid(channel gate · spatial gate)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channel_att = _ChannelGate(channels)
        self.spatial_att = _SpatialGate(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.channel_att(x) * self.spatial_att(x)) * x


class EfficientFace(nn.Module):
    """The official ``efficient_face()`` with its parameter and buffer names; ``forward`` gives the
    AffectNet-7 logits of (B, 3, 224, 224) normalised faces, ``features`` the (B, 1024) pooled
    ``conv5`` output before ``fc``, which is what CSIM compares."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        width = STAGES_OUT_CHANNELS
        self.conv1 = nn.Sequential(nn.Conv2d(3, width[0], 3, 2, 1, bias=False), nn.BatchNorm2d(width[0]), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inp = width[0]
        for stage, repeats, out in zip((2, 3, 4), STAGES_REPEATS, width[1:4]):
            blocks = [_InvertedResidual(inp, out, 2)] + [_InvertedResidual(out, out, 1) for _ in range(repeats - 1)]
            setattr(self, f"stage{stage}", nn.Sequential(*blocks))
            inp = out
        self.local = _LocalFeatureExtractor(width[0], width[1])
        self.modulator = _Modulator(width[1])
        self.conv5 = nn.Sequential(_pointwise(inp, width[4]), nn.BatchNorm2d(width[4]), nn.ReLU(inplace=True))
        self.fc = nn.Linear(width[4], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.modulator(self.stage2(x)) + self.local(x)
        x = self.conv5(self.stage4(self.stage3(x)))
        return x.mean([2, 3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def load_efficientface(path: str | Path, device: str | torch.device) -> EfficientFace:
    """The released AffectNet-7 EfficientFace, loaded strictly (every key and shape of the official
    layout, under ``state_dict``, ``module.`` prefix dropped), frozen, in eval mode, on ``device``.
    A missing file is FileNotFoundError, any other misfit one EfficientFaceWeightsError naming it."""
    model = EfficientFace()
    state = read_strict_state(Path(path), model.state_dict(), WHAT, EfficientFaceWeightsError, under="state_dict")
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)
    return model.eval().to(torch.device(device))


_TRANSFORM = TF.Compose([TF.Resize(RESIZE), TF.CenterCrop(CROP), TF.ToTensor(), TF.Normalize(MEAN, STD)])


def efficientface_input(faces: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB faces as CDRL feeds its image files to EfficientFace: PIL images,
    torchvision's Resize(256) (shorter side to 256, bilinear with antialiasing; a no-op at 256),
    CenterCrop(224), ToTensor, Normalize(MEAN, STD); (T, 3, 224, 224) float32 on the CPU."""
    check_faces(faces)
    if not len(faces):
        return torch.empty(0, 3, CROP, CROP)
    return torch.stack([_TRANSFORM(Image.fromarray(np.ascontiguousarray(face))) for face in faces])


def emotion_features(model: EfficientFace, faces: np.ndarray, device: str | torch.device, batch_size: int = 32) -> np.ndarray:
    """EfficientFace's (T, 1024) expression features (pooled ``conv5``) of (T, H, W, 3) uint8 RGB
    aligned faces, in eval mode as CDRL takes them, ``batch_size`` frames at a time; float64."""
    return batched_features(model, model.features, efficientface_input, faces, FEATURES, device, batch_size)


def _sampled(features: np.ndarray, samples: int, rng: random.Random) -> np.ndarray:
    """CDRL's draw of one side: with more than ``samples`` frames, ``random.sample`` of ``samples``
    of them (without replacement); with ``samples`` or fewer, all of them and no draw at all, so
    the generator's state is left as it was."""
    if len(features) > samples:
        return features[rng.sample(range(len(features)), samples)]
    return features


def _unit(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, EPS)


def _check_features(name: str, features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or not len(features):
        raise ValueError(f"{name} features should be a non-empty (N, D) array, not {features.shape}")
    return features


def _actor_csim(real: np.ndarray, generated: np.ndarray, samples: int, rng: random.Random) -> float:
    real, generated = _check_features("real", real), _check_features("generated", generated)
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"real features are {real.shape[1]}-d but generated ones {generated.shape[1]}-d")
    if samples < 1:
        raise ValueError(f"samples must be positive, not {samples}")
    real = _sampled(real, samples, rng)  # the script draws the real side first, then the generated side
    generated = _sampled(generated, samples, rng)
    return float((_unit(real) @ _unit(generated).T).mean())


def actor_csim(real: np.ndarray, generated: np.ndarray, samples: int = SAMPLES, seed: int = SEED) -> float:
    """One actor's CSIM: the mean cosine similarity of every (real, generated) pair of the sampled
    (N, D) real and (M, D) generated features. A side with more than ``samples`` rows is cut to
    ``random.Random(seed).sample(range(rows), samples)`` of them (no replacement; the real side
    draws first, the generated side next from the same generator), a side with ``samples`` or
    fewer keeps them all and draws nothing. Rows must be in the order of CDRL's file list (see
    ``emotion_csim``). The cosine is x·y / (max(‖x‖, 1e-8) · max(‖y‖, 1e-8)), as torch's."""
    return _actor_csim(real, generated, samples, random.Random(seed))


def emotion_csim(per_actor: Mapping[str, tuple[np.ndarray, np.ndarray]], samples: int = SAMPLES, seed: int = SEED) -> float:
    """The mean over actors of their CSIM, sampled as CDRL's ``metrics/csim.py`` samples.

    The script seeds Python's ``random`` once (``random.seed(1)``) and then, for each actor in
    its ``--actors`` order, lists the real folder's images (``sorted`` ``pathlib.Path`` objects,
    i.e. by path components, of every ``**/*.{bmp,jpg,jpeg,pgm,png,ppm,tif,tiff,webp}`` file,
    kept when the actor's name is in the path), takes ``random.sample(files, 100)`` of them when
    there are more than 100 and all of them otherwise (no draw, no replacement), then does the
    same for the generated folder. One generator is thus shared by all actors and both sides;
    here too: one ``random.Random(seed)`` drawn from in ``per_actor``'s order, real then
    generated. ``random.sample`` picks positions, so sampling row indices of features whose rows
    follow the script's file order picks the same frames. An actor with no frame is an error
    (the script fails on it too)."""
    if not per_actor:
        raise ValueError("emotion CSIM needs at least one actor")
    rng = random.Random(seed)
    return float(np.mean([_actor_csim(real, generated, samples, rng) for real, generated in per_actor.values()]))

"""DECA's networks, key-compatible with the official ``deca_model.tar``.

The official checkpoint is a ``torch.save``d dict whose entries ``E_flame``, ``E_detail`` and
``D_detail`` are the state dicts of DECA's coarse encoder, detail encoder and detail decoder.
The modules below reproduce those networks' parameter names, shapes and forward passes (our own
code; structure checked against yfeng95/DECA ``decalib/models/{resnet,encoders,decoders}.py``
and ``decalib/deca.py``), so the user-supplied file loads with ``strict=True`` and gives the
codes NED and SCMCL were trained on. FLAME decoding and rendering live elsewhere in ``face3d``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from scmcl import backbones

#: DECA's ``param_list`` order and ``n_*`` sizes (``decalib/utils/config.py``): E_flame's 236 outputs.
PARAM_SIZES: dict[str, int] = {"shape": 100, "tex": 50, "exp": 50, "pose": 6, "cam": 3, "light": 27}
N_PARAMS = sum(PARAM_SIZES.values())
N_DETAIL = 128
N_JAW = 3
#: D_detail's input: jaw pose (3) + expression (50) + detail code (128).
DETAIL_LATENT = N_JAW + PARAM_SIZES["exp"] + N_DETAIL
IMAGE_SIZE = 224
UV_SIZE = 256
#: ``cfg.model.max_z``: the displacement map is ``tanh(...) * MAX_Z``.
MAX_Z = 0.01
NETWORK_KEYS = ("E_flame", "E_detail", "D_detail")
FEATURE_SIZE = 2048

DECA_MODEL_URL = "https://drive.google.com/file/d/1rp8kdyLPvErw2dTmqtjISRVvQLj6Yzje/view"
FLAME_URL = "https://flame.is.tue.mpg.de"
_SHOWN_KEYS = 5


class DecaWeightsError(ValueError):
    """A DECA checkpoint exists but cannot be read or does not fit DECA's networks."""


class ResnetEncoder(nn.Module):
    """ResNet-50 features (2048) → Linear 1024 → ReLU → Linear ``out_size``.

    DECA's own ResNet has torchvision's parameter names and Bottleneck layout (stride on the
    3x3 conv) minus the ``fc`` layer, so torchvision's network with ``fc`` removed carries the
    same ``encoder.*`` keys; its adaptive pooling equals DECA's ``AvgPool2d(7)`` at 224 px.
    """

    def __init__(self, out_size: int) -> None:
        super().__init__()
        self.encoder = backbones.models().resnet50(weights=None)
        self.encoder.fc = nn.Identity()
        self.layers = nn.Sequential(nn.Linear(FEATURE_SIZE, 1024), nn.ReLU(), nn.Linear(1024, out_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encoder(images))


def _detail_blocks(out_channels: int) -> list[nn.Module]:
    """DECA's ``Generator.conv_blocks`` in order, so ``conv_blocks.<i>`` keys line up.

    The inner BatchNorms use eps=0.8: the original passes 0.8 positionally (meant as momentum),
    and the released weights were trained with it, so it must stay.
    """
    widths = (128, 128, 64, 64, 32, 16)
    blocks: list[nn.Module] = [nn.BatchNorm2d(widths[0])]
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        blocks += [
            nn.Upsample(scale_factor=2, mode="bilinear"),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out, eps=0.8),
            nn.LeakyReLU(0.2),
        ]
    return blocks + [nn.Conv2d(widths[-1], out_channels, 3, padding=1), nn.Tanh()]


class DetailDecoder(nn.Module):
    """DECA's ``Generator``: latent → 128x8x8 → five bilinear x2 upsamplings → 1x256x256."""

    init_size = 8

    def __init__(self, latent_dim: int = DETAIL_LATENT, out_channels: int = 1, out_scale: float = MAX_Z) -> None:
        super().__init__()
        self.out_scale = out_scale
        self.l1 = nn.Sequential(nn.Linear(latent_dim, 128 * self.init_size**2))
        self.conv_blocks = nn.Sequential(*_detail_blocks(out_channels))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        grid = self.l1(latent).view(latent.shape[0], 128, self.init_size, self.init_size)
        return self.conv_blocks(grid) * self.out_scale


class DecaEncoder(nn.Module):
    """The three DECA networks under their checkpoint names, with DECA's inference API.

    Built in eval mode, as DECA does: these are frozen, pretrained networks, and BatchNorm must
    use the stored statistics, not the batch's.
    """

    def __init__(self) -> None:
        super().__init__()
        self.E_flame = ResnetEncoder(N_PARAMS)
        self.E_detail = ResnetEncoder(N_DETAIL)
        self.D_detail = DetailDecoder()
        self.eval()

    def networks(self) -> dict[str, nn.Module]:
        """Checkpoint key → network, in the official order."""
        return {name: getattr(self, name) for name in NETWORK_KEYS}

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """RGB crops (B,3,224,224) in [0,1], no normalisation (as DECA's TestData feeds them).

        Returns shape (B,100), tex (B,50), exp (B,50), pose (B,6) = [global rot, jaw rot]
        axis-angle, cam (B,3) = [scale, tx, ty], light (B,9,3) and detail (B,128). Like
        DECA with ``jaw_type='aa'`` nothing is applied beyond the split and the light reshape.
        """
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"DECA expects images of shape (B,3,{IMAGE_SIZE},{IMAGE_SIZE}), got {tuple(images.shape)}")
        images = images.to(self._device(), torch.float32)
        codes = dict(zip(PARAM_SIZES, torch.split(self.E_flame(images), list(PARAM_SIZES.values()), dim=1)))
        codes["light"] = codes["light"].reshape(-1, 9, 3)
        codes["detail"] = self.E_detail(images)
        return codes

    @torch.inference_mode()
    def decode_detail(self, detail: torch.Tensor, jaw_pose: torch.Tensor, exp: torch.Tensor) -> torch.Tensor:
        """UV displacement map (B,1,256,256) from ``D_detail([jaw_pose, exp, detail])``.

        DECA's ``fixed_displacement_256.npy`` offset is not added here: it belongs to the
        renderer that turns displacements into normals.
        """
        parts = {"jaw_pose": (jaw_pose, N_JAW), "exp": (exp, PARAM_SIZES["exp"]), "detail": (detail, N_DETAIL)}
        for name, (tensor, width) in parts.items():
            if tensor.ndim != 2 or tensor.shape != (detail.shape[0], width):
                raise ValueError(f"{name} must be (B,{width}) with B={detail.shape[0]}, got {tuple(tensor.shape)}")
        latent = torch.cat([jaw_pose, exp, detail], dim=1).to(self._device(), torch.float32)
        return self.D_detail(latent)


_SOURCE = (f"DECA's released checkpoint `deca_model.tar` (DECA README, Google Drive: {DECA_MODEL_URL}); it "
           f"cannot be downloaded for you")
_FLAME_TOO = (f"DECA also needs the FLAME model `generic_model.pkl` (FLAME 2020, registration required at "
              f"{FLAME_URL}).")


def _missing_file_message(path: Path) -> str:
    return (f"DECA weights not found: {path}. The file is {_SOURCE}: fetch it yourself and put it at that path. "
            f"{_FLAME_TOO}")


def _unset_message() -> str:
    return (f"no DECA weights given: reconstruction deca needs `preprocess.deca_model` (scmcl preprocess "
            f"--deca-model) set to the path of {_SOURCE}: fetch it yourself and set that path. {_FLAME_TOO}")


def _read_checkpoint(path: Path, device: torch.device | str, trust_pickle: bool) -> Mapping:
    """Load the dict; weights-only unless the caller vouches for the file's origin."""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=not trust_pickle)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        hint = "" if trust_pickle else " (if this is the official file, load it with trust_pickle=True)"
        raise DecaWeightsError(f"{path} could not be read as a weights-only torch checkpoint: {err}{hint}") from err
    if not isinstance(checkpoint, Mapping):
        raise DecaWeightsError(f"{path} holds a {type(checkpoint).__name__}, not DECA's dict of state dicts")
    absent = [name for name in NETWORK_KEYS if name not in checkpoint]
    if absent:
        raise DecaWeightsError(f"{path} lacks the DECA network(s) {absent}; it has {sorted(map(str, checkpoint))[:10]}")
    return checkpoint


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_KEYS])
    return f"{shown} (+{len(items) - _SHOWN_KEYS} more)" if len(items) > _SHOWN_KEYS else shown


def _mismatches(net: nn.Module, state: Mapping, name: str) -> list[str]:
    """Missing, unexpected and misshaped keys, each prefixed with the network's name.

    ``num_batches_tracked`` may be absent (files from PyTorch < 0.4.1); load_state_dict fills it in.
    """
    expected = net.state_dict()
    missing = [f"{name}.{k}" for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [f"{name}.{k}" for k in state if k not in expected]
    misshaped = [
        f"{name}.{k} {tuple(getattr(state[k], 'shape', ()))} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if keys:
            problems.append(f"{label} {len(keys)}: {_first(keys)}")
    return problems


def load_deca(path: str | os.PathLike, device: torch.device | str = "cpu", trust_pickle: bool = False) -> DecaEncoder:
    """The official ``deca_model.tar`` (or a file of the same layout) as an eval-mode DecaEncoder.

    ``trust_pickle`` lifts torch's weights-only restriction, for a file whose origin is known.
    """
    if not os.fspath(path).strip():
        # Path("") is "." and would be reported as a missing file named ".".
        raise ValueError(_unset_message())
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_file_message(path))
    checkpoint = _read_checkpoint(path, device, trust_pickle)
    with torch.device("meta"):  # shapes only: no time or memory spent on a random init
        model = DecaEncoder()
    for name, net in model.networks().items():
        state = checkpoint[name]
        problems = _mismatches(net, state, name) if isinstance(state, Mapping) else [f"{name} is not a state dict"]
        if problems:
            raise DecaWeightsError(f"{path} does not fit DECA's networks: " + "; ".join(problems))
        try:
            net.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as err:
            raise DecaWeightsError(f"{path}: loading {name} failed: {err}") from err
    return model.to(device, torch.float32).eval()

"""FAD, the Fréchet ArcFace Distance between real and generated face frames, computed the way the
SPFEM papers' metric code does it (``metrics/fid.py --model resnet_face18`` of jianmanlincjx/CDRL,
branch NED_CDRL), so our numbers can be read against theirs.

The features are the 512-d output of ``bn5`` (eval mode, not normalised) of the ArcFace
ResNet-18 of ronghuaiyang/arcface-pytorch (``resnet_face18(use_se=False)``), whose released
``resnet18_110.pth`` the user supplies, since nothing is downloaded; it is the state dict of an
``nn.DataParallel`` wrapper and loads strictly into ``ResNetFace``, whose module names are the
official ones. A frame is fed as that script feeds an image file: PIL's ``convert('L')``, a
bilinear resize of the short side to 164, a centred 128×128 crop, then (x/255 − 0.5)/0.5.

FAD = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½), with pytorch-fid's guards on the square
root (an ε·I on both covariances when it is not finite, a negligible imaginary part dropped).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from scipy import linalg
from torch import nn

from scmcl.evaluate.face_batches import batched_features, check_faces
from scmcl.io.state_dicts import read_strict_state

WHAT = "the ArcFace ResNet-18 of ronghuaiyang/arcface-pytorch (resnet18_110.pth)"
#: The reference's transforms: Resize(164) (PIL bilinear), CenterCrop(128), Normalize(0.5, 0.5).
RESIZE, CROP, MEAN, STD = 164, 128, 0.5, 0.5
FEATURES = 512
#: pytorch-fid's offset on the covariances' diagonals and its tolerance on an imaginary diagonal.
EPS, IMAGINARY_ATOL = 1e-6, 1e-3


class ArcFaceWeightsError(ValueError):
    """A file that is not the released ``resnet18_110.pth`` of ronghuaiyang/arcface-pytorch."""


def _conv3x3(inputs: int, outputs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, kernel_size=3, stride=stride, padding=1, bias=False)


class _IRBlock(nn.Module):
    """The official IRBlock without SE: BN, conv, BN, PReLU, strided conv, BN, plus the (down-
    sampled) input, then the same PReLU (one shared slope)."""

    def __init__(self, inputs: int, outputs: int, stride: int = 1) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(inputs)
        self.conv1 = _conv3x3(inputs, inputs)
        self.bn1 = nn.BatchNorm2d(inputs)
        self.prelu = nn.PReLU()
        self.conv2 = _conv3x3(inputs, outputs, stride)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.downsample = None
        if stride != 1 or inputs != outputs:
            self.downsample = nn.Sequential(nn.Conv2d(inputs, outputs, kernel_size=1, stride=stride, bias=False),
                                            nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x))))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + residual)


class ResNetFace(nn.Module):
    """``resnet_face18(use_se=False)`` of ronghuaiyang/arcface-pytorch, with its parameter and
    buffer names: (B, 1, 128, 128) grey faces in [−1, 1] → (B, 512) ``bn5`` output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        widths, inputs = (64, 128, 256, 512), 64
        for index, width in enumerate(widths, start=1):
            stride = 1 if index == 1 else 2
            self.add_module(f"layer{index}", nn.Sequential(_IRBlock(inputs, width, stride), _IRBlock(width, width)))
            inputs = width
        self.bn4 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        self.fc5 = nn.Linear(512 * 8 * 8, FEATURES)
        self.bn5 = nn.BatchNorm1d(FEATURES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn4(x))
        return self.bn5(self.fc5(x.flatten(1)))


def load_arcface(path: str | Path, device: str | torch.device) -> ResNetFace:
    """The released weights, strictly (``module.`` prefix dropped; BatchNorm's
    ``num_batches_tracked`` may be absent, as torch lets old files lack it), frozen, in eval mode
    on ``device``; a wrong file is one ``ArcFaceWeightsError`` naming it."""
    model = ResNetFace()
    state = read_strict_state(Path(path), model.state_dict(), WHAT, ArcFaceWeightsError, may_lack=("num_batches_tracked",))
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)
    return model.eval().to(torch.device(device))


def _grey_crop(face: np.ndarray) -> np.ndarray:
    """One RGB frame → the reference's 128×128 uint8 grey crop (PIL luma, PIL bilinear resize)."""
    image = Image.fromarray(np.ascontiguousarray(face)).convert("L")
    image = TF.resize(image, [RESIZE], interpolation=TF.InterpolationMode.BILINEAR)
    return np.asarray(TF.center_crop(image, [CROP]), dtype=np.uint8)


def arcface_input(faces: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB faces → the network's (T, 1, 128, 128) float32 input on the CPU,
    as the reference's transforms make it (ToTensor then Normalize, in float32)."""
    faces = check_faces(faces)
    grey = np.stack([_grey_crop(face) for face in faces]) if len(faces) else np.zeros((0, CROP, CROP), np.uint8)
    return torch.from_numpy(grey).unsqueeze(1).float().div(255).sub(MEAN).div(STD)


def arcface_features(model: ResNetFace, faces: np.ndarray, device: str | torch.device, batch_size: int = 64) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB aligned faces → (T, 512) float64 ArcFace features (eval mode)."""
    return batched_features(model, model, arcface_input, faces, FEATURES, device, batch_size)


def _check_features(features: np.ndarray, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"the {name} features must be an (N, D) array with N >= 2 for a covariance, not {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"the {name} features are not all finite")
    return features


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy's square root; its singular/ill-conditioned warning is dropped, since the caller
    checks the result as pytorch-fid does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)


def _product_root(sigma_r: np.ndarray, sigma_g: np.ndarray, eps: float) -> np.ndarray:
    """(Σ_r Σ_g)^½, real; when it is not finite (a singular product), that of (Σ_r + εI)(Σ_g + εI)."""
    root = _sqrtm(sigma_r @ sigma_g)
    if not np.isfinite(root).all():
        offset = eps * np.eye(len(sigma_r))
        root = _sqrtm((sigma_r + offset) @ (sigma_g + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=IMAGINARY_ATOL):
            raise ValueError(f"the Fréchet distance's matrix square root has an imaginary component of "
                             f"{np.abs(root.imag).max():.3g}")
        root = root.real
    if not np.isfinite(root).all():
        raise ValueError("the Fréchet distance's matrix square root is not finite, even with an offset on the covariances")
    return root


def frechet_distance(real: np.ndarray, generated: np.ndarray, eps: float = EPS) -> float:
    """‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½) of (N, D) and (M, D) features, with the
    sample means and (ddof = 1) covariances, as pytorch-fid computes it."""
    real, generated = _check_features(real, "real"), _check_features(generated, "generated")
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"the real and generated features differ in width: {real.shape[1]} and {generated.shape[1]}")
    diff = real.mean(axis=0) - generated.mean(axis=0)
    sigma_r = np.atleast_2d(np.cov(real, rowvar=False))
    sigma_g = np.atleast_2d(np.cov(generated, rowvar=False))
    root = _product_root(sigma_r, sigma_g, eps)
    return float(diff @ diff + np.trace(sigma_r) + np.trace(sigma_g) - 2 * np.trace(root))

"""NED's face masks (method.md §2.4): FSGAN's 3-class U-Net, soft erosion, largest component.

The network must load FSGAN's ``lfw_figaro_unet_256_2_0_segmentation_v1.pth`` (``{'state_dict': …}``,
method.md §7.1) unchanged, so :class:`UNet` keeps FSGAN's parameter names exactly:

- encoder stages ``conv1``..``conv4`` and ``center``, each ``conv1``/``conv2`` = ``Sequential(Conv3x3,
  BatchNorm, ReLU)`` → ``conv1.conv1.0.weight``, ``conv1.conv1.1.running_mean``, …;
- decoder stages ``up_concat4``..``up_concat1``: ``conv1d`` (1x1 after bilinear upsampling; FSGAN
  declares it ``Conv1d(kernel_size=(1,1))``, whose weight is the same (out, in, 1, 1) as a 1x1
  Conv2d) and ``conv``, a pair of ``Sequential(Conv3x3, ReLU)`` *without* BatchNorm →
  ``up_concat4.conv.conv1.0.weight``; the skip comes first in the concatenation;
- ``final``: 1x1 conv to the classes background / face / hair.

Differences from NED, on purpose:

- the network runs in eval mode (BatchNorm running statistics), as FSGAN's own ``load_model``
  leaves it; NED never calls ``.eval()``, so its BatchNorm normalises each single image with that
  image's statistics;
- frames are batched; the soft mask is normalised per frame (NED divides by the batch maximum,
  which for its one-frame batches is the same thing);
- crops of any size are resized to the network's 256 and the mask back (NED's crops are 256);
- a frame without any face pixel reuses the previous frame's mask, as NED does, but a leading run
  of such frames stays empty (NED would store ``None`` and fail later).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.measure import label
from torch import nn

WEIGHTS_NAME = "lfw_figaro_unet_256_2_0_segmentation_v1.pth"
WEIGHTS_SOURCE = (
    f"FSGAN's segmenter '{WEIGHTS_NAME}': request it through FSGAN's model form, or take "
    "segmentation/ from the SCMCL README's checkpoint bundle (Google Drive 'scmcl_ckpts')"
)
FILTERS = (64, 128, 256, 512, 1024)
CLASSES = ("background", "face", "hair")
FACE_CLASS = CLASSES.index("face")
NET_SIZE = 256
EROSION_KERNEL = 21
EROSION_THRESHOLD = 0.6
CHUNK = 16
#: How many offending keys a structure error names.
SHOWN_KEYS = 5


def _conv_stage(in_ch: int, out_ch: int, batchnorm: bool) -> nn.Sequential:
    """3x3 conv (+ BatchNorm) + ReLU; the Sequential indices are part of the checkpoint's key names."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, 1, 1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ConvPair(nn.Module):
    """Two 3x3 conv stages named ``conv1``/``conv2`` as in FSGAN's ``UnetConv2``."""

    def __init__(self, in_ch: int, out_ch: int, batchnorm: bool) -> None:
        super().__init__()
        self.conv1 = _conv_stage(in_ch, out_ch, batchnorm)
        self.conv2 = _conv_stage(out_ch, out_ch, batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UpStage(nn.Module):
    """Bilinear x2 (corners aligned, as ``UpsamplingBilinear2d``), 1x1 conv, concat after the skip, conv pair."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvPair(in_ch, out_ch, batchnorm=False)
        self.conv1d = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1d(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """FSGAN's simple U-Net; input (N,3,H,W) RGB in [0,1] with H, W multiples of 16 → class logits."""

    def __init__(self, n_classes: int = len(CLASSES), feature_scale: int = 1) -> None:
        super().__init__()
        f = [n // feature_scale for n in FILTERS]
        self.conv1 = ConvPair(3, f[0], batchnorm=True)
        self.conv2 = ConvPair(f[0], f[1], batchnorm=True)
        self.conv3 = ConvPair(f[1], f[2], batchnorm=True)
        self.conv4 = ConvPair(f[2], f[3], batchnorm=True)
        self.center = ConvPair(f[3], f[4], batchnorm=True)
        self.up_concat4 = UpStage(f[4], f[3])
        self.up_concat3 = UpStage(f[3], f[2])
        self.up_concat2 = UpStage(f[2], f[1])
        self.up_concat1 = UpStage(f[1], f[0])
        self.final = nn.Conv2d(f[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encode in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = encode(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.center(x)
        for decode, skip in zip((self.up_concat4, self.up_concat3, self.up_concat2, self.up_concat1), reversed(skips)):
            x = decode(skip, x)
        return self.final(x)


def erosion_kernel(kernel_size: int) -> torch.Tensor:
    """(1,1,k,k) radial "max − distance" weights summing to 1, so a full neighbourhood responds 1."""
    r = kernel_size // 2
    offsets = torch.arange(kernel_size, dtype=torch.float32) - r
    dist = torch.sqrt(offsets[:, None] ** 2 + offsets[None, :] ** 2)
    kernel = dist.max() - dist
    return (kernel / kernel.sum())[None, None]


class SoftErosion(nn.Module):
    """Erodes binary masks by thresholding a radially weighted local average (FSGAN/NED ``SoftErosion``).

    Returns the soft mask (1 where the response reaches the threshold, elsewhere the response
    rescaled by its per-frame maximum there) and the hard mask (response ≥ threshold).  Zero
    padding makes the image border count as background.
    """

    def __init__(self, kernel_size: int = EROSION_KERNEL, threshold: float = EROSION_THRESHOLD) -> None:
        super().__init__()
        self.threshold = threshold
        self.register_buffer("weight", erosion_kernel(kernel_size))

    def forward(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mask`` (N,1,H,W) bool or float → (soft float (N,1,H,W), hard bool (N,1,H,W))."""
        response = F.conv2d(mask.float(), self.weight, padding=self.weight.shape[-1] // 2)
        hard = response >= self.threshold
        below = response.masked_fill(hard, 0.0)
        peak = below.amax(dim=(1, 2, 3), keepdim=True)
        soft = torch.where(hard, torch.ones_like(response), below / torch.where(peak > 0, peak, torch.ones_like(peak)))
        return soft, hard


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 8-connected component of a 2-D bool mask (NED's ``getLargestCC``; ties → lowest label)."""
    labels, count = label(mask, return_num=True)
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def fill_empty(masks: np.ndarray) -> np.ndarray:
    """Give each frame without face pixels the previous frame's mask (NED's fallback), in place."""
    for t in range(1, len(masks)):
        if not masks[t].any():
            masks[t] = masks[t - 1]
    return masks


def structure_problems(state: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Human-readable mismatches between ``state`` and ``model``'s keys/shapes (first few of each kind).

    A missing ``num_batches_tracked`` is fine: torch fills it for checkpoints older than that buffer.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for kind, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped)):
        if keys:
            more = f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
            problems.append(f"{kind}: {', '.join(keys[:SHOWN_KEYS])}{more}")
    return problems


def load_unet(path: str | Path, device: torch.device) -> UNet:
    """FSGAN's segmenter from ``{'state_dict': …}`` at ``path``, with errors that say what to fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmenter weights not found: {path}; this should be {WEIGHTS_SOURCE}")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds objects that weights-only loading refuses; re-save it as "
                         f"{{'state_dict': ...}} with tensors only ({err})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a segmenter checkpoint: expected a dict with 'state_dict' ({WEIGHTS_SOURCE})")
    model = UNet(n_classes=len(CLASSES), feature_scale=1)
    problems = structure_problems(checkpoint["state_dict"], model)
    if problems:
        raise ValueError(f"{path} does not hold FSGAN's U-Net ({WEIGHTS_NAME}): " + "; ".join(problems))
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model.to(device).eval()


class SegmentationMasker:
    """Per-frame face masks for face crops, as NED's ``segment_face.py`` writes to ``masks/``."""

    def __init__(self, weights_path: str | Path, device: str | torch.device = "cpu", chunk: int = CHUNK) -> None:
        self.device = torch.device(device)
        self.net = load_unet(weights_path, self.device)
        self.erosion = SoftErosion().to(self.device)
        self.chunk = chunk

    @torch.inference_mode()
    def _eroded(self, crops: np.ndarray) -> np.ndarray:
        """(N,H,W,3) uint8 → (N,H,W) bool: face class, soft-eroded at the network's 256 px scale."""
        height, width = crops.shape[1:3]
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if (height, width) != (NET_SIZE, NET_SIZE):
            x = F.interpolate(x, size=(NET_SIZE, NET_SIZE), mode="bilinear", align_corners=False, antialias=True)
        face = self.net(x).argmax(dim=1, keepdim=True) == FACE_CLASS
        _, hard = self.erosion(face)
        if (height, width) != (NET_SIZE, NET_SIZE):
            hard = F.interpolate(hard.float(), size=(height, width), mode="bilinear", align_corners=False) >= 0.5
        return hard[:, 0].cpu().numpy()

    def masks(self, crops: np.ndarray) -> np.ndarray:
        """(T,H,W,3) uint8 RGB crops → (T,H,W) bool face masks (largest component; empty frames filled)."""
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"expected (T,H,W,3) uint8 crops, got {crops.shape} {crops.dtype}")
        out = np.zeros(crops.shape[:3], dtype=bool)
        for start in range(0, len(crops), self.chunk):
            for t, mask in enumerate(self._eroded(crops[start : start + self.chunk]), start=start):
                out[t] = largest_component(mask)
        return fill_empty(out)

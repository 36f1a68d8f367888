"""Image operations of the renderer on tensors, through kornia so they run on the configured
device: NED's input augmentation and the face-region PSNR and SSIM the renderer is judged by."""

from __future__ import annotations

import kornia
import torch

from scmcl.renderer.networks import CONDITION_CHANNELS, FRAME_CHANNELS

#: NED's ``transforms.RandomAffine(degrees=0, translate=(0.01, 0.01), scale=(0.99, 1.01))``
#: (torchvision's nearest resampling, zero fill), drawn anew for every image.
_JITTER = kornia.augmentation.RandomAffine(degrees=0.0, translate=(0.01, 0.01), scale=(0.99, 1.01), resample="nearest",
                                           p=1.0)
#: SSIM's Gaussian window (the usual 11 px).
SSIM_WINDOW = 11


def augment_conditioning(conditioning: torch.Tensor) -> torch.Tensor:
    """NED's training augmentation of (B, frames·10, H, W) conditioning: each NMFC, eye and shape
    image of each frame shifted by up to 1% and scaled by 0.99–1.01 on its own (torchvision
    draws one affine per image); the masks are left as they are. Uses torch's global RNG."""
    batch, channels, height, width = conditioning.shape
    frames = conditioning.reshape(batch, channels // FRAME_CHANNELS, FRAME_CHANNELS, height, width)
    images = frames[:, :, :CONDITION_CHANNELS].reshape(-1, 3, height, width)
    jittered = _JITTER(images).reshape(batch, -1, CONDITION_CHANNELS, height, width)
    return torch.cat([jittered, frames[:, :, CONDITION_CHANNELS:]], dim=2).reshape(batch, channels, height, width)


def _face_boxes(masks: torch.Tensor) -> list[tuple[slice, slice]]:
    boxes = []
    for mask in masks:
        rows, cols = torch.nonzero(mask > 0.5, as_tuple=True)
        if not len(rows):
            raise ValueError("a frame has an empty face mask: the face region is undefined")
        boxes.append((slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)))
    return boxes


def face_psnr_ssim(fake: torch.Tensor, real: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame (B,) PSNR (dB) and mean SSIM of (B, 3, H, W) images in [−1, 1] on the face
    region: the bounding box of each frame's mask (B, H, W), with the background outside the
    mask set to black on both sides so only the face is compared."""
    inside = (masks > 0.5)[:, None]
    fake01, real01 = ((fake + 1) / 2).clamp(0, 1) * inside, ((real + 1) / 2).clamp(0, 1) * inside
    psnr, ssim = [], []
    for i, (rows, cols) in enumerate(_face_boxes(masks)):
        a, b = fake01[i:i + 1, :, rows, cols], real01[i:i + 1, :, rows, cols]
        psnr.append(kornia.metrics.psnr(a, b, max_val=1.0))
        window = min(SSIM_WINDOW, a.shape[-1], a.shape[-2])
        window -= 1 - window % 2  # odd, and no larger than the box
        ssim.append(kornia.metrics.ssim(a, b, window_size=window, max_val=1.0).mean())
    return torch.stack(psnr), torch.stack(ssim)

"""Generated aligned faces back into the source's full frames (NED's ``unalign`` and ``blend``),
on tensors through kornia so it runs on the configured device: one warp from the aligned crop
straight to the frame (NED warped aligned → crop, then resized the crop into the frame), the mask
eroded softly in the aligned crop, then a Laplacian-pyramid blend (NED's default), a copy-paste,
or OpenCV's Poisson cloning."""

from __future__ import annotations

import cv2
import kornia
import numpy as np
import torch

METHODS = ("pyramid", "copy_paste", "poisson")
#: NED's soft erosion: a kernel of 33 px per 256 px of crop, and the threshold of the blurred mask.
ERODE_PER_256 = 33
ERODE_THRESHOLD = 0.8
PYRAMID_LEVELS = 4


def _homogeneous(matrices: np.ndarray) -> np.ndarray:
    out = np.tile(np.eye(3), (len(matrices), 1, 1))
    out[:, :2] = matrices
    return out


def aligned_to_frame(crop_matrix: np.ndarray, align_matrix: np.ndarray) -> np.ndarray:
    """(T, 2, 3) aligned-crop → frame pixels, from frame → crop and crop → aligned matrices."""
    return np.linalg.inv(_homogeneous(align_matrix) @ _homogeneous(crop_matrix))[:, :2]


def inside_crop(align_matrix: np.ndarray, side: int, device: torch.device) -> torch.Tensor:
    """(T, 1, S, S) 1 where an aligned pixel comes from inside the tracked crop: the aligned
    training faces are black beyond it, and so are the renderer's faces there."""
    ones = torch.ones(len(align_matrix), 1, side, side, device=device)
    m = torch.as_tensor(align_matrix, dtype=ones.dtype, device=device)
    return (kornia.geometry.transform.warp_affine(ones, m, (side, side), mode="nearest", padding_mode="zeros") > 0.5).float()


def soft_eroded(masks: torch.Tensor) -> torch.Tensor:
    """(T, 1, S, S) masks in [0, 1] shrunk with a soft edge: blurred over NED's kernel, then the
    part above its threshold stretched back to [0, 1], so the blend seam lies inside the face."""
    side = masks.shape[-1]
    kernel = max(3, int(ERODE_PER_256 * side / 256) | 1)
    blurred = kornia.filters.box_blur(masks, (kernel, kernel), border_type="constant")
    return ((blurred - ERODE_THRESHOLD) / (1 - ERODE_THRESHOLD)).clamp(0, 1)


def to_frames(images: torch.Tensor, matrices: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(T, C, S, S) aligned images warped into (T, C, height, width) frames, zero outside."""
    m = torch.as_tensor(matrices, dtype=images.dtype, device=images.device)
    return kornia.geometry.transform.warp_affine(images, m, (height, width), mode="bilinear", padding_mode="zeros")


def _laplacian(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    gaussian = [image]
    for _ in range(levels - 1):
        gaussian.append(kornia.geometry.transform.pyrdown(gaussian[-1]))
    return [g - _up(coarse, g) for g, coarse in zip(gaussian[:-1], gaussian[1:])] + [gaussian[-1]]


def _up(coarse: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return kornia.geometry.transform.resize(kornia.geometry.transform.pyrup(coarse), like.shape[-2:])


def pyramid_blend(face: torch.Tensor, frame: torch.Tensor, mask: torch.Tensor, levels: int) -> torch.Tensor:
    """Blend (T, 3, H, W) ``face`` into ``frame`` level by level of their Laplacian pyramids,
    weighted by the Gaussian pyramid of ``mask`` (T, 1, H, W)."""
    masks = [mask]
    for _ in range(levels - 1):
        masks.append(kornia.geometry.transform.pyrdown(masks[-1]))
    blended = [m * f + (1 - m) * b for f, b, m in zip(_laplacian(face, levels), _laplacian(frame, levels), masks)]
    out = blended[-1]
    for level in reversed(blended[:-1]):
        out = level + _up(out, level)
    return out


def poisson_blend(face: torch.Tensor, frame: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """OpenCV's seamless (Poisson) cloning of each frame's face region, on the CPU."""
    out = []
    for f, b, m in zip(face, frame, mask):
        f8, b8 = (_uint8(t) for t in (f, b))
        region = (m[0].cpu().numpy() > 0.5).astype(np.uint8) * 255
        if not region.any():
            out.append(b8)
            continue
        ys, xs = np.nonzero(region)
        centre = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
        out.append(cv2.seamlessClone(f8, b8, region, centre, cv2.NORMAL_CLONE))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(frame) / 255.0


def _uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def composite(faces: torch.Tensor, masks: torch.Tensor, frames: torch.Tensor, matrices: np.ndarray,
              method: str = "pyramid") -> torch.Tensor:
    """(T, 3, H, W) in [0, 1]: generated aligned ``faces`` (T, 3, S, S) in [−1, 1] with their
    ``masks`` (T, 1, S, S) put into ``frames`` (T, 3, H, W) in [0, 1] by ``matrices`` (aligned → frame)."""
    if method not in METHODS:
        raise ValueError(f"unknown blend {method!r}; choose one of {', '.join(METHODS)}")
    height, width = frames.shape[-2:]
    soft = soft_eroded(masks) if method == "pyramid" else masks
    face = to_frames((faces + 1) / 2, matrices, height, width)
    mask = to_frames(soft, matrices, height, width).clamp(0, 1)
    if method == "pyramid":
        return pyramid_blend(face, frames, mask, PYRAMID_LEVELS).clamp(0, 1)
    if method == "poisson":
        return poisson_blend(face, frames, mask)
    hard = (mask > 0.5).to(frames)
    return face * hard + frames * (1 - hard)

"""NED's eye (and mouth) points for the eye-gaze image and the mouth/eye discriminators (method.md §2.3).

Layout of the result, per frame: iBUG points 36-41 (the subject's right eye, image left) as
rows 0-5, points 42-47 as rows 6-11, the two pupils as rows 12 and 13 (pupil ``12+e`` belongs to
eye ``e``), and with ``with_mouth`` points 48-67 as rows 14-33.

A pupil is the mass centre of inverse grey intensity (``1 / grey``, skimage's ``rgb2gray``
weights) over the pixels whose centres lie inside that eye's six-point polygon, so the dark
iris and pupil dominate.  Differences from NED, on purpose: pupils stay sub-pixel (NED truncates
to int); grey is floored at :data:`MIN_GREY` instead of giving pure black pixels zero weight; an
eye whose polygon holds no pixel centre (closed or degenerate) falls back to the centroid of its
six points.  Coordinates are screen space (pixel centres at +0.5).  Everything is batched over
frames: each eye is tested only inside a small window around its polygon (even-odd rule).
"""

from __future__ import annotations

import numpy as np
import torch

#: Grey from RGB as skimage.color.rgb2gray.
GREY_WEIGHTS = (0.2125, 0.7154, 0.0721)
#: Darkest grey used for the inverse-intensity weight (half a code value).
MIN_GREY = 0.5 / 255.0
EYES = slice(36, 48)
MOUTH = slice(48, 68)
EYE_SIDES = 6

Array = np.ndarray | torch.Tensor


def _windows(polygons: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel rows (T,2,h) and columns (T,2,w) of a common-size window over each polygon's box.

    Windows start at each box's first pixel and may run past the image edge (masked later).
    """
    lo = torch.floor(polygons.amin(dim=2)).long()  # (T,2,2) x, y
    hi = torch.ceil(polygons.amax(dim=2)).long()
    limit = torch.tensor([width, height], device=polygons.device)
    lo = torch.minimum(lo.clamp_min(0), limit - 1)
    hi = torch.minimum(hi.clamp_min(0), limit)
    extent = int((hi - lo).amax()) + 1 if polygons.shape[0] else 1
    steps = torch.arange(extent, device=polygons.device)
    return lo[..., 1, None] + steps, lo[..., 0, None] + steps


def _inside(polygons: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Even-odd test of points ``px`` (T,2,1,w), ``py`` (T,2,h,1) against polygons (T,2,K,2) → (T,2,h,w)."""
    inside = torch.zeros(torch.broadcast_shapes(px.shape, py.shape), dtype=torch.bool, device=px.device)
    corners = polygons[..., None, None, :]  # (T,2,K,1,1,2)
    for k in range(polygons.shape[2]):
        (ax, ay), (bx, by) = corners[:, :, k].unbind(-1), corners[:, :, (k + 1) % polygons.shape[2]].unbind(-1)
        straddles = (ay > py) != (by > py)
        rise = torch.where(by == ay, torch.ones_like(by), by - ay)
        inside ^= straddles & (px < ax + (py - ay) * (bx - ax) / rise)
    return inside


def pupil_centres(frames: torch.Tensor, eye_points: torch.Tensor) -> torch.Tensor:
    """(T,2,2) inverse-grey mass centres inside the two eye polygons ``eye_points`` (T,12,2) (finite)."""
    num, height, width = frames.shape[:3]
    polygons = eye_points.reshape(num, 2, EYE_SIDES, 2)
    rows, cols = _windows(polygons, height, width)
    py, px = rows[..., :, None].to(polygons) + 0.5, cols[..., None, :].to(polygons) + 0.5
    inside = _inside(polygons, px, py)
    inside &= (rows < height)[..., :, None] & (cols < width)[..., None, :]
    frame = torch.arange(num, device=frames.device)[:, None, None, None]
    rgb = frames[frame, rows.clamp(max=height - 1)[..., :, None], cols.clamp(max=width - 1)[..., None, :]]
    grey = (rgb.to(polygons) / 255.0) @ torch.tensor(GREY_WEIGHTS, dtype=polygons.dtype, device=polygons.device)
    weight = inside / grey.clamp_min(MIN_GREY)
    total = weight.sum(dim=(2, 3))
    centre = torch.stack([(weight * px).sum(dim=(2, 3)), (weight * py).sum(dim=(2, 3))], dim=-1) / total[..., None]
    return torch.where((total > 0)[..., None], centre, polygons.mean(dim=2))


def eye_landmarks(frames: Array, landmarks68: Array, with_mouth: bool) -> Array:
    """(T,14,2), or (T,34,2) ``with_mouth``, eye/pupil(/mouth) points of RGB ``frames`` (T,H,W,3) uint8.

    ``landmarks68`` (T,68,2) in screen coordinates; a frame with any NaN landmark gives NaN rows.
    Runs on the landmarks' device; returns numpy when ``landmarks68`` is numpy.
    """
    points = torch.as_tensor(landmarks68)
    points = points if points.is_floating_point() else points.double()
    pixels = torch.as_tensor(frames, device=points.device)
    if pixels.dim() != 4 or pixels.shape[-1] != 3 or pixels.dtype != torch.uint8:
        raise ValueError(f"frames must be (T,H,W,3) uint8 RGB, got {tuple(pixels.shape)} {pixels.dtype}")
    if points.shape != (pixels.shape[0], 68, 2):
        raise ValueError(f"landmarks68 must be ({pixels.shape[0]}, 68, 2), got {tuple(points.shape)}")
    valid = torch.isfinite(points).all(dim=2).all(dim=1)
    eyes = torch.where(valid[:, None, None], points[:, EYES], torch.zeros_like(points[:, EYES]))
    pupils = pupil_centres(pixels, eyes)
    parts = [points[:, EYES], pupils] + ([points[:, MOUTH]] if with_mouth else [])
    result = torch.cat(parts, dim=1).masked_fill(~valid[:, None, None], float("nan"))
    return result.cpu().numpy() if isinstance(landmarks68, np.ndarray) else result

"""Similarity alignment of crops to a landmark template (method.md §2.3, §2.6).

Matrices are (2,3) ``[A | t]`` mapping screen points ``p`` to ``A p + t`` in the project's
continuous coordinates (x right, y down, pixel ``(row i, col j)`` centred at ``(j+0.5, i+0.5)``;
see :mod:`scmcl.face3d.camera`).  OpenCV puts pixel centres at integers, so
:func:`cv2_matrix` shifts by half a pixel on both sides before ``cv2.warpAffine``; points and
pixels therefore move together exactly.  ``transform_points`` and ``invert`` are tracking's
(re-exported here, one implementation for crop and alignment matrices).

The template is our own (NED's ``template.gz`` is not distributed with this project): see
:func:`landmark_template`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from scmcl.face3d.flame import FlameLayer
from scmcl.preprocess.tracking import invert_matrices as invert
from scmcl.preprocess.tracking import transform_points

__all__ = [
    "EYE_LINE", "EYE_TO_MOUTH", "INTERPOLATIONS", "cv2_matrix", "invert", "landmark_template", "load_template",
    "transform_points", "umeyama", "umeyama_batch", "warp_stack",
]

#: Template placement, as fractions of the crop side: the midpoint of the two eye centres sits at
#: ``(0.5, EYE_LINE)`` and the mouth centre ``EYE_TO_MOUTH`` below it (see :func:`landmark_template`).
EYE_LINE = 0.42
EYE_TO_MOUTH = 0.30
INTERPOLATIONS = {"lanczos": cv2.INTER_LANCZOS4, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
_RIGHT_EYE, _LEFT_EYE, _MOUTH = slice(36, 42), slice(42, 48), slice(48, 68)


def umeyama_batch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(T,2,3) least-squares similarities (rotation, uniform scale, shift) taking ``src[t]`` (N,2) to ``dst`` (N,2).

    In 2-D, Umeyama's rotation+scale is the complex number ``z = sum(conj(a) b) / sum(|a|^2)``
    over the centred points ``a`` (src) and ``b`` (dst): the same optimum as the SVD form with
    its reflection guard, without a per-frame SVD.  Frames with NaN points, or whose points all
    coincide, give NaN matrices.
    """
    src = np.asarray(src, np.float64)
    dst = np.broadcast_to(np.asarray(dst, np.float64), src.shape)
    src_mean, dst_mean = src.mean(axis=1, keepdims=True), dst.mean(axis=1, keepdims=True)
    a, b = src - src_mean, dst - dst_mean
    spread = (a * a).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = (a * b).sum(axis=(1, 2)) / spread
        s = (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]).sum(axis=1) / spread
    linear = np.stack([np.stack([c, -s], axis=-1), np.stack([s, c], axis=-1)], axis=1)  # (T,2,2)
    shift = dst_mean[:, 0] - np.einsum("tij,tj->ti", linear, src_mean[:, 0])
    return np.concatenate([linear, shift[..., None]], axis=2)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2,3) least-squares similarity taking points ``src`` (N,2) to ``dst`` (N,2)."""
    return umeyama_batch(np.asarray(src)[None], dst)[0]


def _neutral_landmarks(layer: FlameLayer) -> np.ndarray:
    """(68,3) landmarks of the layer's mean head: zero identity, expression and pose."""
    if not layer.has_landmarks:
        raise ValueError("landmark_template needs a FlameLayer built with a landmark embedding")
    with torch.no_grad():
        return layer().landmarks[0].double().cpu().numpy()


def landmark_template(layer_or_landmarks3d: FlameLayer | np.ndarray, size: int) -> np.ndarray:
    """Our stand-in for NED's ``template.gz``: (68,2) crop points of the frontal neutral face.

    The 68 landmarks of the model's mean head (or given (68,3) world points, y up) are projected
    orthographically (x right, y down) and placed by one uniform scale and a translation so
    that the midpoint of the two eye centres (means of points 36-41 and 42-47) lands at
    ``(0.5, EYE_LINE) * size`` and the mouth centre (mean of 48-67) lies ``EYE_TO_MOUTH * size``
    below it.  For human proportions this puts the brows near 0.32, the chin near 0.87 and the
    jaw contour across the central ~60% of the crop, matching NED's crops (face box = central
    186 of 256 px).  Deterministic: it depends only on the model.
    """
    points = _neutral_landmarks(layer_or_landmarks3d) if isinstance(layer_or_landmarks3d, FlameLayer) \
        else np.asarray(layer_or_landmarks3d, np.float64)
    if points.shape != (68, 3):
        raise ValueError(f"expected (68,3) world landmarks, got {points.shape}")
    flat = points[:, :2] * np.array([1.0, -1.0])
    eyes = (flat[_RIGHT_EYE].mean(axis=0) + flat[_LEFT_EYE].mean(axis=0)) / 2
    drop = flat[_MOUTH].mean(axis=0)[1] - eyes[1]
    if not drop > 0:
        raise ValueError("the mouth is not below the eyes in the model's neutral landmarks")
    scale = EYE_TO_MOUTH * size / drop
    return (flat - eyes) * scale + np.array([0.5, EYE_LINE]) * size


def load_template(path: str | Path) -> np.ndarray:
    """A (68,2) template from a file: ``.npy`` in screen coordinates, or NED's text format.

    NED's ``template.gz`` (``np.loadtxt``) holds pixel indices of FAN points, so it is shifted
    by +0.5 into screen coordinates.
    """
    path = Path(path)
    template = np.load(path) if path.suffix == ".npy" else np.loadtxt(path) + 0.5
    template = np.asarray(template, np.float64)
    if template.shape != (68, 2) or not np.isfinite(template).all():
        raise ValueError(f"{path}: expected 68 finite (x, y) points, got shape {template.shape}")
    return template


def cv2_matrix(matrices: np.ndarray) -> np.ndarray:
    """(T,2,3) OpenCV matrices (pixel centres at integers) for screen-space ``matrices`` (centres at +0.5).

    ``q = A p + t`` with ``p = p_cv + 0.5`` and ``q = q_cv + 0.5`` gives ``t_cv = t + A (0.5, 0.5) - 0.5``.
    """
    matrices = np.asarray(matrices, np.float64)
    shift = matrices[:, :, 2] + 0.5 * matrices[:, :, :2].sum(axis=2) - 0.5
    return np.concatenate([matrices[:, :, :2], shift[..., None]], axis=2)


def _warp(image: np.ndarray, matrix: np.ndarray, size: int, flag: int) -> np.ndarray:
    """One frame through ``cv2.warpAffine``, four channels at a time (OpenCV's Lanczos limit)."""
    if image.ndim == 3 and image.shape[2] > 4:
        groups = [_warp(image[..., i:i + 4], matrix, size, flag) for i in range(0, image.shape[2], 4)]
        return np.concatenate(groups, axis=2)
    warped = cv2.warpAffine(image, matrix, (size, size), flags=flag, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped.reshape(size, size, *image.shape[2:])


def warp_stack(images: np.ndarray, matrices: np.ndarray, size: int, interpolation: str = "lanczos") -> np.ndarray:
    """Warp each frame of ``images`` (T,H,W[,C]) by its screen-space matrix into a ``size``² image.

    Lanczos4 for images (NED's faces, NMFCs, shapes), nearest for masks; outside the source is
    black.  A frame with a non-finite matrix comes out black.  Bool stacks stay bool.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got '{interpolation}'")
    images = np.asarray(images)
    source = images.view(np.uint8) if images.dtype == bool else images
    cv_matrices = cv2_matrix(matrices)
    out = np.zeros((len(images), size, size, *images.shape[3:]), source.dtype)
    for t, (image, matrix) in enumerate(zip(source, cv_matrices)):
        if np.isfinite(matrix).all():
            out[t] = _warp(image, matrix, size, INTERPOLATIONS[interpolation])
    return out.astype(bool) if images.dtype == bool else out

"""Landmark figures of a video, from dlib's 68 points (``scmcl track``'s backend, which tracks
the synthetic corpus's faces): the mouth-landmark distance between two videos (M-LMD), the
temporal jitter of the points, and the lip-sync proxies (the mouth-opening track against
another video's and against the audio's loudness envelope)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from scmcl.preprocess.tracking import make_tracker

#: dlib's 68-point layout: the mouth (outer and inner lips), the inner lips' upper and lower
#: midpoints, and the outer eye corners (the scale of a face).
MOUTH = slice(48, 68)
INNER_UPPER, INNER_LOWER = (61, 62, 63), (67, 66, 65)
EYE_CORNERS = (36, 45)


@lru_cache(maxsize=1)
def _dlib():
    return make_tracker("dlib")  # its detector takes a second to build: once per process


def track(frames: np.ndarray) -> np.ndarray:
    """(T, 68, 2) dlib landmarks in frame pixels, NaN on frames where no face was found."""
    det = _dlib().detect(frames)
    return np.where(det.found[:, None, None], det.landmarks, np.nan)


def _both(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Frames where both tracks found the face, the shorter length cut off."""
    n = min(len(a), len(b))
    return np.flatnonzero(np.isfinite(a[:n]).all((1, 2)) & np.isfinite(b[:n]).all((1, 2)))


def mouth_distance(a: np.ndarray, b: np.ndarray) -> float:
    """M-LMD: mean over the frames both tracks found of the mean distance (px) between their
    20 mouth points."""
    frames = _both(a, b)
    if not len(frames):
        return float("nan")
    return float(np.linalg.norm(a[frames, MOUTH] - b[frames, MOUTH], axis=-1).mean())


def jitter(points: np.ndarray) -> float:
    """Mean norm (px) of the points' second difference over consecutive tracked frames: how much
    they shake from frame to frame beyond a smooth motion."""
    second = points[2:] - 2 * points[1:-1] + points[:-2]
    norms = np.linalg.norm(second, axis=-1)[np.isfinite(second).all((1, 2))]
    return float(norms.mean()) if norms.size else float("nan")


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """(T,) the inner lips' gap over the eye-corner distance (NaN where untracked)."""
    gap = np.linalg.norm(points[:, INNER_UPPER] - points[:, INNER_LOWER], axis=-1).mean(1)
    return gap / np.linalg.norm(points[:, EYE_CORNERS[0]] - points[:, EYE_CORNERS[1]], axis=-1)


def loudness(samples: np.ndarray, sample_rate: int, fps: float, frames: int) -> np.ndarray:
    """(frames,) RMS of the audio over each video frame's span, one value per frame: windows of two
    frames' samples centred on each frame (zero-padded at the ends), as ``librosa.feature.rms``
    with ``center=True`` computes it, without importing librosa (seconds per process, and a numba
    compile in a fresh install)."""
    hop = int(round(sample_rate / fps))
    padded = np.pad(np.asarray(samples, np.float32), hop)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * hop)[::hop]
    rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=1)).astype(np.float32)
    return np.pad(rms, (0, max(0, frames - len(rms))))[:frames]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the frames where both series are finite (NaN when either is flat)."""
    n = min(len(a), len(b))
    a, b = np.asarray(a[:n], np.float64), np.asarray(b[:n], np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or a[keep].std() < 1e-12 or b[keep].std() < 1e-12:
        return float("nan")
    return float(np.corrcoef(a[keep], b[keep])[0, 1])

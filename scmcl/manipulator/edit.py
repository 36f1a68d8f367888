"""Editing a clip's expressions with the manipulator, as NED's ``manipulator/test.py`` does
(method.md §4.4): a style code from an emotion label or from reference clips, every hop-1 window
of the clip through the generator, the windows' outputs overlap-added with a Gaussian window;
then, beyond NED, a per-frame intensity blend and the edited clip as expression-table rows.

Library functions only: modules come already on their device (nothing here moves them), numpy
arrays go in and out at the boundaries, and every network runs under ``torch.no_grad`` in eval
mode (its previous mode is restored afterwards).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from scmcl.io.clip_data import CLIP_KEY, JAW_POSE_COLUMNS, clip_id, expression_rows
from scmcl.manipulator.networks import FRAME_SIZE, ManipulatorNets

#: NED's convergence threshold of the Weiszfeld iteration (``geometric_median(X, eps=1e-5)``).
MEDIAN_EPS = 1e-5
#: OpenCV's fixed kernels for small odd sizes with sigma <= 0 (``small_gaussian_tab``), which
#: ``cv2.getGaussianKernel`` returns instead of the sampled Gaussian.
_SMALL_GAUSSIANS = {1: [1.0], 3: [0.25, 0.5, 0.25], 5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
                    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]}


@contextmanager
def _evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no gradients for the block, then the module's own mode back, so that an
    edit in the middle of training leaves the networks as it found them."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _frames51(frames: np.ndarray, what: str) -> np.ndarray:
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 2 or frames.shape[1] != FRAME_SIZE:
        raise ValueError(f"{what}: expected (T, {FRAME_SIZE}) expression frames, got {frames.shape}")
    return frames


def _windows(frames: np.ndarray, seq_len: int) -> np.ndarray:
    """Every hop-1 window of a (T,51) clip, (max(T-seq_len+1, 1), seq_len, 51); a clip shorter
    than a window becomes one window padded by repeating its last frame (the generator and the
    style encoder were trained on ``seq_len``-frame windows only)."""
    if len(frames) < seq_len:
        frames = np.concatenate([frames, np.repeat(frames[-1:], seq_len - len(frames), axis=0)])
    return np.lib.stride_tricks.sliding_window_view(frames, seq_len, axis=0).transpose(0, 2, 1)


def _check_sizes(seq_len: int, batch: int) -> None:
    if seq_len < 1 or batch < 1:
        raise ValueError(f"seq_len and batch must be positive, got seq_len={seq_len}, batch={batch}")


# --- style codes --------------------------------------------------------------------------------

def label_style(nets: ManipulatorNets, label: int, seed: int) -> torch.Tensor:
    """NED's label-driven code, (style,): one z ~ N(0, I) through the mapping network's head of
    ``label``. z comes from a CPU generator seeded with ``seed`` (then moved to the networks'
    device), so a seed gives the same code on any device and the global RNG is untouched."""
    mapping = nets.mapping_network
    n_labels = len(mapping.unshared)
    if not 0 <= label < n_labels:
        raise ValueError(f"label {label} is not one of the mapping network's 0..{n_labels - 1}")
    z = torch.randn(1, mapping.shared[0].in_features, generator=torch.Generator().manual_seed(seed))
    device = _device(mapping)
    with _evaluating(mapping):
        return mapping(z.to(device), torch.tensor([label], device=device))[0]


def reference_style(nets: ManipulatorNets, reference_clips: Sequence[np.ndarray], seq_len: int,
                    batch: int) -> torch.Tensor:
    """NED's reference-driven code, (style,): the style encoder over every hop-1 ``seq_len``
    window of every reference clip ((T_i,51) frames), then the geometric median of the codes,
    so a few odd windows do not pull the code the way a mean would.

    A clip shorter than ``seq_len`` is skipped when another clip has a full window (a padded
    window of repeated frames is not a sample of the reference's motion); when none has, each
    such clip gives one window padded by repeating its last frame. No frame at all is an error."""
    _check_sizes(seq_len, batch)
    clips = [_frames51(clip, f"reference clip {i}") for i, clip in enumerate(reference_clips)]
    clips = [clip for clip in clips if len(clip)]
    if not clips:
        raise ValueError("reference_style needs at least one reference frame: every reference clip is empty")
    if any(len(clip) >= seq_len for clip in clips):
        clips = [clip for clip in clips if len(clip) >= seq_len]
    windows = np.concatenate([_windows(clip, seq_len) for clip in clips])
    encoder = nets.style_encoder
    device = _device(encoder)
    with _evaluating(encoder):
        codes = torch.cat([encoder(torch.from_numpy(windows[start:start + batch].copy()).to(device))
                           for start in range(0, len(windows), batch)])
    return geometric_median(codes)


def geometric_median(points: torch.Tensor, eps: float = MEDIAN_EPS, iterations: int = 1000) -> torch.Tensor:
    """The point of least summed Euclidean distance to ``points`` (N,S), as NED's Weiszfeld
    iteration from the mean, stopping when a step moves less than ``eps``. A point on the
    estimate is left out of the weights and handled by Vardi & Zhang's correction (NED's too),
    so coinciding points never divide by zero. Runs in float64; stops after ``iterations``
    steps at the latest (NED loops until convergence) and returns (S,) in the points' dtype."""
    if points.ndim != 2 or not len(points):
        raise ValueError(f"geometric_median needs (N, S) points with N >= 1, got {tuple(points.shape)}")
    x = points.detach().double()
    y = x.mean(dim=0)
    for _ in range(iterations):
        distances = torch.linalg.vector_norm(x - y, dim=1)
        away = distances > 0
        n_on = int((~away).sum())
        if n_on == len(x):
            break
        inverse = 1.0 / distances[away]
        weighted = (inverse[:, None] * x[away]).sum(dim=0) / inverse.sum()
        if n_on == 0:
            y_next = weighted
        else:
            pull = float(torch.linalg.vector_norm((weighted - y) * inverse.sum()))
            ratio = 0.0 if pull == 0 else n_on / pull
            y_next = max(0.0, 1.0 - ratio) * weighted + min(1.0, ratio) * y
        step = float(torch.linalg.vector_norm(y_next - y))
        y = y_next
        if step < eps:
            break
    return y.to(points.dtype)


# --- windows in, clip out -----------------------------------------------------------------------

def gaussian_window(length: int) -> np.ndarray:
    """``cv2.getGaussianKernel(length, -1)`` as OpenCV 4 computes it (NED's era), (length,)
    float64 summing to 1: OpenCV's fixed kernels for odd sizes up to 7, else a Gaussian with
    sigma = 0.3*((length-1)*0.5 - 1) + 0.8 sampled at i - (length-1)/2 (OpenCV 5 samples even
    sizes differently; the documented formula is kept)."""
    if length < 1:
        raise ValueError(f"a Gaussian window needs a positive length, got {length}")
    if length in _SMALL_GAUSSIANS:
        return np.array(_SMALL_GAUSSIANS[length])
    sigma = 0.3 * ((length - 1) * 0.5 - 1) + 0.8
    x = np.arange(length) - (length - 1) * 0.5
    weights = np.exp(-(x * x) / (2 * sigma * sigma))
    return weights / weights.sum()


def overlap_add(window_outputs: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(n_frames, 51) clip from the (N, L, 51) outputs of its hop-1 windows (N = n_frames-L+1),
    by NED's scheme: window i, times a Gaussian window of length L, is added into frames
    i..i+L-1; then the first L-1 frames are the first window's raw output and the last L-1
    frames the last window's (which wins where the two overlap, as in NED).

    An interior frame is covered by all L positions of the Gaussian, so its weights sum to 1;
    the sum is nevertheless divided by the accumulated weight (float64), so that a constant
    per-frame input comes back as that constant on every frame, not up to summation rounding.
    A clip shorter than L has one window (its padded copy, see ``edit_sequence``): its output
    cut back to ``n_frames``. Returned on the outputs' device, in their dtype."""
    if window_outputs.ndim != 3 or n_frames < 1:
        raise ValueError(f"overlap_add needs (N, L, C) window outputs and n_frames >= 1, "
                         f"got {tuple(window_outputs.shape)} and {n_frames}")
    n_windows, length = window_outputs.shape[:2]
    expected = max(n_frames - length + 1, 1)
    if n_windows != expected:
        raise ValueError(f"{n_frames} frames have {expected} hop-1 windows of {length} frames, got {n_windows}")
    if n_frames <= length:
        return window_outputs[0, :n_frames].clone()
    outputs = window_outputs.double()
    weights = torch.from_numpy(gaussian_window(length)).to(outputs.device)
    total = outputs.new_zeros(n_frames, outputs.shape[2])
    weight = outputs.new_zeros(n_frames)
    for j in range(length):
        total[j:j + n_windows] += weights[j] * outputs[:, j]
        weight[j:j + n_windows] += weights[j]
    clip = total / weight[:, None]
    clip[:length - 1] = outputs[0, :-1]
    clip[-(length - 1):] = outputs[-1, 1:]
    return clip.to(window_outputs.dtype)


def edit_sequence(generator: nn.Module, frames51: np.ndarray, style: torch.Tensor, seq_len: int,
                  batch: int) -> np.ndarray:
    """A clip's (T,51) frames re-synthesised by the generator with ``style`` (style,): every
    hop-1 window (one padded window for T < seq_len), ``batch`` windows per call, then
    ``overlap_add``. Returns (T,51) float32."""
    _check_sizes(seq_len, batch)
    frames51 = _frames51(frames51, "edit_sequence")
    if not len(frames51):
        raise ValueError("edit_sequence needs at least one frame")
    if style.ndim != 1:
        raise ValueError(f"edit_sequence takes one style code (S,), got {tuple(style.shape)}")
    windows = _windows(frames51, seq_len)
    device = _device(generator)
    style = style.detach().to(device)
    with _evaluating(generator):
        outputs = []
        for start in range(0, len(windows), batch):
            x = torch.from_numpy(windows[start:start + batch].copy()).to(device)
            outputs.append(generator(x, style.expand(len(x), -1)))
        clip = overlap_add(torch.cat(outputs), len(frames51))
    return clip.float().cpu().numpy()


# --- intensity ----------------------------------------------------------------------------------

_KEYFRAME_FORM = "expected a number in [0, 1] or keyframes [[t_seconds, value], ...] with strictly increasing times"


def _number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def intensity_curve(intensity: float | Sequence[Sequence[float]], n_frames: int, fps: float) -> np.ndarray:
    """The edit's strength at each frame, (n_frames,) float64 in [0, 1]: a constant number, or
    keyframes [[t_seconds, value], ...] linearly interpolated at t = frame/fps and held before
    the first and after the last keyframe, so an edit can fade in and out. A malformed value is
    a one-line ValueError saying what is wrong and the expected form."""
    if n_frames < 0 or not (_number(fps) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"intensity_curve needs n_frames >= 0 and a positive fps, got {n_frames} and {fps}")
    if _number(intensity):
        if not 0 <= intensity <= 1:
            raise ValueError(f"intensity {intensity} is not in [0, 1]: {_KEYFRAME_FORM}")
        return np.full(n_frames, float(intensity))
    if isinstance(intensity, (str, bytes)) or not isinstance(intensity, Sequence) or not len(intensity):
        raise ValueError(f"intensity {intensity!r} is neither a number nor a non-empty list of keyframes: "
                         f"{_KEYFRAME_FORM}")
    times, values = [], []
    for i, keyframe in enumerate(intensity, start=1):
        if (isinstance(keyframe, (str, bytes)) or not isinstance(keyframe, Sequence) or len(keyframe) != 2
                or not all(_number(v) and math.isfinite(v) for v in keyframe)):
            raise ValueError(f"intensity keyframe {i} is {keyframe!r}, not a pair of finite numbers: {_KEYFRAME_FORM}")
        t, value = float(keyframe[0]), float(keyframe[1])
        if not 0 <= value <= 1:
            raise ValueError(f"intensity keyframe {i} has value {value}, not in [0, 1]: {_KEYFRAME_FORM}")
        if times and t <= times[-1]:
            raise ValueError(f"intensity keyframe {i} has time {t}, not after {times[-1]}: {_KEYFRAME_FORM}")
        times.append(t)
        values.append(value)
    if n_frames and times[0] > (n_frames - 1) / fps:  # the first value would be held over the whole clip
        raise ValueError(f"intensity keyframes start at {times[0]:g} s, after the clip's last frame: it has {n_frames} "
                         f"frames at {fps:g} fps (0 to {(n_frames - 1) / fps:.2f} s); give keyframe times within it")
    return np.interp(np.arange(n_frames) / fps, times, values)


def apply_intensity(source51: np.ndarray, edited51: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Per-frame blend source + curve·(edited − source) of two (T,51) clips, written as
    (1−c)·source + c·edited so that intensity 0 is the source and 1 the full edit bit for bit;
    the distance to the full edit, (1−c)·|edited − source|, shrinks monotonically with c.

    The blend is linear in expression-parameter space, on every channel, jaw opening
    included: half an edit is the midpoint of the two parameter vectors, not a rendered
    half-way face, and a half-edited jaw opens half way between the two."""
    source51, edited51 = _frames51(source51, "source"), _frames51(edited51, "edited")
    curve = np.asarray(curve, np.float64)
    if source51.shape != edited51.shape or curve.shape != (len(source51),):
        raise ValueError(f"apply_intensity needs two (T, {FRAME_SIZE}) clips and a (T,) curve of the same T, "
                         f"got {source51.shape}, {edited51.shape} and {curve.shape}")
    c = curve[:, None]
    return ((1.0 - c) * source51 + c * edited51).astype(np.float32)


# --- expression-table rows ----------------------------------------------------------------------

def edit_table(source_rows: pd.DataFrame, edited51: np.ndarray, target_emotion: str) -> pd.DataFrame:
    """The edited clip as expression-table rows (``EXPRESSION_COLUMNS``) plus ``source_frame``:
    the source's actor, level and clip under ``target_emotion``, frames 0..T-1, the edited jaw
    opening as jaw_pose_0 with the source's other two jaw rotations (the manipulator edits the
    opening only), and the edited 50 expression values. ``source_rows`` are one clip's rows
    sorted by frame, one per edited frame."""
    keys = source_rows[CLIP_KEY].drop_duplicates()
    if len(keys) != 1:
        raise ValueError(f"edit_table takes the rows of one clip, got {len(keys)} clips")
    key = tuple(keys.iloc[0])
    edited51 = _frames51(edited51, "edited")
    if len(edited51) != len(source_rows):
        raise ValueError(f"{clip_id(*key)} has {len(source_rows)} rows but {len(edited51)} edited frames")
    source_frames = source_rows["frame"].to_numpy()
    if np.any(np.diff(source_frames) <= 0):
        raise ValueError(f"the rows of {clip_id(*key)} are not sorted by frame")
    jaw_pose = source_rows[JAW_POSE_COLUMNS].to_numpy(np.float32, copy=True)
    jaw_pose[:, 0] = edited51[:, 0]
    rows = expression_rows((key[0], target_emotion, *key[2:]), np.arange(len(edited51)), jaw_pose, edited51[:, 1:])
    rows["source_frame"] = source_frames.astype(np.int64)
    return rows

"""Per-frame FLAME parameters of a synthetic clip: speech-driven mouth, held emotion, blinks,
small head motion.

The mouth follows the phoneme timeline of the clip's own speech, so one sentence spoken in
two emotions has the same viseme sequence with different timing. The paired ground truth
re-uses a clip's timeline and motion seed with another emotion's expression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from scmcl.corpus.actors import EMOTION_ARTICULATION, EMOTION_JAW, Actor
from scmcl.corpus.head import EXPRESSION_NAMES
from scmcl.corpus.speech import Phone
from scmcl.corpus.visemes import VISEMES, viseme_of, viseme_track

_E = {name: i for i, name in enumerate(EXPRESSION_NAMES)}

#: Mouth shape of each viseme: (jaw opening in rad, expression activations).
VISEME_SHAPES: dict[str, tuple[float, dict[str, float]]] = {
    "sil": (0.0, {}),
    "PP": (0.0, {"lips_press": 0.7}),
    "FF": (0.04, {"chin_raise": 0.5, "upper_lip_raise": 0.2}),
    "TH": (0.08, {"lips_stretch": 0.1}),
    "DD": (0.09, {"lips_stretch": 0.15}),
    "kk": (0.12, {}),
    "CH": (0.07, {"lips_funnel": 0.6, "lips_pucker": 0.3}),
    "SS": (0.04, {"lips_stretch": 0.4}),
    "nn": (0.08, {}),
    "RR": (0.07, {"lips_pucker": 0.4, "lips_funnel": 0.3}),
    "aa": (0.30, {}),
    "E": (0.18, {"lips_stretch": 0.4}),
    "I": (0.10, {"lips_stretch": 0.6}),
    "O": (0.22, {"lips_funnel": 0.7, "lips_pucker": 0.3}),
    "U": (0.10, {"lips_pucker": 0.8}),
}
assert set(VISEME_SHAPES) == set(VISEMES), "every viseme needs a mouth shape"

_TIMELINE_RATE = 1000.0  # Hz: mouth targets are built at 1 ms and smoothed (coarticulation)
_COARTICULATION_S = 0.03
_BLINK_RATE_HZ = 0.3
_BLINK_S = 0.16


@dataclass
class ClipParams:
    """Per-frame FLAME parameters and the viseme track of one clip (T frames)."""

    exp: np.ndarray  # (T,E)
    pose: np.ndarray  # (T,6) [global(3), jaw(3)]
    neck_pose: np.ndarray  # (T,3)
    eye_pose: np.ndarray  # (T,6)
    cam: np.ndarray  # (T,3) orthographic [scale, tx, ty]
    viseme: np.ndarray  # (T,) int

    @property
    def jaw_open(self) -> np.ndarray:
        return self.pose[:, 3]


def _mouth_curves(phones: list[Phone], duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Jaw and expression targets on a 1 ms grid, held per phone, then smoothed."""
    n = max(1, int(np.ceil(duration * _TIMELINE_RATE)))
    jaw = np.zeros(n)
    exp = np.zeros((n, len(EXPRESSION_NAMES)))
    for phone in phones:
        a, b = int(phone.start * _TIMELINE_RATE), int(np.ceil(phone.end * _TIMELINE_RATE))
        opening, shape = VISEME_SHAPES[VISEMES[viseme_of(phone.phoneme)]]
        jaw[a:b] = opening
        for name, value in shape.items():
            exp[a:b, _E[name]] = value
    sigma = _COARTICULATION_S * _TIMELINE_RATE
    return gaussian_filter1d(jaw, sigma, mode="nearest"), gaussian_filter1d(exp, sigma, axis=0, mode="nearest")


def _sample(curve: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """Value at each video frame centre."""
    idx = np.clip(((np.arange(n_frames) + 0.5) / fps * _TIMELINE_RATE).astype(int), 0, len(curve) - 1)
    return curve[idx]


def _smooth_noise(rng: np.random.Generator, n: int, fps: float, dims: int, period_s: float) -> np.ndarray:
    """Zero-mean, unit-std noise varying on the scale of ``period_s`` (natural head sway)."""
    raw = rng.normal(size=(n + 64, dims))
    out = gaussian_filter1d(raw, period_s * fps / 2.0, axis=0, mode="wrap")[32 : 32 + n]
    return out / (out.std(axis=0, keepdims=True) + 1e-8)


def _blinks(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Eyelid closure in [0,1]: a Poisson train of short triangular blinks."""
    t = (np.arange(n) + 0.5) / fps
    out = np.zeros(n)
    start = rng.exponential(1.0 / _BLINK_RATE_HZ)
    while start < t[-1] if n else False:
        out = np.maximum(out, np.clip(1.0 - np.abs(t - start - _BLINK_S / 2) / (_BLINK_S / 2), 0.0, 1.0))
        start += _BLINK_S + rng.exponential(1.0 / _BLINK_RATE_HZ)
    return out


def animate(phones: list[Phone], n_frames: int, fps: float, actor: Actor, emotion: str, level_scale: float,
            motion_seed: int, head_motion: float) -> ClipParams:
    """FLAME parameters for every frame of a clip."""
    duration = n_frames / fps
    jaw_curve, exp_curve = _mouth_curves(phones, duration)
    articulation = 1.0 + level_scale * (EMOTION_ARTICULATION[emotion] - 1.0)
    jaw = articulation * _sample(jaw_curve, n_frames, fps) + level_scale * EMOTION_JAW[emotion]
    exp = articulation * _sample(exp_curve, n_frames, fps)
    exp = exp + actor.expression_offset(emotion, level_scale)[None, :]

    rng = np.random.default_rng(motion_seed)
    blink = _blinks(rng, n_frames, fps)
    for side in ("eyelid_close_left", "eyelid_close_right"):
        exp[:, _E[side]] = np.maximum(exp[:, _E[side]], blink)

    sway = _smooth_noise(rng, n_frames, fps, 3, period_s=1.5) * np.deg2rad([2.0, 3.0, 1.5]) * head_motion
    pose = np.zeros((n_frames, 6))
    pose[:, :3] = sway
    pose[:, 3] = jaw
    gaze = _smooth_noise(rng, n_frames, fps, 2, period_s=0.8) * np.deg2rad(3.0) * head_motion
    eye_pose = np.concatenate([gaze, np.zeros((n_frames, 1)), gaze, np.zeros((n_frames, 1))], axis=1)
    drift = _smooth_noise(rng, n_frames, fps, 2, period_s=2.0) * 0.004 * head_motion
    cam = np.concatenate([np.full((n_frames, 1), actor.scale), drift + [0.0, 0.01]], axis=1)
    return ClipParams(exp=exp, pose=pose, neck_pose=np.zeros((n_frames, 3)), eye_pose=eye_pose, cam=cam,
                      viseme=viseme_track(phones, fps, n_frames))

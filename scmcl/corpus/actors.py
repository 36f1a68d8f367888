"""Synthetic actors: identity, colours, voice, and each actor's own way of showing emotions.

An actor is derived from (corpus seed, actor name) only, so adding an actor to the config
never changes the others.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from scmcl.corpus.head import EXPRESSION_NAMES
from scmcl.corpus.speech import Prosody, Voice

_E = {name: i for i, name in enumerate(EXPRESSION_NAMES)}

#: Canonical emotion displays as expression-blendshape activations (level_3 strength),
#: after FACS prototypes: e.g. happy = AU6 cheek raise + AU12 lip-corner pull.
EMOTION_PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "angry": {"brow_lower": 0.9, "lips_press": 0.5, "nose_wrinkle": 0.3, "lower_lid_raise": 0.5, "upper_lip_raise": 0.2},
    "disgusted": {"nose_wrinkle": 0.9, "upper_lip_raise": 0.7, "brow_lower": 0.5, "mouth_corner_down_left": 0.3,
                  "mouth_corner_down_right": 0.3, "lower_lid_raise": 0.4, "chin_raise": 0.3},
    "fear": {"brow_inner_raise": 0.8, "brow_outer_raise_left": 0.5, "brow_outer_raise_right": 0.5, "eye_wide": 0.8,
             "lips_stretch": 0.6, "mouth_corner_down_left": 0.2, "mouth_corner_down_right": 0.2},
    "happy": {"mouth_corner_up_left": 0.9, "mouth_corner_up_right": 0.9, "cheek_raise_left": 0.7,
              "cheek_raise_right": 0.7, "lips_stretch": 0.3, "lower_lid_raise": 0.3},
    "sad": {"mouth_corner_down_left": 0.8, "mouth_corner_down_right": 0.8, "brow_inner_raise": 0.8,
            "eyelid_close_left": 0.25, "eyelid_close_right": 0.25, "chin_raise": 0.4},
    "surprised": {"brow_inner_raise": 0.9, "brow_outer_raise_left": 0.9, "brow_outer_raise_right": 0.9,
                  "eye_wide": 0.9, "lips_funnel": 0.3},
}

#: Extra jaw opening (rad) held during an emotion, and how wide the mouth moves while speaking.
EMOTION_JAW = {"neutral": 0.0, "angry": 0.0, "disgusted": 0.0, "fear": 0.04, "happy": 0.03, "sad": 0.0, "surprised": 0.10}
EMOTION_ARTICULATION = {"neutral": 1.0, "angry": 1.25, "disgusted": 0.9, "fear": 1.1, "happy": 1.15, "sad": 0.75, "surprised": 1.2}

#: Emotional prosody relative to the actor's neutral voice (rate factor, pitch shift, range factor, volume).
EMOTION_PROSODY = {
    "neutral": (1.00, 0, 1.0, 100),
    "angry": (1.12, 6, 1.5, 130),
    "disgusted": (0.88, -6, 0.9, 95),
    "fear": (1.18, 12, 1.3, 90),
    "happy": (1.08, 10, 1.4, 110),
    "sad": (0.80, -10, 0.6, 80),
    "surprised": (1.00, 15, 1.6, 115),
}

_VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "f5")


@dataclass
class Actor:
    """Everything that makes one synthetic actor distinct."""

    name: str
    shape: np.ndarray  # identity coefficients (S,)
    palette: dict[str, np.ndarray]  # region name → RGB in [0,1]
    background: tuple[np.ndarray, np.ndarray]  # top and bottom RGB of the backdrop
    voice: Voice
    gains: np.ndarray  # per-blendshape emotion gain (E,)
    quirks: dict[str, np.ndarray]  # emotion → actor-specific extra activation (E,)
    scale: float  # orthographic camera scale (framing)

    def expression_offset(self, emotion: str, level_scale: float) -> np.ndarray:
        """The actor's held expression for an emotion at a given intensity."""
        proto = np.zeros(len(EXPRESSION_NAMES))
        for name, value in EMOTION_PROTOTYPES[emotion].items():
            proto[_E[name]] = value
        return level_scale * (proto * self.gains + self.quirks[emotion])

    def prosody(self, emotion: str, level_scale: float) -> Prosody:
        """Emotional prosody, interpolated from neutral by the intensity level."""
        rate, pitch, rng, vol = EMOTION_PROSODY[emotion]
        return Prosody(
            rate_scale=1.0 + level_scale * (rate - 1.0),
            pitch_shift=int(round(level_scale * pitch)),
            range_scale=1.0 + level_scale * (rng - 1.0),
            volume=int(round(100 + level_scale * (vol - 100))),
        )


def actor_seed(seed: int, name: str) -> int:
    """Stable per-actor seed (Python's hash() is salted per process)."""
    return zlib.crc32(f"{seed}:{name}".encode())


def make_actor(name: str, seed: int, num_shape: int) -> Actor:
    """Draw an actor's identity, colours, voice and emotional style."""
    rng = np.random.default_rng(actor_seed(seed, name))
    skin = np.array([0.95, 0.76, 0.62]) * rng.uniform(0.55, 1.05) + rng.normal(0, 0.03, 3)
    palette = {
        "skin": skin,
        "eyelid": skin * 0.97,
        "lips": np.array([0.72, 0.33, 0.33]) * rng.uniform(0.8, 1.1),
        "brow": np.array([0.25, 0.17, 0.10]) * rng.uniform(0.5, 1.6),
        "sclera": np.array([0.93, 0.92, 0.9]),
        "iris": rng.choice([np.array([0.35, 0.22, 0.1]), np.array([0.25, 0.45, 0.6]), np.array([0.3, 0.45, 0.25])]),
        "pupil": np.array([0.04, 0.04, 0.05]),
        "mouth": np.array([0.22, 0.05, 0.06]),
        "teeth": np.array([0.92, 0.9, 0.84]),
    }
    palette = {k: np.clip(v, 0, 1) for k, v in palette.items()}
    top = rng.uniform(0.2, 0.8, 3)
    quirks = {}
    for emotion in EMOTION_PROTOTYPES:
        extra = np.zeros(len(EXPRESSION_NAMES))
        if emotion != "neutral":
            picks = rng.choice(len(EXPRESSION_NAMES), size=3, replace=False)
            extra[picks] = rng.normal(0, 0.12, 3)
        quirks[emotion] = extra
    variant = str(rng.choice(_VARIANTS))
    return Actor(
        name=name,
        shape=rng.normal(0, 0.8, num_shape),
        palette=palette,
        background=(top, np.clip(top * rng.uniform(0.4, 0.8), 0, 1)),
        voice=Voice(name="en-us", espeak_variant=variant, pitch=int(rng.integers(30, 70)), range=int(rng.integers(40, 70)),
                    rate=int(rng.integers(150, 185))),
        gains=np.exp(rng.normal(0, 0.25, len(EXPRESSION_NAMES))),
        quirks=quirks,
        scale=float(rng.uniform(6.2, 7.0)),
    )

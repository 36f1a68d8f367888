"""The built-in synthetic corpus: every clip of one actor written in MEAD's exact layout.

Per clip: ``video/front/<emotion>/level_<n>/<clip>.mp4`` (with audio),
``audio/<emotion>/level_<n>/<clip>.m4a`` and the ground-truth sidecar
``groundtruth/<emotion>/level_<n>/<clip>.parquet`` (every FLAME parameter, 68 landmarks,
viseme, emotion and level per frame). ``Generator.write_paired`` renders the ground truth MEAD
never has: one clip's sentence, timing and head motion in another emotion, written in the same
layout (under a tree of its own) so it is scanned and preprocessed like any clip.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scmcl.corpus.actors import Actor, make_actor
from scmcl.corpus.animate import ClipParams, animate
from scmcl.corpus.frames import render_clip, vertex_colors
from scmcl.corpus.layout import LEVEL_SCALE, ClipKey, audio_path, clip_keys, groundtruth_path, video_path
from scmcl.corpus.sentences import SENTENCES
from scmcl.corpus.speech import Speech, resample, synthesize
from scmcl.device import resolve_device
from scmcl.face3d.flame import FlameLayer
from scmcl.face3d.flame_file import load_flame_model, load_landmark_embedding
from scmcl.io.atomic import write_parquet
from scmcl.io.media import write_audio, write_video


@dataclass(frozen=True)
class SynthSettings:
    """Corpus-wide settings (config key ``synthetic`` less ``sentences``, plus the device)."""

    fps: float
    resolution: int
    sample_rate: int
    seed: int
    head_motion: float
    device: str


class Generator:
    """One actor's clip generator: the head layer, the actor and the settings, loaded once."""

    def __init__(self, model_path: str | Path, landmarks_path: str | Path, actor: str, settings: SynthSettings):
        model = load_flame_model(model_path)
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.layer = FlameLayer(model, landmarks=load_landmark_embedding(landmarks_path)).to(self.device)
        self.actor: Actor = make_actor(actor, settings.seed, model.num_shape)
        self.colors = vertex_colors(model.extras, self.actor)

    def speech(self, key: ClipKey) -> Speech:
        """The clip's sentence in the actor's voice with the emotion's prosody, at the corpus rate."""
        text = SENTENCES[(int(key.clip) - 1) % len(SENTENCES)]
        spoken = synthesize(text, self.actor.voice, self.actor.prosody(key.emotion, LEVEL_SCALE[key.level]))
        return resample(spoken, self.settings.sample_rate)

    def motion_seed(self, key: ClipKey) -> int:
        return zlib.crc32(f"{self.settings.seed}:{self.actor.name}:{key.emotion}:{key.level}:{key.clip}".encode())

    def render(self, key: ClipKey, speech: Speech, emotion: str, level: int) -> tuple[np.ndarray, np.ndarray, ClipParams, np.ndarray]:
        """Frames, landmarks and parameters of ``key``'s timing shown with ``emotion``/``level``;
        the audio is trimmed/padded to exactly the frames' duration."""
        fps, sr = self.settings.fps, self.settings.sample_rate
        n_frames = max(1, int(round(len(speech.samples) / sr * fps)))
        audio = np.zeros(int(round(n_frames / fps * sr)), np.float32)
        audio[: min(len(audio), len(speech.samples))] = speech.samples[: len(audio)]
        params = animate(speech.phones, n_frames, fps, self.actor, emotion, LEVEL_SCALE[level],
                         self.motion_seed(key), self.settings.head_motion)
        frames, landmarks = render_clip(self.layer, self.colors, self.actor, params, self.settings.resolution, self.device)
        return frames, landmarks, params, audio

    def table(self, key: ClipKey, emotion: str, level: int, params: ClipParams, landmarks: np.ndarray) -> pd.DataFrame:
        """The per-frame ground truth of one rendered clip."""
        n = len(params.exp)
        cols: dict[str, np.ndarray] = {
            "frame": np.arange(n),
            "time": np.arange(n) / self.settings.fps,
            "actor": np.full(n, self.actor.name),
            "emotion": np.full(n, emotion),
            "level": np.full(n, level),
            "clip": np.full(n, key.clip),
            "viseme": params.viseme.astype(np.int16),
            "jaw_open": params.jaw_open,
        }
        blocks = {"shape": np.broadcast_to(self.actor.shape, (n, len(self.actor.shape))), "exp": params.exp,
                  "pose": params.pose, "neck_pose": params.neck_pose, "eye_pose": params.eye_pose, "cam": params.cam,
                  "lmk_x": landmarks[..., 0], "lmk_y": landmarks[..., 1]}
        for name, block in blocks.items():
            for j in range(block.shape[1]):
                cols[f"{name}_{j:02d}"] = block[:, j].astype(np.float32)
        return pd.DataFrame(cols)

    def write_clip(self, root: str | Path, key: ClipKey) -> None:
        """Render one clip and publish its video, audio and ground truth atomically."""
        self._publish(root, key, key)

    def write_paired(self, root: str | Path, key: ClipKey, emotion: str, level: int) -> ClipKey:
        """The paired ground truth: ``key``'s sentence, timing and head motion shown with ``emotion``
        at ``level``, written under ``root`` in MEAD's layout as the clip ``(emotion, level, key.clip)``
        (video with its audio, ``.m4a``, ground-truth table), which is returned.

        ``root`` must be a tree of its own: in the corpus's root the paired clip would replace the
        corpus's own clip of that emotion, level and id (another sentence's timing), so a root that
        holds the source clip is refused, as is a target equal to the source."""
        target = ClipKey(emotion, level, key.clip)
        if target == key:
            raise ValueError(f"the paired ground truth of {key} in its own emotion and level is the clip itself")
        source = video_path(root, self.actor.name, key)
        if source.exists():
            raise ValueError(f"{root} holds the source clip {source}: the paired clip would replace the corpus's own "
                             f"{emotion} level_{level} clip {key.clip}; give the paired ground truth a tree of its own")
        self._publish(root, key, target)
        return target

    def _publish(self, root: str | Path, key: ClipKey, shown: ClipKey) -> None:
        """Render ``key``'s sentence, timing and head motion with ``shown``'s emotion and level, and
        publish it as clip ``shown`` under ``root``: video (muxed audio), audio, ground truth."""
        speech = self.speech(key)
        frames, landmarks, params, audio = self.render(key, speech, shown.emotion, shown.level)
        m4a = audio_path(root, self.actor.name, shown)
        write_audio(m4a, audio, self.settings.sample_rate)
        write_video(video_path(root, self.actor.name, shown), frames, self.settings.fps, audio=m4a)
        write_parquet(self.table(key, shown.emotion, shown.level, params, landmarks),
                      groundtruth_path(root, self.actor.name, shown))


def synth_actor(model_path: str | Path, landmarks_path: str | Path, root: str | Path, actor: str,
                emotions: list[str], levels: list[int], sentences: int, settings: SynthSettings) -> int:
    """Write every clip of one actor; returns the number of clips written."""
    generator = Generator(model_path, landmarks_path, actor, settings)
    keys = clip_keys(emotions, levels, sentences)
    for key in keys:
        generator.write_clip(root, key)
    return len(keys)

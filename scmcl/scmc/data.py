"""Training data of the SCMC metric: aligned frame pairs, per-modality frame sources and the
contrastive batch sampler (method.md §3.3).

A batch is one anchor pair plus ``batch_size − 1`` pairs of the same actor, emotion and level,
so negatives are other moments of the same speaker in the same emotion. Every draw comes
from the training loop's generator, so a resumed run draws the batches it would have drawn.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from scmcl.io.media import read_audio
from scmcl.io.stacks import read_stack
from scmcl.preprocess.shard import expression_view51

CLIP_KEY = ["actor", "emotion", "level", "clip"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def samples_per_frame(sample_rate: int, fps: float) -> int:
    return int(round(sample_rate / fps))


def frame_audio_start(frame: np.ndarray | int, sample_rate: int, fps: float) -> np.ndarray:
    """First audio sample of a video frame, locked to the clip's own fps (no drift at 29.97/30)."""
    return np.round(np.asarray(frame) * (sample_rate / fps)).astype(np.int64)


@dataclass
class Pairs:
    """Aligned pairs as integer arrays; ``clips`` holds the manifest row of every clip index."""

    clips: pd.DataFrame
    src_clip: np.ndarray
    src_frame: np.ndarray
    dst_clip: np.ndarray
    dst_frame: np.ndarray
    group: np.ndarray  # (actor, emotion, level) id: the batch is drawn within one group
    pair: np.ndarray   # (neutral clip, emotional clip) id
    step: np.ndarray   # position along the DTW path

    @classmethod
    def load(cls, aligned: pd.DataFrame, manifest: pd.DataFrame, split: str) -> Pairs:
        rows = aligned[aligned.split == split]
        if rows.empty:
            raise ValueError(f"no aligned pairs in split '{split}': check scmc.pairs and scmc.validation_pairs in the config")
        src_keys = rows.assign(emotion="neutral", level=1, clip=rows.neutral_clip)[CLIP_KEY]
        keys = pd.concat([src_keys, rows[CLIP_KEY]]).drop_duplicates().sort_values(CLIP_KEY).reset_index(drop=True)
        clips = keys.merge(manifest, on=CLIP_KEY, how="left", validate="one_to_one")
        if clips.audio.isna().any():
            missing = clips[clips.audio.isna()].iloc[0]
            raise ValueError(f"aligned pairs name clip {'/'.join(map(str, missing[CLIP_KEY]))} that the manifest lacks: rerun align_audio")
        index = {tuple(k): i for i, k in enumerate(keys.itertuples(index=False))}
        src = [index[tuple(k)] for k in src_keys.itertuples(index=False)]
        dst = [index[tuple(k)] for k in rows[CLIP_KEY].itertuples(index=False)]
        group = rows.groupby(["actor", "emotion", "level"], sort=True).ngroup().to_numpy()
        pair = rows.groupby(["actor", "emotion", "level", "pair"], sort=True).ngroup().to_numpy()
        return cls(clips, np.array(src), rows.neutral_frame.to_numpy(), np.array(dst), rows.emotion_frame.to_numpy(),
                   group, pair, rows.step.to_numpy())

    def __len__(self) -> int:
        return len(self.src_clip)


class BatchSampler:
    """Anchor pair + same-group pairs; ``tau`` > 0 also rejects pairs of the anchor's clip pair
    within ``tau`` path steps of it (near-identical images would be false negatives)."""

    def __init__(self, pairs: Pairs, batch_size: int, tau: int = 0):
        self.pairs, self.batch_size, self.tau = pairs, batch_size, tau
        self.members = {g: np.flatnonzero(pairs.group == g) for g in np.unique(pairs.group)}

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        p = self.pairs
        anchor = int(rng.integers(len(p)))
        candidates = self.members[p.group[anchor]]
        near = (p.pair[candidates] == p.pair[anchor]) & (np.abs(p.step[candidates] - p.step[anchor]) <= self.tau)
        candidates = candidates[~near]
        others = rng.choice(candidates, size=min(self.batch_size - 1, len(candidates)), replace=False)
        return np.concatenate([[anchor], others])

    def fixed_batches(self, count: int, seed: int) -> list[np.ndarray]:
        """The same evaluation batches every time (held-out figures comparable across runs)."""
        rng = np.random.default_rng(seed)
        return [self(rng) for _ in range(count)]


class AudioFrames:
    """One video frame of raw audio per item: ``samples_per_frame`` samples from the frame's start."""

    def __init__(self, clips: pd.DataFrame, sample_rate: int, workers: int = 2):
        self.sample_rate = sample_rate
        self.fps = clips.fps.to_numpy(float)
        self.length = samples_per_frame(sample_rate, float(np.median(self.fps)))
        with ThreadPoolExecutor(workers) as pool:
            self.waves = list(pool.map(lambda path: read_audio(path, sample_rate), clips.audio))

    def __call__(self, clip: np.ndarray, frame: np.ndarray) -> torch.Tensor:
        out = np.zeros((len(clip), 1, self.length), np.float32)
        for row, (c, f) in enumerate(zip(clip, frame)):
            wave = self.waves[c]
            start = min(int(frame_audio_start(f, self.sample_rate, self.fps[c])), max(len(wave) - self.length, 0))
            piece = wave[start:start + self.length]  # a frame past the end is clamped to the last full one
            out[row, 0, : len(piece)] = piece
        return torch.from_numpy(out)


class ExpressionFrames:
    """The 51-d [jaw_open, exp_0..49] vector of a frame, as a 1-channel length-51 signal."""

    def __init__(self, clips: pd.DataFrame, tables: list[str | Path]):
        table = pd.concat([pd.read_parquet(p) for p in tables], ignore_index=True)
        grouped = {tuple(k): g.sort_values("frame") for k, g in table.groupby(CLIP_KEY)}
        self.sequences = []
        for key in clips[CLIP_KEY].itertuples(index=False):
            if tuple(key) not in grouped:
                raise ValueError(f"no expression sequence for clip {'/'.join(map(str, key))}: rerun expression_table for {key.actor}")
            self.sequences.append(expression_view51(grouped[tuple(key)]))

    def __call__(self, clip: np.ndarray, frame: np.ndarray) -> torch.Tensor:
        rows = [self.sequences[c][min(int(f), len(self.sequences[c]) - 1)] for c, f in zip(clip, frame)]
        return torch.from_numpy(np.stack(rows))[:, None, :]


class ImageFrames:
    """Aligned face crops: a ``crop`` fraction cut from every side (NED: 35 px of 256), resized
    to ``size`` and normalised with ImageNet statistics, read from the memory-mapped stacks."""

    def __init__(self, clips: pd.DataFrame, shard_tables: list[str | Path], size: int, crop: float):
        shards = pd.concat([pd.read_parquet(p) for p in shard_tables], ignore_index=True)
        located = clips[CLIP_KEY].merge(shards[CLIP_KEY + ["directory"]], on=CLIP_KEY, how="left")
        if located.directory.isna().any():
            key = located[located.directory.isna()].iloc[0]
            raise ValueError(f"no preprocessed faces for clip {'/'.join(map(str, key[CLIP_KEY]))}: rerun its preprocess_shard")
        self.stacks = [read_stack(Path(d) / "faces_aligned.npy") for d in located.directory]
        self.size, self.crop = size, crop
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __call__(self, clip: np.ndarray, frame: np.ndarray) -> torch.Tensor:
        images = np.stack([self.stacks[c][min(int(f), len(self.stacks[c]) - 1)] for c, f in zip(clip, frame)])
        side = images.shape[1]
        cut = int(round(self.crop * side))
        x = torch.from_numpy(images[:, cut:side - cut, cut:side - cut]).permute(0, 3, 1, 2).float() / 255
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

"""Training data of the SCMC metric: aligned frame pairs, per-modality frame sources and the
contrastive batch sampler (method.md §3.3).

A batch is one anchor pair plus ``batch_size − 1`` pairs of the same actor, emotion and level,
so negatives are other moments of the same speaker in the same emotion. Every draw comes
from the training loop's generator, so a resumed run draws the batches it would have drawn.

Frame indices are checked when the data is set up: a pair past its clip's end in the manifest,
or an expression table or image stack shorter than the frames the pairs read, is an error
naming the table, the clip, the index and the length (never a clamp to the last frame).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from scmcl.io import clip_data as cd
from scmcl.io.clip_data import CLIP_KEY
from scmcl.io.media import read_audio
from scmcl.scmc.pairs import COLUMNS as PAIR_COLUMNS

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
    def load(cls, aligned: pd.DataFrame, manifest: pd.DataFrame, split: str, context: int = 0) -> Pairs:
        """The pairs of ``split``. Consumers also read the ``context`` frames after each pair
        frame (the fine-tuning fuses t and t+1), so steps whose context runs past either clip's
        end are left out; ``clips.last_frame`` is the last frame each clip's sources must have."""
        cd.require_columns(aligned, PAIR_COLUMNS, "the aligned pairs", cd.rerun("pairs"))
        cd.require_columns(manifest, [*CLIP_KEY, "audio", "fps", "frames"], "the manifest", cd.rerun("manifest"))
        rows = aligned[aligned.split == split]
        if rows.empty:
            raise ValueError(f"no aligned pairs in split '{split}': check scmc.pairs and test_clips in the config")
        src_keys = rows.assign(emotion="neutral", level=1, clip=rows.neutral_clip)[CLIP_KEY]
        keys = pd.concat([src_keys, rows[CLIP_KEY]]).drop_duplicates().sort_values(CLIP_KEY).reset_index(drop=True)
        clips = keys.merge(manifest, on=CLIP_KEY, how="left", validate="one_to_one")
        if clips.audio.isna().any():
            missing = clips[clips.audio.isna()].iloc[0]
            raise ValueError(f"aligned pairs name clip {cd.clip_id(*missing[CLIP_KEY])} that the manifest lacks: {cd.rerun('pairs')}")
        index = {tuple(k): i for i, k in enumerate(keys.itertuples(index=False))}
        src = np.array([index[tuple(k)] for k in src_keys.itertuples(index=False)])
        dst = np.array([index[tuple(k)] for k in rows[CLIP_KEY].itertuples(index=False)])
        src_frame, dst_frame = rows.neutral_frame.to_numpy(), rows.emotion_frame.to_numpy()
        length = clips.frames.to_numpy()
        for clip, frame in ((src, src_frame), (dst, dst_frame)):
            past = np.flatnonzero(frame >= length[clip])
            if len(past):
                c, f = clip[past[0]], frame[past[0]]
                raise ValueError(f"the aligned pairs use frame {f} of clip {cd.clip_id(*keys.iloc[c])}, which has "
                                 f"{length[c]} frames in the manifest: {cd.rerun('pairs')}")
        keep = (src_frame + context < length[src]) & (dst_frame + context < length[dst])
        rows, src, dst, src_frame, dst_frame = rows[keep], src[keep], dst[keep], src_frame[keep], dst_frame[keep]
        last = np.zeros(len(clips), np.int64)
        np.maximum.at(last, src, src_frame + context)
        np.maximum.at(last, dst, dst_frame + context)
        group = rows.groupby(["actor", "emotion", "level"], sort=True).ngroup().to_numpy()
        pair = rows.groupby(["actor", "emotion", "level", "pair"], sort=True).ngroup().to_numpy()
        return cls(clips.assign(last_frame=last), src, src_frame, dst, dst_frame, group, pair, rows.step.to_numpy())

    def __len__(self) -> int:
        return len(self.src_clip)


class BatchSampler:
    """Anchor pair + same-group pairs; ``tau`` > 0 also rejects pairs of the anchor's clip pair
    within ``tau`` path steps of it (near-identical images would be false negatives)."""

    def __init__(self, pairs: Pairs, batch_size: int, tau: int):
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


def _check_length(source: str, key, length: int, last: int, fix: str) -> None:
    if last >= length:
        raise ValueError(f"{source}: clip {cd.clip_id(*key)} has {length} frames but the aligned pairs use frame {last}: {fix}")


class ExpressionFrames:
    """The 51-d [jaw_open, exp_0..49] vector of a frame, as a 1-channel length-51 signal.

    ``clips`` is ``Pairs.clips``: each clip's sequence must hold its ``last_frame``."""

    def __init__(self, clips: pd.DataFrame, tables: list[str | Path]):
        found = {}
        for path in tables:
            for key, rows in cd.read_expressions(path).groupby(CLIP_KEY):
                found[tuple(key)] = (rows.sort_values("frame"), path)
        self.sequences = []
        for key, last in zip(clips[CLIP_KEY].itertuples(index=False), clips.last_frame):
            fix = cd.rerun("expressions", key.actor)
            if tuple(key) not in found:
                raise ValueError(f"no expression sequence for clip {cd.clip_id(*key)}: {fix}")
            rows, path = found[tuple(key)]
            if not np.array_equal(rows.frame.to_numpy(), np.arange(len(rows))):
                raise ValueError(f"{path}: the frames of clip {cd.clip_id(*key)} are not 0..{len(rows) - 1}: {fix}")
            _check_length(str(path), key, len(rows), last, fix)
            self.sequences.append(cd.expression_view51(rows))

    def __call__(self, clip: np.ndarray, frame: np.ndarray) -> torch.Tensor:
        rows = [self.sequences[c][int(f)] for c, f in zip(clip, frame)]
        return torch.from_numpy(np.stack(rows))[:, None, :]


class ImageFrames:
    """Aligned face crops: a ``crop`` fraction cut from every side (NED: 35 px of 256), resized
    to ``size`` and normalised with ImageNet statistics, read from the memory-mapped stacks.

    ``clips`` is ``Pairs.clips``: each clip's stack must hold its ``last_frame``."""

    def __init__(self, clips: pd.DataFrame, shard_tables: list[str | Path], size: int, crop: float):
        shards = pd.concat([cd.read_table(p, [*CLIP_KEY, "directory"], cd.rerun("shard")) for p in shard_tables], ignore_index=True)
        located = clips[CLIP_KEY + ["last_frame"]].merge(shards[CLIP_KEY + ["directory"]], on=CLIP_KEY, how="left")
        if located.directory.isna().any():
            key = located[located.directory.isna()].iloc[0]
            raise ValueError(f"no preprocessed faces for clip {cd.clip_id(*key[CLIP_KEY])}: "
                             f"{cd.rerun('shard', f'{key.actor}/{key.emotion}')}")
        self.stacks = []
        for row in located.itertuples(index=False):
            fix = cd.rerun("shard", f"{row.actor}/{row.emotion}")
            stack = cd.read_clip_stack(row.directory, cd.FACES_ALIGNED, fix)
            key = (row.actor, row.emotion, row.level, row.clip)
            _check_length(str(cd.stack_path(row.directory, cd.FACES_ALIGNED)), key, len(stack), row.last_frame, fix)
            self.stacks.append(stack)
        self.size, self.crop = size, crop

    def __call__(self, clip: np.ndarray, frame: np.ndarray) -> torch.Tensor:
        images = np.stack([self.stacks[c][int(f)] for c, f in zip(clip, frame)])
        return metric_images(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, self.size, self.crop)


def metric_images(faces: torch.Tensor, size: int, crop: float) -> torch.Tensor:
    """The image metric's input from (N, 3, S, S) aligned faces in [0, 1]: ``crop`` of the side
    cut from every edge, resized to ``size``, ImageNet-normalised. Differentiable, so the
    renderer's SCMC loss feeds its generated faces through exactly what the metric trained on."""
    side = faces.shape[-1]
    cut = int(round(crop * side))
    x = F.interpolate(faces[..., cut:side - cut, cut:side - cut], size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std

"""Same-sentence neutral/emotional clip pairs, aligned frame by frame by DTW on MFCCs
(method.md §3.1), into one Parquet table of (neutral frame, emotional frame) pairs.

MEAD's neutral clip 00k and emotional clip 00k say the same sentence (disgusted uses 027+k
when those clips exist); the pairing comes from the config (``scmc.pairs``, ``scmc.clip_offsets``).
A pair is held out from training (split ``val``) when either clip's id is one of the config's
``test_clips``, the ids every trainer excludes.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scmcl.corpus.layout import clip_name
from scmcl.io.media import read_audio
from scmcl.scmc.dtw import dtw_path
from scmcl.scmc.mfcc import mfcc_per_frame

log = logging.getLogger(__name__)

COLUMNS = ("actor", "emotion", "level", "neutral_clip", "clip", "pair", "split", "step", "neutral_frame", "emotion_frame")


@dataclass(frozen=True)
class Pairing:
    """Config ``scmc.pairs``, ``scmc.clip_offsets`` and ``test_clips``."""

    count: int                           # neutral clips 001..count take part
    offsets: tuple[tuple[str, int], ...]  # (emotion, clip-id offset), e.g. ("disgusted", 27)
    test_clips: tuple[str, ...]           # clip ids no trainer sees

    def partner(self, emotion: str, neutral_clip: str, available: set[str]) -> str | None:
        """The emotional clip saying the neutral clip's sentence, or None when it is missing."""
        offset = dict(self.offsets).get(emotion, 0)
        for candidate in (clip_name(int(neutral_clip) + offset), neutral_clip):
            if candidate in available:
                return candidate
        return None


def clip_pairs(manifest: pd.DataFrame, pairing: Pairing) -> list[tuple]:
    """(neutral manifest row, emotional manifest row, pair index, split) per configured pair."""
    rows = []
    for actor, clips in manifest.groupby("actor", sort=True):
        neutral = clips[clips.emotion == "neutral"].sort_values("clip").head(pairing.count)
        if neutral.empty:
            raise ValueError(f"actor {actor} has no neutral clips in the manifest: neutral is the pairing anchor")
        for (emotion, level), emo in clips[clips.emotion != "neutral"].groupby(["emotion", "level"], sort=True):
            by_id = {row.clip: row for row in emo.itertuples(index=False)}
            for index, src in enumerate(neutral.itertuples(index=False)):
                dst_id = pairing.partner(emotion, src.clip, set(by_id))
                if dst_id is None:
                    log.warning("%s: no %s level_%d clip for neutral %s, pair skipped", actor, emotion, level, src.clip)
                    continue
                split = "val" if {src.clip, dst_id} & set(pairing.test_clips) else "train"
                rows.append((src, by_id[dst_id], index, split))
    if not rows:
        raise ValueError("no neutral/emotional clip pairs: the manifest needs neutral and emotional clips of the same actor")
    return rows


def _features(row, sample_rate: int) -> np.ndarray:
    wave = read_audio(row.audio, sample_rate)
    return mfcc_per_frame(wave, sample_rate, float(row.fps), int(row.frames))


def align_pairs(manifest: pd.DataFrame, pairing: Pairing, sample_rate: int, workers: int = 2) -> pd.DataFrame:
    """DTW-align every configured pair; one MFCC frame per video frame at each clip's fps."""
    pairs = clip_pairs(manifest, pairing)
    clips = {row.audio: row for pair in pairs for row in pair[:2]}
    with ThreadPoolExecutor(workers) as pool:  # ffmpeg decodes run in subprocesses
        features = dict(zip(clips, pool.map(lambda row: _features(row, sample_rate), clips.values())))
    parts = []
    for src, dst, index, split in pairs:
        path_src, path_dst = dtw_path(features[src.audio], features[dst.audio])
        parts.append(pd.DataFrame({
            "actor": src.actor, "emotion": dst.emotion, "level": int(dst.level), "neutral_clip": src.clip,
            "clip": dst.clip, "pair": index, "split": split, "step": np.arange(len(path_src)),
            "neutral_frame": path_src, "emotion_frame": path_dst}))
    table = pd.concat(parts, ignore_index=True)
    return table[list(COLUMNS)]

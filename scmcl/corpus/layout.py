"""MEAD's directory layout, the one every dataset (real or synthetic) is read through."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple

from scmcl.config import MEAD_EMOTIONS

#: Intensity scale of MEAD's levels for the synthetic emotion offsets (level_3 = full).
LEVEL_SCALE = {1: 0.4, 2: 0.7, 3: 1.0}


class ClipKey(NamedTuple):
    """One clip of one actor: MEAD's (emotion, level, clip id)."""

    emotion: str
    level: int
    clip: str


def clip_name(index: int) -> str:
    """MEAD's three-digit clip ids, 1-based: 1 → '001'."""
    return f"{index:03d}"


def levels_of(emotion: str, levels: Iterable[int]) -> list[int]:
    """Neutral exists only at level_1 in MEAD; other emotions use the configured levels."""
    return [1] if emotion == "neutral" else sorted(levels)


def clip_keys(emotions: Iterable[str], levels: Iterable[int], n_clips: int) -> list[ClipKey]:
    """All clips of one actor in MEAD's emotion order, then level, then clip id."""
    emotions = sorted(emotions, key=MEAD_EMOTIONS.index)
    return [ClipKey(e, lv, clip_name(i)) for e in emotions for lv in levels_of(e, levels) for i in range(1, n_clips + 1)]


def video_path(root: str | Path, actor: str, key: ClipKey) -> Path:
    return Path(root) / actor / "video" / "front" / key.emotion / f"level_{key.level}" / f"{key.clip}.mp4"


def audio_path(root: str | Path, actor: str, key: ClipKey) -> Path:
    return Path(root) / actor / "audio" / key.emotion / f"level_{key.level}" / f"{key.clip}.m4a"


def groundtruth_path(root: str | Path, actor: str, key: ClipKey) -> Path:
    """Synthetic corpus only: the per-frame ground truth next to MEAD's video/audio folders."""
    return Path(root) / actor / "groundtruth" / key.emotion / f"level_{key.level}" / f"{key.clip}.parquet"

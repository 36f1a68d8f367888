"""Clip manifests: one row per clip of a MEAD-layout dataset root, read from the files.

The manifest is how a real dataset enters the workflow: every clip's paths plus what ffprobe
says about it (fps, decoded frame count, duration, sample rate), so nothing downstream assumes
a frame rate. Scanning only reads: nothing is ever written into the dataset tree.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Collection, Iterable, NamedTuple

import pandas as pd

from scmcl.config import MEAD_EMOTIONS
from scmcl.corpus.layout import ClipKey, audio_path
from scmcl.io.media import probe

COLUMNS = ("actor", "emotion", "level", "clip", "video", "audio", "audio_source",
           "fps", "frames", "duration", "sample_rate")
DTYPES = {"level": "int64", "fps": "float64", "frames": "int64", "duration": "float64", "sample_rate": "int64"}
EXPECTED = "<actor>/video/front/<emotion>/level_<n>/<clip>.mp4 (audio: <actor>/audio/<emotion>/level_<n>/<clip>.m4a)"

_LEVEL_DIR = re.compile(r"level_([0-9]+)")
_CLIP_ID = re.compile(r"[0-9]+")


class ManifestError(ValueError):
    """A dataset root does not hold the clips it was expected to."""


class ClipFiles(NamedTuple):
    """Where one clip's video and audio live. ``audio_source`` is the separate audio file's
    format ('m4a' or 'wav'), or 'video' when the audio is the video's own track."""

    actor: str
    key: ClipKey
    video: Path
    audio: Path
    audio_source: str


def clip_order(clip: ClipFiles) -> tuple:
    """Actor, MEAD's emotion order, level, clip id: the one order every manifest uses."""
    return clip.actor, MEAD_EMOTIONS.index(clip.key.emotion), clip.key.level, int(clip.key.clip), clip.key.clip


def emotion_filter(emotions: Iterable[str] | None) -> tuple[str, ...]:
    """The requested emotions (all of MEAD's by default); an unknown name is an error, not a no-op."""
    chosen = tuple(MEAD_EMOTIONS) if emotions is None else tuple(emotions)
    unknown = sorted(set(chosen) - set(MEAD_EMOTIONS))
    if unknown:
        raise ManifestError(f"unknown emotion(s) {', '.join(unknown)}: MEAD's are {', '.join(MEAD_EMOTIONS)}")
    return chosen


def selected(key: ClipKey, emotions: Collection[str], levels: Collection[int] | None) -> bool:
    """Whether a clip passes the filters; neutral exists only at level_1, whatever ``levels`` says."""
    if key.emotion not in emotions:
        return False
    if key.emotion == "neutral":
        return key.level == 1
    return levels is None or key.level in levels


def check_outside(root: str | os.PathLike, path: str | os.PathLike) -> None:
    """Refuse an output inside the dataset tree: inputs are read-only."""
    root, path = Path(root).resolve(), Path(path).resolve()
    if path == root or path.is_relative_to(root):
        raise ManifestError(f"refusing to write {path}: it is inside the read-only dataset tree {root}")


def _actor_names(root: Path, actors: Iterable[str] | None) -> list[str]:
    """The requested actors, each checked to exist, or every folder that has ``video/front``."""
    if not root.is_dir():
        raise ManifestError(f"dataset root {root} does not exist: expected {EXPECTED} under it")
    if actors is None:
        found = sorted(p.name for p in root.iterdir() if (p / "video" / "front").is_dir())
        if not found:
            raise ManifestError(f"no MEAD-layout actor folders under {root}: expected {EXPECTED}")
        return found
    names = sorted(set(actors))
    missing = [str(root / a / "video" / "front") for a in names if not (root / a / "video" / "front").is_dir()]
    if missing:
        raise ManifestError(f"actor folder(s) not found: {', '.join(missing)} (expected {EXPECTED} under {root})")
    return names


def _clip_videos(level_dir: Path) -> list[Path]:
    """Numbered ``.mp4`` files only: stray files, hidden files and partial writes are not clips."""
    return [p for p in level_dir.glob("*.mp4") if _CLIP_ID.fullmatch(p.stem) and p.is_file()]


def _audio_of(root: Path, actor: str, key: ClipKey, video: Path) -> tuple[Path, str]:
    """MEAD's separate ``.m4a`` (or a ``.wav`` beside it), else the video's own audio track."""
    m4a = audio_path(root, actor, key)
    for candidate in (m4a, m4a.with_suffix(".wav")):
        if candidate.is_file():
            return candidate, candidate.suffix[1:]
    return video, "video"


def _actor_clips(root: Path, actor: str, emotions: tuple[str, ...],
                 levels: Collection[int] | None) -> list[ClipFiles]:
    """Walk only the requested emotions' folders, so unknown ones (``contempt``) are never read."""
    clips = []
    for emotion in emotions:
        emotion_dir = root / actor / "video" / "front" / emotion
        if not emotion_dir.is_dir():
            continue
        for level_dir in emotion_dir.iterdir():
            match = _LEVEL_DIR.fullmatch(level_dir.name)
            if not match or not level_dir.is_dir():
                continue
            for video in _clip_videos(level_dir):
                key = ClipKey(emotion, int(match[1]), video.stem)
                if selected(key, emotions, levels):
                    clips.append(ClipFiles(actor, key, video, *_audio_of(root, actor, key, video)))
    return clips


def _probe_clip(clip: ClipFiles) -> dict:
    """One manifest row; a clip without frames or audio is an error naming its files."""
    info = probe(clip.video)
    if not info.fps or not info.frames:
        raise ManifestError(f"{clip.video}: no decodable video frames")
    sample_rate = info.sample_rate if clip.audio == clip.video else probe(clip.audio).sample_rate
    if sample_rate is None:
        raise ManifestError(f"{clip.audio}: no audio track (clip {clip.actor} {clip.key.emotion} "
                            f"level_{clip.key.level} {clip.key.clip} needs its speech)")
    return {
        "actor": clip.actor, "emotion": clip.key.emotion, "level": clip.key.level, "clip": clip.key.clip,
        "video": str(clip.video), "audio": str(clip.audio), "audio_source": clip.audio_source,
        "fps": info.fps, "frames": info.frames,
        "duration": info.video_duration if info.video_duration is not None else info.frames / info.fps,
        "sample_rate": sample_rate,
    }


def clip_table(clips: list[ClipFiles], workers: int | None = None) -> pd.DataFrame:
    """Probe every clip in a thread pool (each probe is an ffprobe process) into the manifest,
    in ``clip_order``."""
    clips = sorted(clips, key=clip_order)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        rows = list(pool.map(_probe_clip, clips))
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(DTYPES)


def scan_mead(root: str | os.PathLike, actors: Iterable[str] | None = None, emotions: Iterable[str] | None = None,
              levels: Iterable[int] | None = None, workers: int | None = None) -> pd.DataFrame:
    """The clip manifest of a MEAD-layout root (columns ``COLUMNS``), restricted to the given
    actors/emotions/levels (all found by default; neutral only at level_1). Paths are absolute.
    An actor that is missing or has no matching clip is an error naming the folder."""
    root = Path(root).absolute()
    chosen = emotion_filter(emotions)
    levels = None if levels is None else sorted({int(level) for level in levels})
    clips = []
    for actor in _actor_names(root, actors):
        found = _actor_clips(root, actor, chosen, levels)
        if not found:
            raise ManifestError(f"no clips under {root / actor / 'video' / 'front'} for emotions {', '.join(chosen)} "
                                f"and levels {levels or 'any'}: expected {EXPECTED}")
        clips.extend(found)
    return clip_table(clips, workers)

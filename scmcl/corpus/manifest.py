"""Clip manifests: one row per clip of a MEAD-layout dataset root, read from the files.

The manifest is how a real dataset enters the workflow: every clip's paths plus what ffprobe
says about it (fps, decoded frame count, duration, sample rate), so nothing downstream assumes
a frame rate. Scanning only reads: nothing is ever written into the dataset tree.

Nothing is dropped silently: a path that looks like data but is not read (an emotion folder in
the wrong case, a stray file) is counted in one warning, and a clip whose files are cut short or
whose video and audio lengths disagree is an error naming it.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Collection, Iterable, NamedTuple

import pandas as pd

from scmcl.config import MEAD_EMOTIONS
from scmcl.corpus.layout import ClipKey, audio_path
from scmcl.io.media import MediaError, MediaInfo, probe

log = logging.getLogger(__name__)

COLUMNS = ("actor", "emotion", "level", "clip", "video", "audio", "audio_source",
           "fps", "frames", "duration", "sample_rate")
DTYPES = {"level": "int64", "fps": "float64", "frames": "int64", "duration": "float64", "sample_rate": "int64"}
EXPECTED = "<actor>/video/front/<emotion>/level_<n>/<clip>.mp4 (audio: <actor>/audio/<emotion>/level_<n>/<clip>.m4a)"

_LEVEL_DIR = re.compile(r"level_([0-9]+)")
_CLIP_ID = re.compile(r"[0-9]+")
#: Frames by which decoded and listed lengths may differ (encoder padding, AAC's priming frame);
#: two frames is 67-80 ms at MEAD's and RAVDESS's rates, far below a cut-short take.
TOLERANCE_FRAMES = 2
_SHOWN_ERRORS = 3


class ManifestError(ValueError):
    """A dataset root does not hold the clips it was expected to."""


class Skipped:
    """Paths a scan passed over, counted by reason, for one warning instead of silence."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, Path] = {}

    def add(self, reason: str, path: Path) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, path)

    def report(self) -> None:
        """Log one warning: the total, then each reason with its count and a first example."""
        if not self.counts:
            return
        groups = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        parts = [f"{n} {reason} (e.g. {self.examples[reason].relative_to(self.root)})" for reason, n in groups]
        log.warning("skipped %d paths under %s: %s", self.counts.total(), self.root, "; ".join(parts))


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


def _actor_names(root: Path, actors: Iterable[str] | None, skipped: Skipped) -> list[str]:
    """The requested actors, each checked to exist, or every folder that has ``video/front``."""
    if not root.is_dir():
        raise ManifestError(f"dataset root {root} does not exist: expected {EXPECTED} under it")
    if actors is None:
        found = []
        for path in sorted(root.iterdir()):
            if (path / "video" / "front").is_dir():
                found.append(path.name)
            elif path.is_dir() and not path.name.startswith("."):
                skipped.add("folder without video/front (not an actor)", path)
        if not found:
            raise ManifestError(f"no MEAD-layout actor folders under {root}: expected {EXPECTED}")
        return found
    names = sorted(set(actors))
    missing = [str(root / a / "video" / "front") for a in names if not (root / a / "video" / "front").is_dir()]
    if missing:
        raise ManifestError(f"actor folder(s) not found: {', '.join(missing)} (expected {EXPECTED} under {root})")
    return names


def _visible(folder: Path) -> list[Path]:
    """A folder's entries without hidden ones (``.DS_Store``, partial writes): never data."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _audio_of(root: Path, actor: str, key: ClipKey, video: Path) -> tuple[Path, str]:
    """MEAD's separate ``.m4a`` (or a ``.wav`` beside it), else the video's own audio track."""
    m4a = audio_path(root, actor, key)
    for candidate in (m4a, m4a.with_suffix(".wav")):
        if candidate.is_file():
            return candidate, candidate.suffix[1:]
    return video, "video"


def _emotion_dirs(front: Path, emotions: tuple[str, ...], skipped: Skipped) -> list[tuple[str, Path]]:
    """The requested emotions' folders; a MEAD emotion left out by the filter is not reported,
    anything else under ``front`` is."""
    chosen = []
    for path in _visible(front):
        name = path.name
        if not path.is_dir():
            skipped.add("file among the emotion folders", path)
        elif name in emotions:
            chosen.append((name, path))
        elif name in MEAD_EMOTIONS:
            continue
        elif name.lower() in emotions:
            skipped.add(f"emotion folder '{name}' (MEAD uses lower case: rename to '{name.lower()}')", path)
        elif name.lower() not in MEAD_EMOTIONS:
            skipped.add(f"emotion folder '{name}' (not one of {', '.join(MEAD_EMOTIONS)})", path)
    return chosen


def _actor_clips(root: Path, actor: str, emotions: tuple[str, ...],
                 levels: Collection[int] | None, skipped: Skipped) -> list[ClipFiles]:
    """Walk only the requested emotions' folders, so unknown ones (``contempt``) are never read."""
    clips = []
    for emotion, emotion_dir in _emotion_dirs(root / actor / "video" / "front", emotions, skipped):
        for level_dir in _visible(emotion_dir):
            match = _LEVEL_DIR.fullmatch(level_dir.name)
            if not match or not level_dir.is_dir():
                skipped.add("not a level_<n> folder", level_dir)
                continue
            level = int(match[1])
            if emotion == "neutral" and level != 1:
                skipped.add(f"neutral folder '{level_dir.name}' (MEAD's neutral is level_1 only)", level_dir)
                continue
            if emotion != "neutral" and levels is not None and level not in levels:
                continue
            for video in _visible(level_dir):
                if not (_CLIP_ID.fullmatch(video.stem) and video.suffix == ".mp4" and video.is_file()):
                    skipped.add("not a clip name (<digits>.mp4)", video)
                    continue
                key = ClipKey(emotion, level, video.stem)
                clips.append(ClipFiles(actor, key, video, *_audio_of(root, actor, key, video)))
    return clips


def _check_decoded(path: Path, what: str, decoded: int | None, listed: int | None) -> None:
    """A file whose header lists more frames than decode was cut short (or is corrupt)."""
    if decoded is not None and listed is not None and decoded < listed - TOLERANCE_FRAMES:
        raise ManifestError(f"{path}: only {decoded} of the {listed} {what} frames its header lists decode: the "
                            f"file is truncated or corrupt; re-extract or replace it")


def _listed_frames(info: MediaInfo) -> int | None:
    """The container's video frame count, or its duration × rate when it lists none."""
    if info.header_frames is not None:
        return info.header_frames
    return round(info.video_duration * info.fps) if info.video_duration is not None else None


def _probe_clip(clip: ClipFiles) -> dict:
    """One manifest row; a clip without frames or audio, cut short, or whose video and audio
    lengths differ by more than ``TOLERANCE_FRAMES`` is an error naming its files."""
    info = probe(clip.video)
    if not info.fps or not info.frames:
        raise ManifestError(f"{clip.video}: no decodable video frames")
    _check_decoded(clip.video, "video", info.frames, _listed_frames(info))
    sound = info if clip.audio == clip.video else probe(clip.audio)
    if sound.sample_rate is None:
        raise ManifestError(f"{clip.audio}: no audio track (clip {clip.actor} {clip.key.emotion} "
                            f"level_{clip.key.level} {clip.key.clip} needs its speech)")
    _check_decoded(clip.audio, "audio", sound.audio_frames, sound.audio_header_frames)
    if sound.audio_duration is None:
        raise ManifestError(f"{clip.audio}: no audio duration, so its length cannot be checked against "
                            f"{clip.video}: re-extract it as .m4a or .wav")
    seconds = info.frames / info.fps
    if abs(seconds - sound.audio_duration) > TOLERANCE_FRAMES / info.fps:
        track = "its audio track" if clip.audio == clip.video else f"its audio {clip.audio}"
        raise ManifestError(
            f"{clip.video}: video lasts {seconds:.2f} s ({info.frames} frames at {info.fps:g} fps) but {track} "
            f"lasts {sound.audio_duration:.2f} s, more than {TOLERANCE_FRAMES} frames apart: re-extract or "
            f"replace the clip, or move it out of the dataset tree")
    return {
        "actor": clip.actor, "emotion": clip.key.emotion, "level": clip.key.level, "clip": clip.key.clip,
        "video": str(clip.video), "audio": str(clip.audio), "audio_source": clip.audio_source,
        "fps": info.fps, "frames": info.frames,
        "duration": info.video_duration if info.video_duration is not None else seconds,
        "sample_rate": sound.sample_rate,
    }


def _row_or_error(clip: ClipFiles) -> dict | Exception:
    try:
        return _probe_clip(clip)
    except (ManifestError, MediaError) as err:
        return err


def clip_table(clips: list[ClipFiles], workers: int | None = None) -> pd.DataFrame:
    """Probe every clip in a thread pool (each probe is an ffprobe process) into the manifest,
    in ``clip_order``. Every clip is checked before failing, so one error lists all bad clips."""
    clips = sorted(clips, key=clip_order)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        rows = list(pool.map(_row_or_error, clips))
    errors = [str(row) for row in rows if isinstance(row, Exception)]
    if errors:
        more = f" (+{len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
        raise ManifestError(f"{len(errors)} of {len(clips)} clips cannot be used: "
                            + "; ".join(errors[:_SHOWN_ERRORS]) + more)
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(DTYPES)


def check_manifest_output(root: str | os.PathLike, out: str | os.PathLike) -> None:
    """Before a scan: the manifest must go outside the dataset tree, to a file name, not a folder."""
    check_outside(root, out)
    out = Path(out)
    if out.is_dir():
        raise ManifestError(f"--out {out} is a directory: give the manifest's file name, e.g. {out / 'manifest.parquet'}")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ManifestError(f"--out {out}: {parent} is a file, not a directory")


def scan_mead(root: str | os.PathLike, actors: Iterable[str] | None = None, emotions: Iterable[str] | None = None,
              levels: Iterable[int] | None = None, workers: int | None = None) -> pd.DataFrame:
    """The clip manifest of a MEAD-layout root (columns ``COLUMNS``), restricted to the given
    actors/emotions/levels (all found by default; neutral only at level_1). Paths are absolute.
    An actor that is missing or has no matching clip is an error naming the folder; paths passed
    over are counted in one warning."""
    root = Path(root).absolute()
    chosen = emotion_filter(emotions)
    levels = None if levels is None else sorted({int(level) for level in levels})
    skipped = Skipped(root)
    clips = []
    for actor in _actor_names(root, actors, skipped):
        found = _actor_clips(root, actor, chosen, levels, skipped)
        if not found:
            skipped.report()
            raise ManifestError(f"no clips under {root / actor / 'video' / 'front'} for emotions {', '.join(chosen)} "
                                f"and levels {levels or 'any'}: expected {EXPECTED}")
        clips.extend(found)
    skipped.report()
    return clip_table(clips, workers)

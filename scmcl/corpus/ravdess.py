"""RAVDESS mapped onto MEAD's layout (method.md §1.3), as a manifest and optionally as symlinks.

RAVDESS names each file ``MM-VV-EE-II-SS-RR-AA`` (modality, vocal channel, emotion, intensity,
statement, repetition, actor) inside ``Actor_XX/`` folders. SCMCL's README says the tree was
rearranged into MEAD's layout but ships no converter; here the mapping is:

- speech only (vocal channel 01); calm has no MEAD counterpart and is dropped;
- emotions renamed to MEAD's folders (``fearful`` → ``fear``, ``disgust`` → ``disgusted``);
- intensity normal → ``level_1``, strong → ``level_3`` (neutral is normal only), so a config's
  ``levels`` picks intensities as it does on MEAD;
- clip id = 2·(statement − 1) + repetition, three digits: '001' statement 1 repetition 1,
  '002' statement 1 rep. 2, '003' statement 2 rep. 1, '004' statement 2 rep. 2. The same
  statement/repetition has the same id in every emotion and level, so neutral and emotional
  clips pair by id as in MEAD (the same sentence);
- video from the audio-visual file (01), else the video-only file (02); audio from the matching
  audio-only file (03) when present, else the audio-visual file's own track. A clip with no
  audio at all (a lone video-only file) is left out.

Song, calm and video-only twins of audio-visual files are left out by design; anything else
passed over (a malformed name, a non-media file, a lone video-only file) is counted in one warning.

Nothing is written into the RAVDESS tree: the manifest points at the original files, and the
optional MEAD-layout tree holds symlinks to them, never copies.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from scmcl.corpus.layout import ClipKey, audio_path, clip_name, video_path
from scmcl.corpus.manifest import ClipFiles, ManifestError, Skipped, check_outside, clip_table, emotion_filter, selected
from scmcl.io.atomic import atomic_path

AUDIO_VISUAL, VIDEO_ONLY, AUDIO_ONLY = 1, 2, 3
SPEECH = 1
EMOTIONS = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fearful", 7: "disgust", 8: "surprised"}
TO_MEAD = {"neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "angry",
           "fearful": "fear", "disgust": "disgusted", "surprised": "surprised"}
LEVEL_OF_INTENSITY = {1: 1, 2: 3}
EXPECTED = "Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4 (audio-only files .wav)"
MEDIA_SUFFIXES = (".mp4", ".wav", ".m4a")

_ACTOR_DIR = re.compile(r"Actor_[0-9]+")
_NAME = re.compile(r"([0-9]{2})-([0-9]{2})-([0-9]{2})-([0-9]{2})-([0-9]{2})-([0-9]{2})-([0-9]{2})")


@dataclass(frozen=True)
class RavdessCode:
    """The seven fields of a RAVDESS file name; ``emotion`` is RAVDESS's own name."""

    modality: int
    vocal_channel: int
    emotion: str
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def actor_name(self) -> str:
        return f"Actor_{self.actor:02d}"

    @property
    def key(self) -> ClipKey | None:
        """The MEAD clip this file belongs to; None for calm, which MEAD lacks."""
        emotion = TO_MEAD.get(self.emotion)
        if emotion is None:
            return None
        clip = clip_name(2 * (self.statement - 1) + self.repetition)
        return ClipKey(emotion, LEVEL_OF_INTENSITY[self.intensity], clip)


def parse_ravdess_name(name: str | os.PathLike) -> RavdessCode | None:
    """Decode a RAVDESS file name (with or without its suffix); None when it is not a valid code."""
    match = _NAME.fullmatch(Path(name).stem)
    if not match:
        return None
    modality, vocal, emotion, intensity, statement, repetition, actor = map(int, match.groups())
    valid = (modality in (1, 2, 3) and vocal in (1, 2) and emotion in EMOTIONS and intensity in (1, 2)
             and statement in (1, 2) and repetition in (1, 2) and actor >= 1 and not (emotion == 1 and intensity == 2))
    if not valid:
        return None
    return RavdessCode(modality, vocal, EMOTIONS[emotion], intensity, statement, repetition, actor)


def _actor_dirs(root: Path, actors: Iterable[str] | None, skipped: Skipped) -> list[Path]:
    """The requested ``Actor_XX`` folders, each checked to exist, or all of them."""
    if not root.is_dir():
        raise ManifestError(f"RAVDESS root {root} does not exist: expected {EXPECTED} under it")
    if actors is None:
        found = []
        for path in sorted(root.iterdir()):
            if _ACTOR_DIR.fullmatch(path.name) and path.is_dir():
                found.append(path)
            elif path.is_dir() and not path.name.startswith("."):
                skipped.add("folder not named Actor_XX", path)
        return found
    missing = [str(root / a) for a in sorted(set(actors)) if not (root / a).is_dir()]
    if missing:
        raise ManifestError(f"actor folder(s) not found: {', '.join(missing)} (expected {EXPECTED} under {root})")
    return [root / a for a in sorted(set(actors))]


def _speech_files(actor_dir: Path, skipped: Skipped) -> Iterator[tuple[RavdessCode, Path]]:
    """The speech media files of one actor folder; song is left out, other files are counted as
    skipped, a misfiled one is an error."""
    for path in sorted(actor_dir.iterdir()):
        if path.name.startswith("."):
            continue
        if path.suffix.lower() not in MEDIA_SUFFIXES or not path.is_file():
            skipped.add(f"not a media file ({', '.join(MEDIA_SUFFIXES)})", path)
            continue
        code = parse_ravdess_name(path.name)
        if code is None:
            skipped.add("not a valid RAVDESS file name (MM-VV-EE-II-SS-RR-AA)", path)
            continue
        if code.vocal_channel != SPEECH:
            continue
        if code.actor_name != actor_dir.name:
            raise ManifestError(f"{path} names actor {code.actor:02d} but lies in {actor_dir.name}/")
        yield code, path


def _by_clip(actor_dirs: list[Path], skipped: Skipped) -> dict[tuple[str, ClipKey], dict[int, Path]]:
    """Group files by MEAD clip, one path per modality; two files with one code are an error."""
    groups: dict[tuple[str, ClipKey], dict[int, Path]] = {}
    for actor_dir in actor_dirs:
        for code, path in _speech_files(actor_dir, skipped):
            if code.key is None:
                continue
            files = groups.setdefault((code.actor_name, code.key), {})
            if code.modality in files:
                raise ManifestError(f"two files with one RAVDESS code: {files[code.modality]} and {path}")
            files[code.modality] = path
    return groups


def _choose(actor: str, key: ClipKey, files: dict[int, Path], skipped: Skipped) -> ClipFiles | None:
    """Prefer the audio-visual video; take audio from the audio-only file when there is one."""
    video = files.get(AUDIO_VISUAL) or files.get(VIDEO_ONLY)
    if video is None:
        skipped.add("audio-only file without its video (01-... or 02-...)", files[AUDIO_ONLY])
        return None
    if AUDIO_ONLY in files:
        audio = files[AUDIO_ONLY]
        return ClipFiles(actor, key, video, audio, audio.suffix[1:].lower())
    if AUDIO_VISUAL in files:
        return ClipFiles(actor, key, video, video, "video")
    skipped.add("video-only file without its audio-only (03-...) or audio-visual (01-...) twin", video)
    return None


def ravdess_manifest(root: str | os.PathLike, actors: Iterable[str] | None = None,
                     emotions: Iterable[str] | None = None, levels: Iterable[int] | None = None,
                     workers: int | None = None) -> pd.DataFrame:
    """The manifest of a RAVDESS root in MEAD's terms: ``scan_mead``'s columns plus ``source``,
    the original video file. Actors keep RAVDESS's folder names (``Actor_01``)."""
    root = Path(root).absolute()
    chosen = emotion_filter(emotions)
    levels = None if levels is None else sorted({int(level) for level in levels})
    skipped = Skipped(root)
    groups = _by_clip(_actor_dirs(root, actors, skipped), skipped)
    clips = [clip for (actor, key), files in groups.items()
             if selected(key, chosen, levels) and (clip := _choose(actor, key, files, skipped)) is not None]
    skipped.report()
    if not clips:
        raise ManifestError(f"no RAVDESS speech clips with video and audio under {root} for emotions "
                            f"{', '.join(chosen)} and levels {levels or 'any'}: expected {EXPECTED}")
    table = clip_table(clips, workers)
    table["source"] = table["video"]
    return table


def _symlink(target: Path, link: Path) -> None:
    """Point ``link`` at ``target`` (replacing an older link in one rename); never replace a real file."""
    if link.exists() and not link.is_symlink():
        raise ManifestError(f"{link} exists and is not a symlink: not replacing it")
    with atomic_path(link) as tmp:  # its temporary name, which a later run clears if a kill leaves it
        tmp.unlink()
        tmp.symlink_to(target)


def _dataset_root(manifest: pd.DataFrame) -> Path:
    """The folder holding the manifest's ``Actor_XX`` folders."""
    return Path(os.path.commonpath([str(Path(p).parent.parent) for p in manifest["source"]]))


def link_ravdess(manifest: pd.DataFrame, out_root: str | os.PathLike) -> pd.DataFrame:
    """Build a MEAD-layout tree of symlinks to the originals under ``out_root`` (video as
    ``<clip>.mp4``; a separate audio file under ``audio/`` with its own suffix) and return the
    manifest with ``video``/``audio`` pointing at the links (``source`` unchanged)."""
    out_root = Path(out_root).absolute()
    check_outside(_dataset_root(manifest), out_root)
    videos, audios = [], []
    for row in manifest.itertuples(index=False):
        key = ClipKey(row.emotion, int(row.level), row.clip)
        video = video_path(out_root, row.actor, key)
        _symlink(Path(row.video), video)
        audio = video
        if row.audio_source != "video":
            audio = audio_path(out_root, row.actor, key).with_suffix(Path(row.audio).suffix)
            _symlink(Path(row.audio), audio)
        videos.append(str(video))
        audios.append(str(audio))
    return manifest.assign(video=videos, audio=audios)

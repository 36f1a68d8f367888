"""Video and audio files through the ffmpeg binary (Debian's ``ffmpeg``/``ffprobe``).

Frames are uint8 RGB arrays (T,H,W,3); audio is float32 mono. Every writer publishes its
file atomically, so a killed job never leaves a truncated video under the final name.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from scmcl.io.atomic import atomic_path


class MediaError(RuntimeError):
    """A video/audio file could not be read or written."""


def _require_ffmpeg() -> None:
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise MediaError(f"'{tool}' not found on PATH: install Debian's ffmpeg (apt-get install ffmpeg) or run `make install`")


def _run(stream, what: str, path: Path, input_bytes: bytes | None = None) -> bytes:
    try:
        out, _ = stream.run(input=input_bytes, capture_stdout=True, capture_stderr=True, quiet=True)
    except ffmpeg.Error as err:
        raise MediaError(f"ffmpeg failed to {what} {path}: {_last_line(err.stderr)}") from None
    return out


def write_audio(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> None:
    """Encode mono float audio; the container follows the suffix (.m4a → AAC, .wav → PCM)."""
    _require_ffmpeg()
    path = Path(path)
    codec = {".m4a": "aac", ".mp4": "aac", ".wav": "pcm_s16le"}.get(path.suffix)
    if codec is None:
        raise MediaError(f"unsupported audio suffix for {path}: use .m4a or .wav")
    pcm = np.ascontiguousarray(np.clip(samples, -1.0, 1.0), dtype="<f4").tobytes()
    with atomic_path(path) as tmp:
        stream = ffmpeg.input("pipe:", format="f32le", ar=sample_rate, ac=1).output(
            str(tmp), acodec=codec, ar=sample_rate, ac=1, **({"audio_bitrate": "128k"} if codec == "aac" else {})
        )
        _run(stream.overwrite_output(), "write audio", path, pcm)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, audio: str | os.PathLike | None = None) -> None:
    """Encode RGB frames as H.264 (yuv420p) at ``fps``, muxing the audio file if given."""
    _require_ffmpeg()
    path = Path(path)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    t, h, w, c = frames.shape
    if c != 3 or h % 2 or w % 2:
        raise MediaError(f"{path}: frames must be RGB with even height/width, got {frames.shape}")
    rate = str(Fraction(fps).limit_denominator(1001))
    with atomic_path(path) as tmp:
        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=rate)
        streams = [video]
        opts = {"vcodec": "libx264", "pix_fmt": "yuv420p", "crf": 18, "preset": "veryfast", "movflags": "+faststart", "r": rate}
        if audio is not None:
            streams.append(ffmpeg.input(str(audio)).audio)
            # Re-encoding AAC adds another priming frame; copying keeps the track's duration.
            if Path(audio).suffix in (".m4a", ".mp4"):
                opts.update(acodec="copy")
            else:
                opts.update(acodec="aac", audio_bitrate="128k")
        stream = ffmpeg.output(*streams, str(tmp), **opts).overwrite_output()
        _run(stream, "write video", path, frames.tobytes())


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe reports about one file; durations in seconds (None when absent).

    ``frames``/``audio_frames`` are what decodes, ``header_frames``/``audio_header_frames`` what
    the container lists: a cut-short file keeps its header, so only the two together reveal it.
    """

    fps: float | None
    frames: int | None
    width: int | None
    height: int | None
    video_duration: float | None
    audio_duration: float | None
    sample_rate: int | None
    header_frames: int | None = None
    audio_frames: int | None = None
    audio_header_frames: int | None = None


def _last_line(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no message"


def _count(stream: dict | None, key: str) -> int | None:
    """A frame count field; None when ffprobe did not report it (absent or 'N/A')."""
    value = stream.get(key) if stream else None
    return int(value) if value is not None and str(value).isdigit() else None


def _rate(video: dict | None) -> float | None:
    """The average frame rate; None for no video or ffprobe's '0/0' (no timing, no frames)."""
    num, den = (int(part) for part in (video or {}).get("avg_frame_rate", "0/0").split("/"))
    return num / den if num and den else None


def probe(path: str | os.PathLike) -> MediaInfo:
    """Read stream metadata, decoding every frame to count it; a missing or unreadable file is
    a one-line error naming it."""
    _require_ffmpeg()
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"no such media file: {path}")
    try:
        info = ffmpeg.probe(str(path), count_frames=None)
    except ffmpeg.Error as err:
        reason = _last_line(err.stderr).removeprefix(f"{path}: ")
        raise MediaError(f"ffprobe cannot read {path} ({reason}): the file is truncated or not a video/audio file; "
                         f"re-extract or replace it") from None
    video = next((s for s in info["streams"] if s["codec_type"] == "video"), None)
    audio = next((s for s in info["streams"] if s["codec_type"] == "audio"), None)

    def _dur(stream):
        return float(stream["duration"]) if stream and "duration" in stream else None

    return MediaInfo(
        fps=_rate(video),
        # Decoded frames only: the header's count would hide a truncated file.
        frames=(_count(video, "nb_read_frames") or 0) if video else None,
        width=int(video["width"]) if video else None,
        height=int(video["height"]) if video else None,
        video_duration=_dur(video),
        audio_duration=_dur(audio),
        sample_rate=int(audio["sample_rate"]) if audio else None,
        header_frames=_count(video, "nb_frames"),
        audio_frames=_count(audio, "nb_read_frames"),
        audio_header_frames=_count(audio, "nb_frames"),
    )


def read_frames(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame as uint8 RGB (T,H,W,3); the count is what decodes, not the header's."""
    info = probe(path)
    if info.width is None:
        raise MediaError(f"{path} has no video stream")
    out = _run(ffmpeg.input(str(path)).output("pipe:", format="rawvideo", pix_fmt="rgb24"), "decode", Path(path))
    return np.frombuffer(out, np.uint8).reshape(-1, info.height, info.width, 3)


def read_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Decode the audio track to float32 mono at ``sample_rate``."""
    _require_ffmpeg()
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"no such media file: {path}")
    out = _run(ffmpeg.input(str(path)).output("pipe:", format="f32le", ac=1, ar=sample_rate), "decode audio of", path)
    return np.frombuffer(out, "<f4").astype(np.float32)

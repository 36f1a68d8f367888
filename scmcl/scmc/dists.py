"""Offline audio distances for pseudo-target retrieval (method.md §3.6).

Per actor, every ``seq_len``-frame window of every clip is embedded by the fine-tuned audio
encoder + attention (the audio of the window's last two frames), and the neutral×emotion L2
distance matrices are written. Format of ``<out_dir>`` (no pickle; everything memory-mappable):

- ``windows.parquet``: one row per window in enumeration order, columns ``emotion, level,
  clip, start`` (first frame), ``last`` (last frame = the embedded frame) and ``row``, the
  window's index within its emotion (the matrix row for neutral, the column otherwise);
- ``<emotion>.npy`` for each non-neutral emotion: float32 ``[n_neutral_windows, n_emotion_windows]``.

``enumerate_windows`` is the single definition of the window order; the manipulator's dataset
uses it too, so matrix indices and training windows cannot drift apart (the original broke on
``(i+1)·533`` in one place and ``(i+10)·533`` in another).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from scmcl.config import MEAD_EMOTIONS
from scmcl.io import clip_data as cd
from scmcl.io.atomic import atomic_path, write_parquet
from scmcl.io.clip_data import CLIP_KEY
from scmcl.scmc.data import AudioFrames, frame_audio_start, samples_per_frame
from scmcl.scmc.models import encode_frames, fuse

WINDOW_COLUMNS = ("emotion", "level", "clip", "start", "last", "row")


def enumerate_windows(clips: pd.DataFrame, sample_rate: int, seq_len: int, hop: int) -> pd.DataFrame:
    """Windows of one actor's clips: emotions in MEAD's order (neutral first), then level and
    clip id; ``start`` = 0, hop, … while the window fits the clip's frames and the audio of
    its last frame is complete at ``sample_rate``. ``clips`` needs ``emotion, level, clip,
    frames, fps, audio_samples``; each window keeps the ``clip_index`` (row label) of its clip."""
    order = clips.assign(_e=clips.emotion.map(MEAD_EMOTIONS.index)).sort_values(["_e", "level", "clip"])
    parts = []
    for index, clip in zip(order.index, order.itertuples(index=False)):
        starts = np.arange(0, int(clip.frames) - seq_len + 1, hop)
        last = starts + seq_len - 1
        audio_end = frame_audio_start(last, sample_rate, float(clip.fps)) + samples_per_frame(sample_rate, float(clip.fps))
        starts = starts[audio_end <= int(clip.audio_samples)]
        parts.append(pd.DataFrame({"emotion": clip.emotion, "level": int(clip.level), "clip": clip.clip,
                                   "start": starts, "last": starts + seq_len - 1, "clip_index": index}))
    windows = pd.concat(parts, ignore_index=True)
    windows["row"] = windows.groupby("emotion", sort=False).cumcount()
    return windows


def embed_windows(models, audio: AudioFrames, windows: pd.DataFrame, batch: int, device: torch.device) -> torch.Tensor:
    """(N,128) audio embeddings: frame ``last`` attends to frame ``last − 1``."""
    out = []
    with torch.no_grad():
        for begin in range(0, len(windows), batch):
            part = windows.iloc[begin:begin + batch]
            clip, last = part.clip_index.to_numpy(), part["last"].to_numpy()
            frames = torch.stack([audio(clip, last - 1), audio(clip, last)], 1).to(device)
            out.append(fuse(models.audio_encoder, models.audio_attention, encode_frames(models.audio_encoder, frames)).cpu())
    return torch.cat(out) if out else torch.zeros(0, 128)


def write_distance_matrix(path: str | Path, rows: torch.Tensor, cols: torch.Tensor, chunk: int,
                          device: torch.device | str = "cpu") -> None:
    """L2 distances rows×cols as a float32 ``.npy``, streamed ``chunk`` rows at a time, so peak
    memory is chunk×cols, not rows×cols; published atomically."""
    cols = cols.to(device, torch.float32)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (len(rows), len(cols))}
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for begin in range(0, len(rows), chunk):
            block = torch.cdist(rows[begin:begin + chunk].to(device, torch.float32), cols).clamp_min_(0)
            handle.write(block.cpu().numpy().tobytes())


def actor_distances(models, clips: pd.DataFrame, out_dir: str | Path, sample_rate: int, seq_len: int, hop: int,
                    batch: int, chunk: int, device: torch.device) -> pd.DataFrame:
    """Embed one actor's windows and write ``windows.parquet`` and one matrix per emotion."""
    clips = clips.reset_index(drop=True)
    audio = AudioFrames(clips, sample_rate)
    clips = clips.assign(audio_samples=[len(w) for w in audio.waves])
    windows = enumerate_windows(clips, sample_rate, seq_len, hop)
    vectors = embed_windows(models, audio, windows, batch, device)
    out_dir = Path(out_dir)
    neutral = vectors[torch.tensor((windows.emotion == "neutral").to_numpy())]
    if len(neutral) == 0:
        raise ValueError(f"actor {clips.actor.iloc[0]} has no neutral windows: distances are neutral×emotion")
    for emotion in windows.emotion.unique():
        if emotion != "neutral":
            mask = torch.tensor((windows.emotion == emotion).to_numpy())
            write_distance_matrix(out_dir / f"{emotion}.npy", neutral, vectors[mask], chunk, device)
    write_parquet(windows[list(WINDOW_COLUMNS)], out_dir / "windows.parquet")
    return windows


def actor_clips(manifest: pd.DataFrame | Path, expressions: pd.DataFrame | Path, actor: str) -> pd.DataFrame:
    """The actor's clips with their frame count from the expression table (what the
    manipulator trains on) and their audio from the manifest; tables or their files."""
    names = cd.table_label(expressions, "the expression table"), cd.table_label(manifest, "the manifest")
    manifest = cd.read_table(manifest, [*CLIP_KEY, "audio", "fps", "frames"], cd.rerun("manifest"), "the manifest")
    expressions = cd.read_expressions(expressions)
    for name, table in zip(names, (expressions, manifest)):
        if not (table.actor == actor).any():
            actors = ", ".join(sorted(set(table.actor))) or "no clips"
            raise ValueError(f"actor {actor} is not in {name}, which has {actors}: check --actor and the config's actors")
    frames = expressions[expressions.actor == actor].groupby(CLIP_KEY).size().rename("frames").reset_index()
    clips = frames.merge(manifest.drop(columns="frames"), on=CLIP_KEY, how="left")
    if clips.audio.isna().any():
        key = clips[clips.audio.isna()].iloc[0]
        raise ValueError(f"clip {cd.clip_id(*key[CLIP_KEY])} of the expression table is not in the manifest: {cd.rerun('manifest')}")
    return clips

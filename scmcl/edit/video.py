"""One edited video: the edit's expressions → conditioning → renderer in sequence → the faces
put back into the source's frames → H.264 at the source's frame rate with its audio copied (a
silent source gives a silent video)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from scmcl.edit.composite import aligned_to_frame, composite, inside_crop
from scmcl.edit.conditioning import edited_conditioning
from scmcl.io.clip_data import VIEW51_COLUMNS, expression_view51, read_table, require_finite, table_label
from scmcl.io.media import probe, read_frames, write_video
from scmcl.renderer.networks import Generator
from scmcl.renderer.rerender import Rerenderer
from scmcl.renderer.sequence import render_clip
from scmcl.renderer.windows import RendererClip

#: Frames composited per call (memory at full resolution).
CHUNK = 16
#: The clip's frames.parquet blocks an edit renders from: a NaN in one gives a blob face.
CLIP_BLOCKS = ("shape", "exp", "pose", "cam", "crop_matrix", "align_matrix", "eyes")


def edited51_of(edit: str | Path | pd.DataFrame, frames: int, source: str) -> np.ndarray:
    """(T, 51) of an edit table (``scmcl manipulate``), checked to cover every frame of the source."""
    rows = read_table(edit, ["source_frame"], "rerun the manipulate rule", "the edit table").sort_values("source_frame")
    if rows.source_frame.tolist() != list(range(frames)):
        raise ValueError(f"{edit}: its source_frame column does not cover the {frames} frames of {source} once each; "
                         "rerun the manipulate rule on this clip")
    edited51 = expression_view51(rows)
    require_finite(edited51, table_label(edit, "the edit table"), "rerun the manipulate rule on this clip",
                   VIEW51_COLUMNS, rows.source_frame)
    return edited51


@torch.no_grad()
def render_edit(edit: str | Path, clip_dir: str | Path, video: str | Path, generator: Generator, rerender: Rerenderer,
                method: str, out: str | Path) -> dict:
    """Write the edited video to ``out``; returns its figures for the record."""
    info = probe(video)
    audio = info.sample_rate is not None  # else ffmpeg fails after the rendering, mapping an absent stream
    clip = RendererClip(clip_dir)
    clip.table.check_finite(CLIP_BLOCKS)
    edited51 = edited51_of(edit, len(clip), str(clip_dir))
    frames = read_frames(video)
    if len(frames) != len(clip):
        raise ValueError(f"{video} has {len(frames)} frames but its preprocessed clip {clip_dir} {len(clip)}: "
                         "rerun preprocess_shard for this actor and emotion")
    device = rerender.device
    conditioning = edited_conditioning(rerender, clip, edited51)
    faces = render_clip(generator.to(device).eval(), conditioning)
    # a frame's largest magnitude is finite only when all its values are
    require_finite(faces.flatten(1).abs().amax(1).cpu().numpy(), "the renderer's output",
                   "its weights give NaN or inf: retrain the actor's renderer (train_renderer)")
    align = clip.table.block("align_matrix")
    matrices = aligned_to_frame(clip.table.block("crop_matrix"), align)
    masks = conditioning[:, 9:10] * inside_crop(align, conditioning.shape[-1], device)
    edited = np.empty_like(frames)
    for start in range(0, len(frames), CHUNK):
        sl = slice(start, start + CHUNK)
        source = torch.from_numpy(frames[sl].copy()).permute(0, 3, 1, 2).to(device).float() / 255
        blended = composite(faces[sl], masks[sl], source, matrices[sl], method)
        edited[sl] = (blended * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    write_video(out, edited, info.fps, audio=video if audio else None)
    return {"frames": len(frames), "fps": info.fps, "width": info.width, "height": info.height, "blend": method,
            "audio": audio}

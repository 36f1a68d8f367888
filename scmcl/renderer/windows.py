"""The renderer's training data from our per-clip stores: runs of consecutive frames inside one
clip (defect 12: NED's windows cross clip boundaries and wrap around), and per frame the
generator's conditioning, the target face and the mouth and eye centres its discriminators crop.

A run of ``span`` frames feeds ``span - frames + 1`` generated frames, each conditioned on its
own ``frames`` most recent inputs; the generator's previous outputs come from the training loop,
which generates them in order (defect 15).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from scmcl.io.clip_data import (
    CLIP_KEY,
    EYES_ALIGNED,
    FACES_ALIGNED,
    MASKS_ALIGNED,
    NMFC_ALIGNED,
    SHAPE_ALIGNED,
    read_clip_frames,
    read_clip_stack,
    read_table,
    rerun,
)

#: The 34 points of the ``eyes`` block: 12 eye-contour points and 2 pupils, then 20 mouth points.
_EYE_POINTS, _MOUTH_POINTS = slice(0, 14), slice(14, 34)


def runs(lengths: Sequence[int], span: int) -> np.ndarray:
    """(N, 2) ``[clip, first frame]`` of every run of ``span`` consecutive frames inside one clip,
    in clip order; a clip shorter than ``span`` gives none."""
    if span < 1:
        raise ValueError(f"a run needs at least one frame, got span {span}")
    rows = [(clip, first) for clip, length in enumerate(lengths) for first in range(length - span + 1)]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


class RendererClip:
    """One preprocessed clip folder, memory-mapped: conditioning, faces and ROI centres by frame."""

    def __init__(self, directory: str | os.PathLike) -> None:
        fix = rerun("shard")
        self.stacks = {name: read_clip_stack(directory, name, fix)
                       for name in (NMFC_ALIGNED, EYES_ALIGNED, SHAPE_ALIGNED, MASKS_ALIGNED, FACES_ALIGNED)}
        self.directory = str(directory)
        self.table = read_clip_frames(directory, fix)  # per frame: reconstruction, alignment, eye points
        points = self.table.block("eyes")
        if points.shape[1] != 34:
            raise ValueError(f"{directory}: the renderer's mouth discriminator needs the 34 eye and mouth points; this clip "
                             f"has {points.shape[1]} (preprocess with preprocess.eye_points 34)")
        # NED: the integer median of each part's points
        self.mouth = np.median(points[:, _MOUTH_POINTS], axis=1).astype(np.int64)
        self.eyes = np.median(points[:, _EYE_POINTS], axis=1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.stacks[MASKS_ALIGNED])

    def _unit(self, names: Sequence[str], frames: Sequence[int]) -> torch.Tensor:
        """(len(frames), C, H, W) in [0, 1]: the stacks ``names`` side by side, channels first."""
        index = np.asarray(frames)
        channels = [self.stacks[name][index] for name in names]
        stacked = np.concatenate([c if c.ndim == 4 else c[..., None] for c in channels], axis=-1)
        return torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255.0

    def conditioning(self, frames: Sequence[int]) -> torch.Tensor:
        """(len(frames), 10, H, W) in [0, 1]: NMFC, eye-gaze and shape images, then the mask."""
        return self._unit((NMFC_ALIGNED, EYES_ALIGNED, SHAPE_ALIGNED, MASKS_ALIGNED), frames)

    def nmfc(self, frames: Sequence[int]) -> torch.Tensor:
        """(len(frames), 3, H, W) NMFC images in [0, 1], as in the conditioning."""
        return self._unit((NMFC_ALIGNED,), frames)

    def faces(self, frames: Sequence[int]) -> torch.Tensor:
        """(len(frames), 3, H, W) masked aligned faces in [−1, 1], the generator's targets."""
        faces = torch.from_numpy(self.stacks[FACES_ALIGNED][np.asarray(frames)]).permute(0, 3, 1, 2).float()
        return faces / 127.5 - 1.0


def crop_rois(images: torch.Tensor, centres: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, side, side) squares of ``images`` (B, C, H, W) around ``centres`` (B, 2) ``[x, y]``,
    moved inside the frame where they would cross its edge (NED's ``fit_ROI_in_frame``)."""
    _, _, height, width = images.shape
    half = side // 2
    x = centres[:, 0].clamp(half, width - half).tolist()
    y = centres[:, 1].clamp(half, height - half).tolist()
    return torch.stack([image[:, cy - half:cy + half, cx - half:cx + half] for image, cx, cy in zip(images, x, y)])


def actor_clips(shard_tables: Sequence[str | os.PathLike], test_clips: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training, held-out) clips (``CLIP_KEY`` and ``directory``) of an actor's preprocessing
    shard tables: a clip whose id is in ``test_clips`` is held out, every other one trains."""
    rows = [read_table(path, [*CLIP_KEY, "directory"], rerun("shard")) for path in shard_tables]
    table = pd.concat(rows, ignore_index=True).sort_values(CLIP_KEY)[[*CLIP_KEY, "directory"]].reset_index(drop=True)
    held_out = table["clip"].isin(list(test_clips))
    return table[~held_out].reset_index(drop=True), table[held_out].reset_index(drop=True)


def actor_clip_dirs(shard_tables: Sequence[str | os.PathLike], test_clips: Sequence[str]) -> tuple[list[str], list[str]]:
    """The folders of :func:`actor_clips`."""
    train, test = actor_clips(shard_tables, test_clips)
    return train["directory"].tolist(), test["directory"].tolist()

"""Aligned faces of a video, cut exactly as preprocessing cut its clip (the clip's tracked boxes,
then its alignment and face mask): the evaluation judges a video's faces in the crop the
classifier and the renderer were trained on, and a source video comes out byte-for-byte as its
preprocessed ``faces_aligned``.

An edited video keeps the source's head: its face sits where the source clip's did, so the
source clip's boxes, alignment and mask apply to it unchanged (a paired ground-truth video is cut
with its own preprocessed clip's)."""

from __future__ import annotations

import os

import numpy as np

from scmcl.io.clip_data import MASKS_ALIGNED, read_clip_frames, read_clip_stack, rerun
from scmcl.preprocess.align import warp_stack
from scmcl.preprocess.tracking import crop_frames


def clip_faces(frames: np.ndarray, clip_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(T, S, S, 3) uint8 masked aligned faces of a video's (T, H, W, 3) frames and the (T, S, S)
    bool masks, with the crops, alignment and mask of the preprocessed clip ``clip_dir``."""
    table = read_clip_frames(clip_dir, rerun("shard"))
    masks = read_clip_stack(clip_dir, MASKS_ALIGNED, rerun("shard")) > 127
    if len(frames) != len(masks):
        raise ValueError(f"the video has {len(frames)} frames but its preprocessed clip {clip_dir} {len(masks)}: "
                         "the clip must be the video's own (or its edit's source)")
    size = masks.shape[1]
    crops, _ = crop_frames(frames, table.block("box"), size)
    return warp_stack(crops, table.block("align_matrix"), size, "lanczos") * masks[..., None], masks

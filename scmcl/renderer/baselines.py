"""What the renderer must beat on an actor's held-out frames: the actor's mean training face,
and retrieval, the training frame whose NMFC image is nearest (the same pose and expression
seen in training, with its real pixels). Both are built from the same per-clip stores."""

from __future__ import annotations

from typing import Sequence

import kornia
import torch

from scmcl.renderer.windows import RendererClip

#: Side of the NMFC thumbnails compared by retrieval: pose and expression, not pixel noise.
THUMBNAIL = 32
#: Query rows compared at a time (memory: chunk × training frames × 4 bytes).
CHUNK = 256


def mean_face(clips: Sequence[RendererClip]) -> torch.Tensor:
    """(3, H, W) per-pixel mean of every training frame's aligned face, in [−1, 1]."""
    total, count = None, 0
    for clip in clips:
        faces = clip.faces(range(len(clip))).sum(0)
        total = faces if total is None else total + faces
        count += len(clip)
    if not count:
        raise ValueError("the mean face needs at least one training frame")
    return total / count


def nmfc_thumbnails(clip: RendererClip, frames: Sequence[int]) -> torch.Tensor:
    """(len(frames), 3·THUMBNAIL²) NMFC images shrunk with antialiasing, flattened."""
    return kornia.geometry.transform.resize(clip.nmfc(frames), (THUMBNAIL, THUMBNAIL), antialias=True).flatten(1)


def nearest_frames(train: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """(Q,) index into ``train`` (N, D) of each query's (Q, D) nearest row in L2."""
    return torch.cat([torch.cdist(queries[i:i + CHUNK], train).argmin(1) for i in range(0, len(queries), CHUNK)])

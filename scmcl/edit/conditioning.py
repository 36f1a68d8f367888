"""The renderer's conditioning of an edited clip (NED's ``create_inputs``): NMFC and shape
images re-rendered with the edited expressions in the clip's aligned crop, and the eye-gaze image
redrawn with the eyelid points moved as the edited mesh's eyelids moved and each pupil moved with
its eye's centre. The movement is measured mesh to mesh (the edit against the source's own
expressions): NED moved the tracked points to the mesh's, which shifts the pupils of a frame the
edit did not change. The mask is the source's, widened to what the edited mesh covers (an opened
jaw reaches below the source's chin)."""

from __future__ import annotations

import numpy as np
import torch

from scmcl.io.clip_data import MASKS_ALIGNED
from scmcl.preprocess.conditioning import EYE_POINTS, PUPILS, eye_gaze_image
from scmcl.renderer.rerender import JAW_OPEN, Rerenderer
from scmcl.renderer.windows import RendererClip

#: Frames re-rendered per call.
CHUNK = 32


def own_expressions(clip: RendererClip) -> np.ndarray:
    """(T, 51) ``[jaw_open, exp_00..exp_49]`` of the clip's reconstruction, the manipulator's view."""
    exp = clip.table.block("exp")[:, :50]
    padded = np.zeros((len(exp), 50), np.float32)
    padded[:, :exp.shape[1]] = exp
    return np.concatenate([clip.table.block("pose")[:, JAW_OPEN:JAW_OPEN + 1], padded], axis=1).astype(np.float32)


def moved_eye_points(points: torch.Tensor, source_lids: torch.Tensor, edited_lids: torch.Tensor) -> torch.Tensor:
    """(n, P, 2) eye points with the 12 eyelid points moved by the mesh's eyelid motion and each
    pupil by its eye's mean motion; the other points (the mouth's) are unchanged."""
    motion = edited_lids - source_lids
    moved = points.clone()
    moved[:, :2 * EYE_POINTS] += motion
    for eye, pupil in enumerate(PUPILS):
        moved[:, pupil] += motion[:, eye * EYE_POINTS:(eye + 1) * EYE_POINTS].mean(1)
    return moved


@torch.no_grad()
def edited_conditioning(rerender: Rerenderer, clip: RendererClip, edited51: np.ndarray) -> torch.Tensor:
    """(T, 10, H, W) in [0, 1] on the re-renderer's device: the clip's conditioning for ``edited51``
    (T, 51); the clip's own expressions give back its stored conditioning."""
    if len(edited51) != len(clip):
        raise ValueError(f"{clip.directory}: the edit has {len(edited51)} frames, the clip {len(clip)}")
    source51 = own_expressions(clip)
    size = clip.stacks[MASKS_ALIGNED].shape[1]
    parts = []
    for start in range(0, len(clip), CHUNK):
        frames = np.arange(start, min(len(clip), start + CHUNK))
        source, edit = rerender.render(clip, frames, source51[frames]), rerender.render(clip, frames, edited51[frames])
        points = torch.as_tensor(clip.table.block("eyes")[frames], dtype=torch.float32, device=rerender.device)
        eyes = eye_gaze_image(moved_eye_points(points, source.eyelids, edit.eyelids), size).permute(0, 3, 1, 2) / 255.0
        stored = clip.conditioning(frames).to(rerender.device)
        mask = torch.maximum(stored[:, 9], edit.mask.float())
        parts.append(torch.cat([edit.images[:, :3], eyes.float(), edit.images[:, 3:], mask[:, None]], dim=1))
    return torch.cat(parts)

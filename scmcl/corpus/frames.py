"""Rendering a synthetic clip: FLAME parameters → shaded RGB frames and 2D landmarks."""

from __future__ import annotations

import numpy as np
import torch

from scmcl.corpus.actors import Actor
from scmcl.corpus.animate import ClipParams
from scmcl.face3d.camera import orthographic
from scmcl.face3d.flame import FlameLayer
from scmcl.face3d.render import render_mesh

#: Key light from the upper front-left and a weaker fill from the right (towards the light).
_LIGHTS = torch.tensor([[-0.4, 0.5, 1.0], [0.6, 0.1, 0.8]])
_LIGHT_COLORS = torch.tensor([[0.75, 0.75, 0.72], [0.25, 0.25, 0.28]])
_AMBIENT = 0.3


def vertex_colors(layer_extras: dict, actor: Actor) -> np.ndarray:
    """Per-vertex albedo from the head's region labels and the actor's palette."""
    names = list(layer_extras["region_names"])
    labels = np.asarray(layer_extras["vertex_region"])
    table = np.stack([actor.palette.get(name, actor.palette["skin"]) for name in names])
    return table[labels].astype(np.float32)


def backdrop(actor: Actor, size: int) -> np.ndarray:
    """A vertical two-colour gradient behind the head, (H,W,3) in [0,1]."""
    top, bottom = actor.background
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    return np.broadcast_to((1 - ramp) * top + ramp * bottom, (size, size, 3)).astype(np.float32)


@torch.no_grad()
def render_clip(layer: FlameLayer, colors: np.ndarray, actor: Actor, params: ClipParams, size: int,
                device: torch.device, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T,H,W,3) uint8 and landmarks (T,68,2) in pixel coordinates."""
    n = len(params.exp)
    faces = layer.faces.to(device)
    albedo = torch.as_tensor(colors, device=device)
    background = torch.as_tensor(backdrop(actor, size), device=device)
    shape = torch.as_tensor(actor.shape, dtype=torch.float32, device=device)
    frames, landmarks = [], []
    for start in range(0, n, batch):
        sl = slice(start, min(n, start + batch))
        b = sl.stop - sl.start

        def _t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a[sl], dtype=torch.float32, device=device)

        out = layer(shape=shape.expand(b, -1), exp=_t(params.exp), pose=_t(params.pose),
                    neck_pose=_t(params.neck_pose), eye_pose=_t(params.eye_pose))
        cam = _t(params.cam)
        screen = orthographic(out.vertices, cam, size, size)
        image, mask, _ = render_mesh(out.vertices, faces, albedo.expand(b, -1, -1), screen, size, size,
                                     light_dirs=_LIGHTS.to(device), light_colors=_LIGHT_COLORS.to(device),
                                     ambient=_AMBIENT)
        image = torch.where(mask[..., None], image, background)
        frames.append((image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy())
        landmarks.append(orthographic(out.landmarks, cam, size, size)[..., :2].cpu().numpy())
    return np.concatenate(frames), np.concatenate(landmarks)

"""One-call shaded rendering of a coloured mesh (rasterize → interpolate → Lambert)."""

from __future__ import annotations

import torch

from scmcl.face3d.raster import Fragments, interpolate, rasterize
from scmcl.face3d.shading import lambertian, unit, vertex_normals

#: Default key light: from the viewer's side, a little above and to the left (world coords).
DEFAULT_LIGHT_DIRS = ((-0.3, 0.4, 1.0),)


def render_mesh(
    verts: torch.Tensor,
    faces: torch.Tensor,
    vert_colors: torch.Tensor,
    screen_verts: torch.Tensor,
    height: int,
    width: int,
    *,
    light_dirs: torch.Tensor | None = None,
    light_colors: torch.Tensor | None = None,
    ambient: float | torch.Tensor = 0.3,
    background: float | torch.Tensor = 0.0,
    cull_backfaces: bool = False,
    perspective_correct: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, Fragments]:
    """Shade ``verts`` (B,V,3, world, for normals) already projected to ``screen_verts`` (B,V,3).

    ``vert_colors`` (B,V,3) or (V,3) albedo in [0,1]; lights are in world space, pointing from
    the surface towards the light (see :func:`~scmcl.face3d.shading.lambertian`);
    ``background`` is a grey level or an RGB (3,).  Returns ``image`` (B,H,W,3) in [0,1],
    ``mask`` (B,H,W) bool and the :class:`Fragments` (for NMFC/shape images or depth).
    """
    fragments = rasterize(
        screen_verts, faces, height, width, cull_backfaces=cull_backfaces, perspective_correct=perspective_correct
    )
    colors = vert_colors.to(verts).expand_as(verts)
    attrs = interpolate(fragments, faces, torch.cat([colors, vertex_normals(verts, faces)], dim=-1))
    albedo, normals = attrs[..., :3], unit(attrs[..., 3:])
    dirs = torch.tensor(DEFAULT_LIGHT_DIRS, dtype=verts.dtype, device=verts.device) if light_dirs is None else light_dirs
    shaded = lambertian(normals, albedo, dirs, light_colors, ambient).clamp(0.0, 1.0)
    mask = fragments.mask
    fill = torch.as_tensor(background, dtype=shaded.dtype, device=shaded.device).expand_as(shaded)
    return torch.where(mask[..., None], shaded, fill), mask, fragments

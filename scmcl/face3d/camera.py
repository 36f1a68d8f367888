"""World → screen projections feeding :func:`scmcl.face3d.raster.rasterize`.

Screen space (what both functions return, shape (B,V,3)):

- ``px`` grows to the right and ``py`` grows downwards, in pixels; pixel ``(row i, col j)``
  covers ``[j, j+1) x [i, i+1)`` and its centre is at ``(j + 0.5, i + 0.5)``, so the image
  spans ``[0, W] x [0, H]``;
- ``depth`` grows away from the viewer and must be positive for a triangle to be drawn (the
  rasterizer's near plane is ``depth > 0``).

World space is FLAME's: x right, y up, z towards the viewer, metres.
"""

from __future__ import annotations

import torch

#: Depth added by :func:`orthographic` so that a head around the origin sits in front of the
#: near plane (DECA's renderer pushes vertices back by the same 10 units).
ORTHO_DEPTH_OFFSET = 10.0


def _ndc_to_pixels(ndc_xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """NDC [-1, 1] (y up) → pixel coordinates (y down, pixel centres at +0.5)."""
    px = (ndc_xy[..., 0] + 1.0) * (width / 2.0)
    py = (1.0 - ndc_xy[..., 1]) * (height / 2.0)
    return torch.stack([px, py], dim=-1)


def orthographic(
    verts: torch.Tensor,
    cam: torch.Tensor,
    height: int,
    width: int,
    *,
    depth_offset: float = ORTHO_DEPTH_OFFSET,
) -> torch.Tensor:
    """DECA's weak-perspective camera: ``ndc_xy = scale * (xy + t)`` with ``cam = [scale, tx, ty]``.

    ``verts`` (B,V,3) world, ``cam`` (B,3).  ``depth = depth_offset - z``: larger is farther,
    and the default offset keeps a head near the origin (|z| << 10) in front of the near plane;
    only depth order matters for an orthographic camera, so the offset changes no pixel.
    Returns (B,V,3) ``(px, py, depth)``.
    """
    scale = cam[:, None, 0:1]
    ndc_xy = scale * (verts[..., :2] + cam[:, None, 1:3])
    depth = depth_offset - verts[..., 2:3]
    return torch.cat([_ndc_to_pixels(ndc_xy, height, width), depth], dim=-1)


def perspective(
    verts: torch.Tensor,
    focal: float | torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """Pinhole camera with the principal point at the image centre.

    Convention (OpenGL-like): camera coordinates are ``X_cam = R @ X_world + t`` with ``R``
    (B,3,3) and ``t`` (B,3); the camera looks down its own -z axis with x right and y up.  With
    ``R = I`` and ``t = (0, 0, -d)`` the camera sits at world ``(0, 0, d)`` looking at the
    origin, i.e. it faces a FLAME head from the front.  ``focal`` is in pixels, a scalar or
    (B,).  ``depth = -z_cam`` (distance along the view axis, positive in front).
    Returns (B,V,3) ``(px, py, depth)``; points at or behind the camera get ``depth <= 0``
    and are dropped by the rasterizer.
    """
    cam_pts = torch.einsum("bij,bvj->bvi", R, verts) + t[:, None, :]
    depth = -cam_pts[..., 2]
    focal_t = torch.as_tensor(focal, dtype=verts.dtype, device=verts.device).reshape(-1, 1)
    safe = torch.where(depth.abs() < 1e-9, torch.full_like(depth, 1e-9), depth)
    px = width / 2.0 + focal_t * cam_pts[..., 0] / safe
    py = height / 2.0 - focal_t * cam_pts[..., 1] / safe
    return torch.stack([px, py, depth], dim=-1)

"""Vertex normals and Lambertian shading for the synthetic corpus and shape images."""

from __future__ import annotations

import torch


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit normals (B,V,3), each the area-weighted mean of its faces' normals.

    The unnormalised cross product of a face is twice its area times its normal, so summing it
    per vertex gives the area weighting for free.  Faces wind counter-clockwise seen from the
    outside (FLAME), which makes the normals point outwards.  Isolated vertices get zeros.
    """
    batch, num_verts = verts.shape[:2]
    faces = faces.to(device=verts.device, dtype=torch.int64)
    v0, v1, v2 = verts[:, faces[:, 0]], verts[:, faces[:, 1]], verts[:, faces[:, 2]]
    face_normals = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1).transpose(0, 1).reshape(faces.shape[0], -1)  # (F,B*3)
    normals = torch.zeros((num_verts, batch * 3), dtype=verts.dtype, device=verts.device)
    for corner in range(3):
        normals.index_add_(0, faces[:, corner], face_normals)  # rows of B*3 values: much faster than (B,V,3) on CPU
    return unit(normals.view(num_verts, batch, 3).transpose(0, 1))


def unit(vectors: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``vectors / |vectors|`` over the last axis, zeros stay zero.

    Written out because ``F.normalize`` over a last axis of 3 is an order of magnitude
    slower on CPU.
    """
    return vectors * torch.rsqrt((vectors * vectors).sum(-1, keepdim=True).clamp_min(eps * eps))


def lambertian(
    normals: torch.Tensor,
    albedo: torch.Tensor,
    light_dirs: torch.Tensor,
    light_colors: torch.Tensor | None = None,
    ambient: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """``albedo * (ambient + sum_l max(0, n . l) * color_l)`` → (...,3).

    ``normals``/``albedo`` (...,3); ``light_dirs`` (L,3) shared, or (B,L,3) per batch item, in
    which case ``normals`` must be (B,...,3).  Directions point from the surface towards the
    light and are normalised here.  ``light_colors`` matches ``light_dirs`` (default white);
    ``ambient`` is a scalar or an RGB (3,).  The result is not clamped.
    """
    dirs = unit(light_dirs.to(normals))
    colors = torch.ones_like(dirs) if light_colors is None else light_colors.to(normals).expand_as(dirs)
    if dirs.dim() == 2:
        cosines = (normals @ dirs.T).clamp(min=0)  # (...,L)
        diffuse = cosines @ colors
    else:
        flat = normals.reshape(normals.shape[0], -1, 3)
        cosines = torch.bmm(flat, dirs.transpose(1, 2)).clamp(min=0)  # (B,N,L)
        diffuse = torch.bmm(cosines, colors).reshape(normals.shape)
    return albedo * (torch.as_tensor(ambient, dtype=normals.dtype, device=normals.device) + diffuse)

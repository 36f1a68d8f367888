"""The renderer's conditioning images (method.md §2.5, §5.1), drawn with our own rasterizer.

- NMFC: NED's normalised mean face coordinates, the FLAME template min-max normalised per axis
  (R=x, G=y, B=z) as per-vertex colours on the posed mesh;
- shape image: DECA's grey, five-light Lambertian rendering of the mesh;
- face mask: the pixels these two images cover (the default mask without segmentation weights);
- eye-gaze image: NED's red pupil discs.

Geometry follows :func:`scmcl.face3d.camera.orthographic` (DECA's ``[scale, tx, ty]`` camera;
pixel centres at +0.5, y down).  Both mesh images keep only the front-facing surface, as DECA's
``pos_mask``: the interpolated vertex normal's component towards the viewer must exceed
:data:`FRONT_FACING_MIN_NZ` (DECA: transformed normal z < 0.15 with z flipped).  The
orthographic camera neither rotates nor shears, so that component is the world normal's z.

``pixel_transform`` (B,2,3) maps the camera's ``size``-pixel image into the output image, e.g.
DECA's 224 crop into the aligned 256 crop: rendering straight into the aligned frame avoids the
un-aligned conditioning of defect 11 and a second resampling (the images NED warps twice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from scmcl.face3d.camera import orthographic
from scmcl.face3d.raster import Fragments, interpolate, rasterize
from scmcl.face3d.shading import lambertian, unit, vertex_normals

#: DECA's ``pos_mask`` threshold: keep pixels whose normal's z (towards the viewer) is above this.
FRONT_FACING_MIN_NZ = -0.15
#: DECA's shape image: grey albedo, five directional lights (world, y up) and their intensity.
SHAPE_ALBEDO = 180.0 / 255.0
SHAPE_LIGHT_DIRS = ((-1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (-1.0, -1.0, 1.0), (1.0, -1.0, 1.0), (0.0, 0.0, 1.0))
SHAPE_LIGHT_INTENSITY = 1.7
#: Eye-gaze image layout (14 or 34 points): eye ``e`` is points ``6e..6e+5``, its pupil ``12+e``.
EYE_POINTS = 6
PUPILS = (12, 13)
PUPIL_RGB = (255, 0, 0)

Array = np.ndarray | torch.Tensor


@dataclass
class Surface:
    """One rasterization of the posed mesh, shared by the NMFC, shape and mask images.

    ``visible`` (B,H,W) marks covered, front-facing pixels; ``normals`` (B,H,W,3) are the
    interpolated (unnormalised) geometric vertex normals.
    """

    fragments: Fragments
    visible: torch.Tensor
    normals: torch.Tensor


def nmfc_colors(v_template: Array) -> torch.Tensor:
    """NED's NMFC palette (V,3): the template min-max normalised per axis, so R=x, G=y, B=z in [0,1]."""
    verts = torch.as_tensor(v_template)
    verts = verts if verts.is_floating_point() else verts.float()
    lo, hi = verts.amin(0), verts.amax(0)
    return (verts - lo) / (hi - lo).clamp_min(torch.finfo(verts.dtype).tiny)


def screen_vertices(
    vertices: torch.Tensor, cam: torch.Tensor, size: int, pixel_transform: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,V,3) screen points: DECA's orthographic camera on a ``size``² image, then ``pixel_transform``."""
    screen = orthographic(vertices, cam.to(vertices), size, size)
    if pixel_transform is None:
        return screen
    matrix = torch.as_tensor(pixel_transform).to(vertices)
    xy = torch.einsum("bij,bvj->bvi", matrix[:, :, :2], screen[..., :2]) + matrix[:, None, :, 2]
    return torch.cat([xy, screen[..., 2:]], dim=-1)


def rasterize_surface(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cam: torch.Tensor,
    size: int,
    *,
    pixel_transform: torch.Tensor | None = None,
    out_size: int | None = None,
) -> Surface:
    """Rasterize once into an ``out_size``² image (default ``size``) and mark the front-facing pixels."""
    out = size if out_size is None else out_size
    fragments = rasterize(screen_vertices(vertices, cam, size, pixel_transform), faces, out, out)
    normals = interpolate(fragments, faces, vertex_normals(vertices, faces))
    return Surface(fragments, fragments.mask & (normals[..., 2] > FRONT_FACING_MIN_NZ), normals)


def nmfc_image(surface: Surface, faces: torch.Tensor, colors: Array) -> torch.Tensor:
    """(B,H,W,3) NMFC colours on the visible surface, black elsewhere."""
    batch = surface.visible.shape[0]
    palette = torch.as_tensor(colors).to(surface.normals)
    image = interpolate(surface.fragments, faces, palette.expand(batch, -1, -1))
    return image * surface.visible[..., None]


def shape_image(surface: Surface, faces: torch.Tensor, normals: torch.Tensor | None = None) -> torch.Tensor:
    """(B,H,W,3) DECA's shape shading on the visible surface, black elsewhere.

    DECA averages five clamped Lambert terms of intensity 1.7, i.e. each light has colour 1.7/5.
    ``normals`` (B,V,3) replaces the geometric vertex normals for shading only (e.g. normals of
    a detail-displaced mesh sampled at the vertices); DECA's UV-resolution detail map is not
    reproduced.  Interpolated normals are renormalised, so large triangles do not darken.
    """
    if normals is not None:
        normals = interpolate(surface.fragments, faces, normals.to(surface.normals))
    shading_normals = surface.normals if normals is None else normals
    dirs = torch.tensor(SHAPE_LIGHT_DIRS, dtype=shading_normals.dtype, device=shading_normals.device)
    colors = torch.full_like(dirs, SHAPE_LIGHT_INTENSITY / len(SHAPE_LIGHT_DIRS))
    albedo = torch.full_like(shading_normals, SHAPE_ALBEDO)
    image = lambertian(unit(shading_normals), albedo, dirs, colors).clamp(0.0, 1.0)
    return image * surface.visible[..., None]


def face_mask(surface: Surface, faces: torch.Tensor, face_vertex_mask: Array | None = None) -> torch.Tensor:
    """(B,H,W) bool: visible pixels, optionally only where the visible triangle has all vertices in the mask.

    Occluders outside the mask still hide what is behind them, as they would in a segmentation.
    """
    if face_vertex_mask is None:
        return surface.visible
    pix_to_face = surface.fragments.pix_to_face
    vertex_in = torch.as_tensor(face_vertex_mask, dtype=torch.bool, device=pix_to_face.device)
    triangle_in = vertex_in[faces.to(device=pix_to_face.device, dtype=torch.int64)].all(dim=1)
    return surface.visible & triangle_in[pix_to_face.clamp_min(0)]


def pupil_radii(eye_points: torch.Tensor) -> torch.Tensor:
    """(B,2) disc radius per eye, NED's ``(|p1-p4| + |p2-p5|) / 4`` over that eye's six points."""
    eyes = eye_points[:, : 2 * EYE_POINTS].reshape(-1, 2, EYE_POINTS, 2)
    return (torch.linalg.vector_norm(eyes[:, :, 1] - eyes[:, :, 4], dim=-1)
            + torch.linalg.vector_norm(eyes[:, :, 2] - eyes[:, :, 5], dim=-1)) / 4.0


def eye_gaze_image(eye_points: Array, size: int) -> torch.Tensor:
    """NED's eye image (B,size,size,3) uint8: black with a red filled disc at each pupil.

    ``eye_points`` (B,14,2) or (B,34,2) in screen coordinates (see :data:`EYE_POINTS`,
    :data:`PUPILS`).  A pixel is red when its centre lies strictly within the radius of a pupil.
    Unlike NED, points and radius stay sub-pixel (NED truncates both to integers) and nothing
    is clamped onto the image border; a NaN pupil draws nothing.
    """
    points = torch.as_tensor(eye_points)
    points = points if points.is_floating_point() else points.double()
    radii = pupil_radii(points)  # (B,2)
    pupils = points[:, list(PUPILS)]  # (B,2,2)
    centres = torch.arange(size, dtype=points.dtype, device=points.device) + 0.5
    dx = centres[None, None, None, :] - pupils[..., 0, None, None]  # (B,2,1,W)
    dy = centres[None, None, :, None] - pupils[..., 1, None, None]  # (B,2,H,1)
    disc = (dx * dx + dy * dy < (radii * radii)[..., None, None]).any(dim=1)  # (B,H,W)
    colour = torch.tensor(PUPIL_RGB, dtype=torch.uint8, device=points.device)
    return disc[..., None].to(torch.uint8) * colour


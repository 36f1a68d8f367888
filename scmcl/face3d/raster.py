"""Batched, vectorised triangle rasterizer in plain PyTorch (any device, no pytorch3d).

Input is screen space from :mod:`scmcl.face3d.camera`: ``(px, py, depth)`` with pixel centres
at integer + 0.5, y down, depth > 0 in front of the camera.

Two passes:

1. *Visibility* (no autograd).  Each drawable face gets its integer pixel box, and its edge
   functions and depth plane written relative to the box's first pixel centre (small
   numbers, so float32 stays accurate).  Faces expand to (face, row) pairs; the three edge
   functions give each row's covered column span directly, so no uncovered pixel is ever
   enumerated.  Spans expand to pixels, and the nearest face per pixel wins one
   ``scatter_reduce(amin)`` on a packed int64 key ``(float32 depth bits << 32) | face``:
   the bits of a positive float sort like the float, and ties go to the lower face.  Both
   expansions run in chunks of at most ``max_pairs`` items (a chunk may cut through a face or
   a row), so a huge triangle costs memory like many small ones.
2. *Fragments* (autograd-friendly): the barycentrics and depth of each covered pixel are
   recomputed from the winning face's vertices, so they carry gradients to the vertices.

A pixel is covered when its centre lies inside the triangle or on its edges.  Triangles are
drawn only when all three vertices have depth > 0 (near plane) and their screen area is not
(numerically) zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

_EMPTY = torch.iinfo(torch.int64).max
_FACE_BITS = 32
_MIN_AREA = 1e-9


@dataclass
class Fragments:
    """Per-pixel result of :func:`rasterize`.

    ``pix_to_face`` (B,H,W) int64 index into ``faces`` (-1 = background); ``bary`` (B,H,W,3)
    weights of the face's three vertices (zeros on background, perspective-corrected when
    asked); ``zbuf`` (B,H,W) depth of the visible surface (inf on background).
    """

    pix_to_face: torch.Tensor
    bary: torch.Tensor
    zbuf: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B,H,W) bool: pixels covered by some face."""
        return self.pix_to_face >= 0


@dataclass
class _FaceSetup:
    """Drawable faces, compacted; planes are relative to the box's first pixel centre."""

    face_id: torch.Tensor  # (G,) index into the flattened (B*F) faces
    base: torch.Tensor  # (G,) flat pixel index of the box's first pixel
    box_w: torch.Tensor  # (G,)
    box_h: torch.Tensor  # (G,)
    planes: torch.Tensor  # (12,G): edge c0..c2, edge a0..a2 (per x step), b0..b2 (per y step), depth c, a, b


@dataclass
class _RowSpans:
    """Covered column spans of (face, row) pairs: first pixel, its depth, depth step, face (length may be 0)."""

    pixel: torch.Tensor
    depth: torch.Tensor
    depth_dx: torch.Tensor
    face: torch.Tensor
    length: torch.Tensor


def _signed_area(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Twice the signed area in pixel coords (vertex axis first); negative = counter-clockwise on screen."""
    return (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])


def _edge_terms(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Start point and direction of the edge opposite each vertex (vertex axis first)."""
    nxt, after = [1, 2, 0], [2, 0, 1]
    return x[nxt], y[nxt], x[after] - x[nxt], y[after] - y[nxt]


def _edge_values(x: torch.Tensor, y: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Edge function of the edge opposite each vertex at points (px, py): (3,N) x (N,) → (3,N)."""
    x1, y1, dx, dy = _edge_terms(x, y)
    return dx * (py - y1) - dy * (px - x1)


def _pixel_range(lo: torch.Tensor, hi: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer indices of the first/last pixel whose centre lies in [lo, hi], clipped to the image."""
    first = torch.ceil((lo - 0.5).clamp(-1.0, size)).long().clamp(min=0)
    last = torch.floor((hi - 0.5).clamp(-1.0, size)).long().clamp(max=size - 1)
    return first, last


def _setup_faces(
    tri: torch.Tensor, height: int, width: int, cull_backfaces: bool, perspective_correct: bool
) -> _FaceSetup:
    """Keep drawable faces of ``tri`` (B,F,3,3) and precompute their pixel boxes and planes."""
    num_faces = tri.shape[1]
    flat = tri.flatten(0, 1)  # (B*F,3,3)
    x, y, z = flat.permute(2, 1, 0)  # (3,B*F) each, vertex axis first
    area = _signed_area(x, y)
    x0, x1 = _pixel_range(x.amin(0), x.amax(0), width)
    y0, y1 = _pixel_range(y.amin(0), y.amax(0), height)
    keep = (area.abs() > _MIN_AREA) & (z > 0).all(0) & torch.isfinite(flat).flatten(1).all(1)
    keep &= (x0 <= x1) & (y0 <= y1)
    if cull_backfaces:
        keep &= area < 0
    face_id = keep.nonzero().squeeze(1)
    x0, x1, y0, y1 = (v.index_select(0, face_id) for v in (x0, x1, y0, y1))

    x, y, z = flat.index_select(0, face_id).permute(2, 1, 0).contiguous()  # (3,G) each
    inv_area = 1.0 / _signed_area(x, y)
    edge_c = _edge_values(x, y, x0.to(x.dtype) + 0.5, y0.to(y.dtype) + 0.5) * inv_area
    _, _, edge_dx, edge_dy = _edge_terms(x, y)
    edge_a, edge_b = -edge_dy * inv_area, edge_dx * inv_area
    values = 1.0 / z if perspective_correct else z
    depth = torch.stack([(w * values).sum(0) for w in (edge_c, edge_a, edge_b)])
    return _FaceSetup(
        face_id=face_id,
        base=(face_id // num_faces) * (height * width) + y0 * width + x0,
        box_w=x1 - x0 + 1,
        box_h=y1 - y0 + 1,
        planes=torch.cat([edge_c, edge_a, edge_b, depth]),
    )


def _chunks(counts: torch.Tensor, max_items: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Expand ``counts[i]`` items per owner ``i`` into (owner, index-within-owner), ``max_items`` at a time."""
    device = counts.device
    cum_end = counts.cumsum(0)
    cum_start = cum_end - counts
    total = int(cum_end[-1]) if counts.numel() else 0
    for start in range(0, total, max_items):
        stop = min(start + max_items, total)
        first = int(torch.searchsorted(cum_end, start, right=True))
        last = int(torch.searchsorted(cum_end, stop - 1, right=True))
        lo = cum_start[first : last + 1].clamp(min=start)
        hi = cum_end[first : last + 1].clamp(max=stop)
        owner = torch.repeat_interleave(torch.arange(first, last + 1, device=device), hi - lo, output_size=stop - start)
        yield owner, torch.arange(start, stop, device=device) - cum_start.index_select(0, owner)


def _row_spans(setup: _FaceSetup, face: torch.Tensor, row: torch.Tensor, width: int) -> _RowSpans:
    """Columns of each (face, box row) whose pixel centres pass all three edge functions."""
    planes = [p.index_select(0, face) for p in setup.planes]
    box_w = setup.box_w.index_select(0, face)
    frow = row.to(planes[0].dtype)
    lower = torch.zeros_like(frow)
    upper = (box_w - 1).to(frow.dtype)
    for c, a, b in zip(planes[0:3], planes[3:6], planes[6:9]):
        value = c + b * frow  # edge value at the row's first pixel centre; grows by `a` per column
        bound = -value / a
        lower = torch.where(a > 0, torch.maximum(lower, bound), lower)
        upper = torch.where(a < 0, torch.minimum(upper, bound), upper)
        upper = torch.where((a == 0) & (value < 0), torch.full_like(upper, -1.0), upper)
    first = torch.ceil(lower.clamp(-1.0, width)).long()
    length = (torch.floor(upper.clamp(-1.0, width)).long() - first + 1).clamp(min=0)
    depth_c, depth_a, depth_b = planes[9:12]
    return _RowSpans(
        pixel=setup.base.index_select(0, face) + row * width + first,
        depth=depth_c + depth_a * first.to(depth_c.dtype) + depth_b * frow,
        depth_dx=depth_a,
        face=face,
        length=length,
    )


def _nearest_keys(setup: _FaceSetup, num_pixels: int, width: int, perspective_correct: bool, max_pairs: int) -> torch.Tensor:
    """(num_pixels,) packed key of the nearest covering face per pixel (``_EMPTY`` if none)."""
    keys = torch.full((num_pixels,), _EMPTY, dtype=torch.int64, device=setup.box_h.device)
    for face, row in _chunks(setup.box_h, max_pairs):
        spans = _row_spans(setup, face, row, width)
        for span, step in _chunks(spans.length, max_pairs):
            pixel = spans.pixel.index_select(0, span) + step
            depth = spans.depth.index_select(0, span) + spans.depth_dx.index_select(0, span) * step.to(spans.depth.dtype)
            if perspective_correct:
                depth = 1.0 / depth
            bits = depth.float().clamp(min=torch.finfo(torch.float32).tiny).view(torch.int32).long()
            keys.scatter_reduce_(0, pixel, (bits << _FACE_BITS) | spans.face.index_select(0, span), reduce="amin")
    return keys


def _fragments(
    keys: torch.Tensor, setup: _FaceSetup, tri: torch.Tensor, height: int, width: int, perspective_correct: bool
) -> Fragments:
    """Decode winners and recompute their barycentrics/depth from the (differentiable) vertices."""
    batch, num_faces = tri.shape[:2]
    pixel = (keys != _EMPTY).nonzero().squeeze(1)
    winner = setup.face_id.index_select(0, keys.index_select(0, pixel) & ((1 << _FACE_BITS) - 1))
    x, y, z = tri.flatten(0, 1).index_select(0, winner).permute(2, 1, 0)  # (3,P) each
    local = pixel % (height * width)
    px = (local % width).to(tri.dtype) + 0.5
    py = (local // width).to(tri.dtype) + 0.5
    bary = _edge_values(x, y, px, py) / _signed_area(x, y)
    if perspective_correct:
        bary = bary / z
        bary = bary / bary.sum(0)
    depth = (bary * z).sum(0)
    bary = bary.T

    num_pixels = batch * height * width
    pix_to_face = torch.full((num_pixels,), -1, dtype=torch.int64, device=tri.device)
    pix_to_face[pixel] = winner % num_faces
    bary_full = torch.zeros((num_pixels, 3), dtype=tri.dtype, device=tri.device).index_put((pixel,), bary)
    zbuf = torch.full((num_pixels,), float("inf"), dtype=tri.dtype, device=tri.device).index_put((pixel,), depth)
    shape = (batch, height, width)
    return Fragments(pix_to_face.view(shape), bary_full.view(*shape, 3), zbuf.view(shape))


def rasterize(
    screen_verts: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    *,
    cull_backfaces: bool = False,
    perspective_correct: bool = False,
    max_pairs: int = 1 << 21,
) -> Fragments:
    """Z-buffered coverage of ``faces`` (F,3) over ``screen_verts`` (B,V,3) → :class:`Fragments`.

    The nearest (smallest depth) covering face wins.  ``cull_backfaces`` drops faces that are
    clockwise on the displayed image (front = counter-clockwise as seen by the viewer, FLAME's
    winding).  ``perspective_correct`` weights barycentrics by 1/depth (use it with
    :func:`~scmcl.face3d.camera.perspective`; orthographic screens are affine already).
    ``max_pairs`` bounds the rows/pixels expanded at once (memory ~ 100 B each).
    Gradients flow to ``screen_verts`` through ``bary`` and ``zbuf`` (not through visibility).
    """
    faces = faces.to(device=screen_verts.device, dtype=torch.int64)
    tri = screen_verts[:, faces]  # (B,F,3,3)
    with torch.no_grad():
        setup = _setup_faces(tri.detach(), height, width, cull_backfaces, perspective_correct)
        keys = _nearest_keys(setup, tri.shape[0] * height * width, width, perspective_correct, max_pairs)
    return _fragments(keys, setup, tri, height, width, perspective_correct)


def interpolate(fragments: Fragments, faces: torch.Tensor, vert_attrs: torch.Tensor) -> torch.Tensor:
    """Barycentric blend of per-vertex ``vert_attrs`` (B,V,C) → (B,H,W,C), zeros on background."""
    batch, height, width = fragments.pix_to_face.shape
    num_verts, channels = vert_attrs.shape[1:]
    faces = faces.to(device=vert_attrs.device, dtype=torch.int64)
    pix_to_face = fragments.pix_to_face.reshape(-1)
    pixel = (pix_to_face >= 0).nonzero().squeeze(1)
    item = pixel // (height * width)
    corners = faces.index_select(0, pix_to_face.index_select(0, pixel)) + (item * num_verts)[:, None]  # (P,3)
    corner_attrs = vert_attrs.reshape(-1, channels).index_select(0, corners.reshape(-1)).view(-1, 3, channels)
    bary = fragments.bary.reshape(-1, 3).index_select(0, pixel)
    values = torch.bmm(bary[:, None, :], corner_attrs).squeeze(1)
    out = torch.zeros((batch * height * width, channels), dtype=values.dtype, device=values.device)
    return out.index_put((pixel,), values).view(batch, height, width, channels)

"""Analytic checks of the rasterizer, cameras, shading and renderer (CPU, small images)."""

from __future__ import annotations

import math

import pytest
import torch

from scmcl.face3d.bench import ellipsoid_mesh, format_bench, run_raster_bench
from scmcl.face3d.camera import orthographic, perspective
from scmcl.face3d.raster import interpolate, rasterize
from scmcl.face3d.render import render_mesh
from scmcl.face3d.shading import lambertian, vertex_normals

H, W = 32, 40
FACE = torch.tensor([[0, 1, 2]])


def _tri(points: list[tuple[float, float, float]], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor([points], dtype=dtype)


def _centres(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    return xs + 0.5, ys + 0.5


def _inside(xy: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Independent point-in-triangle: all cross products share the sign of the orientation."""
    crosses = []
    for i in range(3):
        (ax, ay), (bx, by) = xy[i].tolist(), xy[(i + 1) % 3].tolist()
        crosses.append((bx - ax) * (py - ay) - (by - ay) * (px - ax))
    c = torch.stack(crosses)
    return (c >= 0).all(0) | (c <= 0).all(0)


SKEWED = [(3.3, 2.7, 1.0), (37.1, 9.6, 2.0), (11.8, 29.2, 3.0)]


@pytest.mark.parametrize("order", [[0, 1, 2], [0, 2, 1]])
def test_coverage_matches_pixel_centres_inside(order: list[int]) -> None:
    verts = _tri([SKEWED[i] for i in order])
    px, py = _centres(H, W)
    expected = _inside(verts[0, :, :2], px, py)
    frags = rasterize(verts, FACE, H, W)
    assert expected.sum() > 100
    assert torch.equal(frags.mask[0], expected)
    assert torch.equal(frags.pix_to_face[0][expected], torch.zeros(int(expected.sum()), dtype=torch.int64))


def test_interpolation_is_the_affine_function_at_pixel_centres() -> None:
    verts = _tri(SKEWED)
    affine = lambda x, y: torch.stack([2.0 * x - 3.0 * y + 1.0, 0.5 * x + 0.25 * y], dim=-1)  # noqa: E731
    attrs = affine(verts[..., 0], verts[..., 1])
    frags = rasterize(verts, FACE, H, W)
    out = interpolate(frags, FACE, attrs)[0]
    px, py = _centres(H, W)
    mask = frags.mask[0]
    torch.testing.assert_close(out[mask], affine(px, py)[mask])
    plane = torch.linalg.solve(torch.cat([verts[0, :, :2], torch.ones(3, 1, dtype=verts.dtype)], dim=1), verts[0, :, 2])
    torch.testing.assert_close(frags.zbuf[0][mask], (plane[0] * px + plane[1] * py + plane[2])[mask])


@pytest.mark.parametrize("near_first", [True, False])
def test_nearer_triangle_wins_in_either_order(near_first: bool) -> None:
    near = [(2.2, 2.1, 1.0), (30.3, 4.2, 1.0), (8.1, 28.7, 1.0)]
    far = [(4.4, 1.3, 2.0), (36.2, 20.1, 2.0), (3.1, 30.6, 2.0)]
    verts = _tri(near + far if near_first else far + near)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    near_index = 0 if near_first else 1
    px, py = _centres(H, W)
    in_near = _inside(torch.tensor(near)[:, :2], px, py)
    in_far = _inside(torch.tensor(far)[:, :2], px, py)
    frags = rasterize(verts, faces, H, W)
    p2f = frags.pix_to_face[0]
    assert (in_near & in_far).sum() > 50
    assert (p2f[in_near] == near_index).all()
    assert (p2f[in_far & ~in_near] == 1 - near_index).all()
    torch.testing.assert_close(frags.zbuf[0][in_near], torch.ones(int(in_near.sum()), dtype=torch.float64))


def test_background_is_empty() -> None:
    verts = _tri(SKEWED)
    frags = rasterize(verts, FACE, H, W)
    background = ~frags.mask[0]
    assert background.sum() > 100
    assert (frags.pix_to_face[0][background] == -1).all()
    assert torch.isinf(frags.zbuf[0][background]).all()
    assert (frags.bary[0][background] == 0).all()
    colours = interpolate(frags, FACE, torch.ones(1, 3, 3, dtype=torch.float64))
    assert (colours[0][background] == 0).all()
    torch.testing.assert_close(colours[0][~background], torch.ones_like(colours[0][~background]))


def test_batch_equals_items_one_by_one() -> None:
    gen = torch.Generator().manual_seed(0)
    verts = torch.rand(3, 12, 3, generator=gen) * torch.tensor([W, H, 1.0]) + torch.tensor([0.0, 0.0, 0.5])
    faces = torch.randint(0, 12, (10, 3), generator=gen)
    attrs = torch.rand(3, 12, 2, generator=gen)
    batched = rasterize(verts, faces, H, W)
    colours = interpolate(batched, faces, attrs)
    assert batched.mask.sum() > 100
    assert torch.equal(rasterize(verts, faces, H, W, max_pairs=5).pix_to_face, batched.pix_to_face)
    for b in range(3):
        single = rasterize(verts[b : b + 1], faces, H, W)
        assert torch.equal(single.pix_to_face[0], batched.pix_to_face[b])
        torch.testing.assert_close(single.zbuf[0], batched.zbuf[b])
        torch.testing.assert_close(interpolate(single, faces, attrs[b : b + 1])[0], colours[b])


def test_chunking_covers_a_huge_triangle_exactly() -> None:
    verts = _tri([(-50.0, -40.0, 1.0), (200.0, 5.0, 2.0), (5.0, 150.0, 3.0)], dtype=torch.float32)
    whole = rasterize(verts, FACE, H, W)
    chunked = rasterize(verts, FACE, H, W, max_pairs=7)
    assert whole.mask.all()
    assert torch.equal(whole.pix_to_face, chunked.pix_to_face)
    torch.testing.assert_close(whole.zbuf, chunked.zbuf)


def test_culling_near_plane_and_degenerate_faces() -> None:
    ccw_on_screen = [(5.0, 25.0, 1.0), (30.0, 25.0, 1.0), (15.0, 3.0, 1.0)]  # y down: this is CCW as displayed
    verts = _tri(ccw_on_screen)
    assert rasterize(verts, FACE, H, W, cull_backfaces=True).mask.any()
    assert not rasterize(verts[:, [0, 2, 1]], FACE, H, W, cull_backfaces=True).mask.any()
    behind = verts.clone()
    behind[0, 2, 2] = -0.5
    assert not rasterize(behind, FACE, H, W).mask.any()
    line = _tri([(1.0, 1.0, 1.0), (20.0, 20.0, 1.0), (10.0, 10.0, 1.0)])
    assert not rasterize(line, FACE, H, W).mask.any()


def test_orthographic_maps_known_points_with_y_up() -> None:
    verts = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 0.2], [-1.0, -1.0, -0.3], [0.1, 0.0, 0.0]]])
    screen = orthographic(verts, torch.tensor([[1.0, 0.0, 0.0]]), H, W)
    expected_xy = torch.tensor([[W / 2, H / 2], [W, 0.0], [0.0, H], [W / 2 + 0.1 * W / 2, H / 2]])
    torch.testing.assert_close(screen[0, :, :2], expected_xy)
    torch.testing.assert_close(screen[0, :, 2], 10.0 - verts[0, :, 2])
    moved = orthographic(verts[:, :1], torch.tensor([[2.0, 0.25, -0.5]]), H, W)
    torch.testing.assert_close(moved[0, 0, :2], torch.tensor([(0.5 + 1) * W / 2, (1 + 1.0) * H / 2]))


def test_perspective_axis_point_is_centred_and_far_points_shrink() -> None:
    eye = torch.eye(3)[None]
    t = torch.tensor([[0.0, 0.0, -1.0]])  # camera at world z = +1 looking at the origin
    on_axis = perspective(torch.tensor([[[0.0, 0.0, 0.3]]]), 100.0, eye, t, H, W)
    torch.testing.assert_close(on_axis[0, 0], torch.tensor([W / 2, H / 2, 0.7]))
    offsets = torch.tensor([[[0.1, 0.1, z] for z in (0.5, 0.0, -1.0, -4.0)]])
    screen = perspective(offsets, torch.tensor([100.0]), eye, t, H, W)
    depth = 1.0 - offsets[0, :, 2]
    torch.testing.assert_close(screen[0, :, 2], depth)
    torch.testing.assert_close(screen[0, :, 0], W / 2 + 100.0 * 0.1 / depth)
    torch.testing.assert_close(screen[0, :, 1], H / 2 - 100.0 * 0.1 / depth)
    assert (screen[0, :, 0].diff() < 0).all() and (screen[0, :, 1].diff() > 0).all()


def test_perspective_correct_matches_ray_plane_intersection() -> None:
    world = torch.tensor([[[-1.0, -1.0, -1.0], [1.5, -0.5, -6.0], [0.0, 1.2, -2.0]]], dtype=torch.float64)
    eye, t, focal = torch.eye(3, dtype=torch.float64)[None], torch.zeros(1, 3, dtype=torch.float64), 12.0
    screen = perspective(world, focal, eye, t, H, W)
    correct = rasterize(screen, FACE, H, W, perspective_correct=True)
    affine = rasterize(screen, FACE, H, W)
    mask = correct.mask[0]
    assert mask.sum() > 50
    px, py = _centres(H, W)
    rays = torch.stack([(px - W / 2) / focal, -(py - H / 2) / focal, -torch.ones_like(px)], dim=-1)
    normal = torch.linalg.cross(world[0, 1] - world[0, 0], world[0, 2] - world[0, 0], dim=0)
    hits = rays * ((world[0, 0] @ normal) / (rays @ normal))[..., None]
    torch.testing.assert_close(interpolate(correct, FACE, world)[0][mask], hits[mask])
    torch.testing.assert_close(correct.zbuf[0][mask], -hits[..., 2][mask])
    gap = (interpolate(affine, FACE, world)[0][mask] - hits[mask]).abs().max()
    assert gap > 0.1


def test_flat_triangle_normals_point_out_of_its_ccw_side() -> None:
    verts = torch.tensor([[[0.0, 0.0, 0.5], [2.0, 0.0, 0.5], [0.0, 3.0, 0.5]]])
    torch.testing.assert_close(vertex_normals(verts, FACE), torch.tensor([[[0.0, 0.0, 1.0]] * 3]))
    torch.testing.assert_close(vertex_normals(verts, FACE[:, [0, 2, 1]]), torch.tensor([[[0.0, 0.0, -1.0]] * 3]))


def test_lambert_facing_and_facing_away() -> None:
    normals = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, math.sqrt(0.5), math.sqrt(0.5)]])
    albedo = torch.tensor([[0.5, 0.4, 0.2]]).expand(3, 3)
    color = torch.tensor([[0.8, 0.6, 1.0]])
    out = lambertian(normals, albedo, torch.tensor([[0.0, 0.0, 2.0]]), color, ambient=0.1)
    torch.testing.assert_close(out[0], albedo[0] * (color[0] + 0.1))
    torch.testing.assert_close(out[1], albedo[1] * 0.1)
    torch.testing.assert_close(out[2], albedo[2] * (color[0] * math.sqrt(0.5) + 0.1))
    per_item = lambertian(normals[None], albedo[None], torch.tensor([[[0.0, 0.0, 1.0]]]), color[None], ambient=0.0)
    torch.testing.assert_close(per_item[0, 0], albedo[0] * color[0])
    torch.testing.assert_close(per_item[0, 1], torch.zeros(3))


def test_render_mesh_ellipsoid() -> None:
    verts, faces = ellipsoid_mesh(n_lat=12, n_lon=16)
    verts = verts[None]
    screen = orthographic(verts, torch.tensor([[7.0, 0.0, 0.0]]), H, W)
    colours = torch.full_like(verts, 0.5)
    background = torch.tensor([0.0, 1.0, 0.0])
    image, mask, frags = render_mesh(verts, faces, colours, screen, H, W, ambient=0.2, background=background)
    assert image.shape == (1, H, W, 3) and 0 <= image.min() and image.max() <= 1
    assert mask.any() and not mask.all()
    assert (image[0][~mask[0]] == background).all()
    centre = image[0, H // 2, W // 2]  # surface faces the default light's z component: lit above ambient
    assert (centre > 0.5 * 0.2).all()
    assert torch.equal(mask, frags.mask)


def test_bench_reports_figures() -> None:
    result = run_raster_bench(size=32, batch=1, iters=1)
    assert result["faces"] == 10000 and result["frames_per_s"] > 0
    assert "frames/s" in format_bench(result)


def test_gradients_reach_screen_vertices() -> None:
    verts = _tri(SKEWED).requires_grad_(True)
    frags = rasterize(verts, FACE, H, W)
    interpolate(frags, FACE, torch.rand(1, 3, 2, dtype=torch.float64)).sum().backward()
    assert verts.grad is not None and verts.grad.abs().sum() > 0

"""Conditioning images, eye points and similarity alignment, checked against analytic answers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from scmcl.face3d.bench import ellipsoid_mesh
from scmcl.face3d.camera import orthographic
from scmcl.face3d.flame import FlameLayer
from scmcl.face3d.flame_model import FlameModel, LandmarkEmbedding
from scmcl.face3d.raster import rasterize
from scmcl.preprocess.align import (
    EYE_LINE, EYE_TO_MOUTH, invert, landmark_template, load_template, transform_points, umeyama, umeyama_batch,
    warp_stack,
)
from scmcl.preprocess.conditioning import (
    FRONT_FACING_MIN_NZ, SHAPE_ALBEDO, SHAPE_LIGHT_DIRS, SHAPE_LIGHT_INTENSITY, eye_gaze_image, face_mask,
    nmfc_colors, nmfc_image, pupil_radii, rasterize_surface, shape_image,
)
from scmcl.preprocess.eyes import eye_landmarks
from tests.helpers import render_face_mask, render_nmfc, render_shape

SIZE = 64
SCALE = 0.8  # the unit sphere's silhouette has radius SCALE * SIZE / 2 pixels


@pytest.fixture(scope="module")
def sphere() -> tuple[torch.Tensor, torch.Tensor]:
    verts, faces = ellipsoid_mesh(41, 80, (1.0, 1.0, 1.0))
    return verts.double(), faces


def _cam(batch: int = 1) -> torch.Tensor:
    return torch.tensor([[SCALE, 0.0, 0.0]], dtype=torch.float64).expand(batch, -1)


def _world_xy() -> tuple[torch.Tensor, torch.Tensor]:
    """World (x, y) under each pixel centre for the camera of :func:`_cam`."""
    centres = (torch.arange(SIZE, dtype=torch.float64) + 0.5) / (SIZE / 2)
    y, x = torch.meshgrid((1.0 - centres) / SCALE, (centres - 1.0) / SCALE, indexing="ij")
    return x, y


def _yaw(verts: torch.Tensor, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=verts.dtype)
    return verts @ rot.T


# --- NMFC, shape and mask images --------------------------------------------------------------

def test_nmfc_colors_span_unit_interval_per_axis() -> None:
    template = np.random.default_rng(0).normal(size=(500, 3)) * [0.08, 0.1, 0.06] + [0.0, 0.02, -0.01]
    colors = nmfc_colors(template)
    assert colors.shape == (500, 3)
    assert torch.allclose(colors.amin(0), torch.zeros(3, dtype=colors.dtype))
    assert torch.allclose(colors.amax(0), torch.ones(3, dtype=colors.dtype))
    assert torch.argmax(colors[:, 0]) == int(np.argmax(template[:, 0]))  # R follows x


def test_nmfc_of_a_frontal_sphere_is_its_normalised_position(sphere) -> None:
    verts, faces = sphere
    nmfc = render_nmfc(verts[None], faces, _cam(), nmfc_colors(verts), SIZE)[0]
    assert nmfc.shape == (SIZE, SIZE, 3) and nmfc.min() >= 0 and nmfc.max() <= 1
    x, y = _world_xy()
    radius = torch.hypot(x, y) * SCALE * SIZE / 2  # pixels from the image centre
    drawn = nmfc.sum(-1) > 0
    assert drawn[radius < SCALE * SIZE / 2 - 1.0].all() and not drawn[radius > SCALE * SIZE / 2].any()
    # x and y are affine on every (planar, orthographically projected) triangle: exact colours.
    lo, hi = verts.amin(0), verts.amax(0)
    assert torch.allclose(nmfc[..., 0][drawn], ((x - lo[0]) / (hi[0] - lo[0]))[drawn], atol=1e-6)
    assert torch.allclose(nmfc[..., 1][drawn], ((y - lo[1]) / (hi[1] - lo[1]))[drawn], atol=1e-6)
    row, col = SIZE // 2, SIZE // 2
    assert nmfc[row, col - 10, 0] < nmfc[row, col, 0] < nmfc[row, col + 10, 0]  # R grows to the right
    assert nmfc[row - 10, col, 1] > nmfc[row, col, 1] > nmfc[row + 10, col, 1]  # G falls downwards (y up)
    assert nmfc[row, col, 2] > 0.95  # the nearest point has the largest z


def test_back_faces_are_dropped(sphere) -> None:
    verts, faces = sphere
    cap = faces[(verts[faces][..., 2] > 0.5).all(dim=1)]  # an open shell facing +z
    colors = nmfc_colors(verts)
    front = render_nmfc(verts[None], cap, _cam(), colors, SIZE)
    behind = _yaw(verts, math.pi)[None]
    assert (front.sum(-1) > 0).sum() > 500
    assert rasterize(orthographic(behind, _cam(), SIZE, SIZE), cap, SIZE, SIZE).mask.sum() > 500  # covered ...
    assert render_nmfc(behind, cap, _cam(), colors, SIZE).abs().max() == 0  # ... but seen from inside
    assert not render_face_mask(behind, cap, _cam(), SIZE).any()
    assert render_shape(behind, cap, _cam(), SIZE).abs().max() == 0


def _deca_shading(normals: torch.Tensor) -> torch.Tensor:
    """DECA's add_directionlight: mean over lights of clamp(n.l, 0, 1) * intensity, times the grey albedo."""
    dirs = torch.tensor(SHAPE_LIGHT_DIRS, dtype=normals.dtype)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return SHAPE_ALBEDO * SHAPE_LIGHT_INTENSITY * (normals @ dirs.T).clamp(0, 1).mean(-1)


def test_shape_image_of_a_sphere_follows_the_five_lights(sphere) -> None:
    verts, faces = sphere
    shape = render_shape(verts[None], faces, _cam(), SIZE)[0]
    x, y = _world_xy()
    drawn = shape.sum(-1) > 0
    assert torch.equal(drawn, render_face_mask(verts[None], faces, _cam(), SIZE)[0])
    torch.testing.assert_close(shape, shape[..., :1].expand_as(shape), rtol=0, atol=1e-12)  # grey (float64)
    normal = torch.stack([x, y, (1 - x * x - y * y).clamp_min(0).sqrt()], dim=-1)
    inner = drawn & (torch.hypot(x, y) < 0.95)
    assert (shape[..., 0][inner] - _deca_shading(normal)[inner]).abs().max() < 0.01
    peak = divmod(int(torch.argmax(shape[..., 0])), SIZE)
    assert max(abs(peak[0] + 0.5 - SIZE / 2), abs(peak[1] + 0.5 - SIZE / 2)) <= 1.5  # n = (0,0,1) is brightest
    facing = float(_deca_shading(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)))
    assert float(shape[..., 0].max()) == pytest.approx(facing, abs=2e-3)


def test_shape_normals_override_only_changes_shading(sphere) -> None:
    verts, faces = sphere
    flat = torch.zeros_like(verts)[None]
    flat[..., 2] = 1.0
    shape = render_shape(verts[None], faces, _cam(), SIZE, normals=flat)[0]
    mask = render_face_mask(verts[None], faces, _cam(), SIZE)[0]
    assert torch.equal(shape.sum(-1) > 0, mask)
    assert torch.allclose(shape[mask], torch.full_like(shape[mask], float(_deca_shading(flat[0, 0]))))


def test_face_mask_equals_where_nmfc_is_drawn(sphere) -> None:
    verts, faces = sphere
    batch = torch.stack([_yaw(verts, 0.0), _yaw(verts, 0.7)])
    cam = torch.tensor([[SCALE, 0.0, 0.0], [0.6, 0.2, -0.1]], dtype=torch.float64)
    surface = rasterize_surface(batch, faces, cam, SIZE)
    nmfc = nmfc_image(surface, faces, nmfc_colors(verts))
    mask = face_mask(surface, faces)
    assert torch.equal(mask, nmfc.sum(-1) > 0)
    assert torch.equal(mask, render_face_mask(batch, faces, cam, SIZE))
    assert torch.equal(shape_image(surface, faces).sum(-1) > 0, mask)
    assert (surface.normals[..., 2][mask] > FRONT_FACING_MIN_NZ).all()

    upper = verts[:, 1] > 0
    part = render_face_mask(batch, faces, cam, SIZE, upper)
    assert part.sum() > 0.3 * mask.sum() and not (part & ~mask).any()
    rows = torch.arange(SIZE)[None, :, None].expand_as(part)
    assert rows[0][part[0]].max() < SIZE / 2 + 1  # only the upper half of the frontal sphere


def test_pixel_transform_renders_straight_into_another_frame(sphere) -> None:
    verts, faces = sphere
    colors = nmfc_colors(verts)
    double = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]], dtype=torch.float64)
    big = render_nmfc(verts[None], faces, _cam(), colors, SIZE)
    small_to_big = render_nmfc(verts[None], faces, _cam(), colors, SIZE // 2, pixel_transform=double, out_size=SIZE)
    assert torch.allclose(big, small_to_big, atol=1e-9)


# --- eye-gaze image ----------------------------------------------------------------------------

def _eye(cx: float, cy: float, w: float, h: float) -> np.ndarray:
    """Six iBUG-ordered eye points: outer corner, two upper lid points, inner corner, two lower ones."""
    return np.array([[cx - w, cy], [cx - w / 3, cy - h], [cx + w / 3, cy - h],
                     [cx + w, cy], [cx + w / 3, cy + h], [cx - w / 3, cy + h]])


def _eye_points() -> np.ndarray:
    right, left = _eye(20.3, 30.6, 7.0, 3.1), _eye(44.1, 29.8, 6.5, 2.9)
    return np.concatenate([right, left, [[21.2, 30.9], [43.6, 29.4]]])[None]  # (1,14,2)


def test_eye_gaze_image_draws_red_discs_at_the_pupils() -> None:
    points = _eye_points()
    image = eye_gaze_image(points, SIZE)[0].numpy()
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert not image[..., 1:].any() and set(np.unique(image[..., 0])) == {0, 255}
    radii = []
    for e in range(2):
        p = points[0, 6 * e:6 * e + 6]
        radii.append((np.linalg.norm(p[1] - p[4]) + np.linalg.norm(p[2] - p[5])) / 4)
    assert np.allclose(pupil_radii(torch.as_tensor(points))[0].numpy(), radii)
    expected = np.zeros((SIZE, SIZE), bool)
    for (px, py), r in zip(points[0, 12:14], radii):
        for i in range(SIZE):
            for j in range(SIZE):
                expected[i, j] |= (j + 0.5 - px) ** 2 + (i + 0.5 - py) ** 2 < r * r
    assert np.array_equal(image[..., 0] == 255, expected)
    for (px, py), r, half in zip(points[0, 12:14], radii, (slice(0, SIZE // 2), slice(SIZE // 2, SIZE))):
        disc = image[:, half, 0] == 255
        assert abs(disc.sum() - math.pi * r * r) < 2 * math.pi * r * 0.5 + 1
        rows, cols = np.nonzero(disc)
        assert abs(cols.mean() + 0.5 + half.start - px) < 0.5 and abs(rows.mean() + 0.5 - py) < 0.5


def test_eye_gaze_image_ignores_mouth_points_and_skips_nan() -> None:
    points = _eye_points()
    with_mouth = np.concatenate([points, np.full((1, 20, 2), 32.0)], axis=1)
    assert torch.equal(eye_gaze_image(with_mouth, SIZE), eye_gaze_image(points, SIZE))
    assert not eye_gaze_image(np.full((1, 14, 2), np.nan), SIZE).any()


# --- eye landmarks -----------------------------------------------------------------------------

def _face_frame(pupils: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """A grey frame with two bright eye polygons holding dark discs, and 68 landmarks around them."""
    frame = np.full((SIZE, SIZE, 3), 150, np.uint8)
    landmarks = np.random.default_rng(1).uniform(5, SIZE - 5, (68, 2))
    landmarks[36:42], landmarks[42:48] = _eye(20.0, 30.0, 9.0, 4.5), _eye(44.0, 30.0, 9.0, 4.5)
    for eye in (landmarks[36:42], landmarks[42:48]):
        cv2.fillPoly(frame, [np.round((eye - 0.5) * 16).astype(np.int32)], (235, 235, 235), shift=4)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    for px, py in pupils:
        frame[(xs - px) ** 2 + (ys - py) ** 2 < 2.5 ** 2] = 10
    return frame, landmarks


def test_eye_landmarks_find_dark_pupils() -> None:
    pupils = [(18.5, 30.5), (46.0, 29.5)]
    frame, landmarks = _face_frame(pupils)
    frames, lmk = np.stack([frame, frame]), np.stack([landmarks, landmarks])
    lmk[1] = np.nan
    out = eye_landmarks(frames, lmk, with_mouth=False)
    assert isinstance(out, np.ndarray) and out.shape == (2, 14, 2)
    assert np.array_equal(out[0, :12], landmarks[36:48])
    assert np.abs(out[0, 12:] - np.array(pupils)).max() < 0.5
    assert np.isnan(out[1]).all()

    mouth = eye_landmarks(torch.as_tensor(frames), torch.as_tensor(lmk), with_mouth=True)
    assert isinstance(mouth, torch.Tensor) and mouth.shape == (2, 34, 2)
    assert np.allclose(mouth[0, :14].numpy(), out[0]) and np.array_equal(mouth[0, 14:].numpy(), landmarks[48:68])


def test_eye_landmarks_fall_back_to_the_centroid_of_a_closed_eye() -> None:
    frame, landmarks = _face_frame([(18.5, 30.5), (46.0, 29.5)])
    landmarks[36:42, 1] = 30.0  # a closed (flat) right eye between pixel rows 29 and 30
    out = eye_landmarks(frame[None], landmarks[None], with_mouth=False)
    assert np.allclose(out[0, 12], landmarks[36:42].mean(axis=0))
    assert np.abs(out[0, 13] - [46.0, 29.5]).max() < 0.5


# --- similarity alignment ----------------------------------------------------------------------

def _similarity(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def _reference_umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Umeyama (1991) via the SVD, with scale and the reflection guard."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = np.trace(np.diag(sig) @ d) / a.var(axis=0).sum()
    return np.concatenate([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]], axis=1)


def test_umeyama_recovers_a_similarity_and_batches() -> None:
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 256, (68, 2))
    truth = _similarity(1.3, 0.4, (-20.0, 35.0))
    dst = src @ truth[:, :2].T + truth[:, 2]
    assert np.allclose(umeyama(src, dst), truth, atol=1e-9)

    frames = src + rng.normal(0, 3.0, (5, 68, 2))
    frames[2] = frames[2] @ np.diag([-1.0, 1.0])  # a mirrored frame: still a proper rotation
    batch = umeyama_batch(frames, dst)
    assert batch.shape == (5, 2, 3)
    for t in range(5):
        assert np.allclose(batch[t], umeyama(frames[t], dst), atol=1e-12)
        assert np.allclose(batch[t], _reference_umeyama(frames[t], dst), atol=1e-9)
    frames[3, 10] = np.nan
    assert np.isnan(umeyama_batch(frames, dst)[3]).all()


def _blob(centre: tuple[float, float], size: int, sigma: float = 1.5) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    return np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def _peak(image: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]] + 0.5
    weight = np.clip(image, 0, None) * (image > 0.2 * image.max())
    return np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()


@pytest.mark.parametrize("interpolation", ["lanczos", "linear", "nearest"])
def test_warped_pixels_land_on_transformed_points(interpolation: str) -> None:
    points = np.array([[[20.3, 27.8]], [[40.0, 12.5]]])
    images = np.stack([_blob(tuple(p[0]), SIZE) for p in points])[..., None]
    matrices = np.stack([_similarity(1.2, 0.3, (5.0, -4.0)), _similarity(0.8, -0.5, (-3.0, 20.0))])
    warped = warp_stack(images, matrices, SIZE, interpolation)
    assert warped.shape == (2, SIZE, SIZE, 1)
    target = transform_points(points, matrices)
    for t in range(2):
        assert np.abs(_peak(warped[t, ..., 0]) - target[t, 0]).max() < 0.15  # a missed half-pixel shift is 0.3
    back = transform_points(target, invert(matrices))
    assert np.allclose(back, points)


def test_warp_identity_and_pixel_centres() -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    identity = np.tile(np.eye(2, 3), (2, 1, 1))
    for interpolation in ("lanczos", "linear", "nearest"):
        assert np.array_equal(warp_stack(images, identity, 16, interpolation), images)
    # Scaling by 3 about the image corner maps pixel (i, j) exactly onto the block (3i..3i+2, 3j..3j+2).
    block = warp_stack(images, np.tile([[3.0, 0, 0], [0, 3.0, 0]], (2, 1, 1)), 48, "nearest")
    assert np.array_equal(block, images.repeat(3, axis=1).repeat(3, axis=2))
    masks = images[..., 0] > 128
    assert warp_stack(masks, identity, 16, "nearest").dtype == bool
    assert not warp_stack(images, np.full((2, 2, 3), np.nan), 16).any()


def _mirror_index() -> np.ndarray:
    """iBUG-68 index of each point's left/right mirror partner."""
    pairs = [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)]
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
    mirror = np.arange(68)
    for a, b in pairs:
        mirror[a], mirror[b] = b, a
    return mirror


def _symmetric_landmarks() -> np.ndarray:
    """(68,3) world points (metres, y up) of a face that is exactly left/right symmetric."""
    rng = np.random.default_rng(4)
    points = np.zeros((68, 3))
    jaw = np.linspace(-1.0, 1.0, 17)
    points[:17] = np.stack([0.07 * np.sin(jaw * 1.4), -0.02 - 0.06 * np.cos(jaw * 1.2), 0.02 * np.cos(jaw)], 1)
    points[17:27, 1], points[36:48, 1], points[48:68, 1] = 0.045, 0.03, -0.045
    points[27:36] = np.stack([np.zeros(9), np.linspace(0.03, -0.015, 9), np.full(9, 0.09)], 1)
    mirror = _mirror_index()
    for a in range(17, 68):
        b = mirror[a]
        if a < b:
            x = 0.015 + rng.uniform(0.0, 0.03) if a < 27 or a >= 36 else 0.01
            points[a, 0], points[b, 0] = -x, x
            points[b, 1:] = points[a, 1:] = points[a, 1:] + rng.normal(0, 0.004, 2)
    return points


def test_template_is_inside_the_crop_and_symmetric(tmp_path) -> None:
    template = landmark_template(_symmetric_landmarks(), 256)
    assert template.shape == (68, 2)
    assert (template > 0).all() and (template < 256).all()
    mirrored = template[_mirror_index()] * [-1.0, 1.0] + [256.0, 0.0]
    assert np.allclose(mirrored, template)
    eyes = (template[36:42].mean(0) + template[42:48].mean(0)) / 2
    assert np.allclose(eyes, [128.0, EYE_LINE * 256])
    assert template[48:68, 1].mean() - eyes[1] == pytest.approx(EYE_TO_MOUTH * 256)
    assert template[8, 1] > template[57, 1] > template[33, 1] > template[30, 1] > template[19, 1]  # y down

    np.save(tmp_path / "t.npy", template)
    assert np.array_equal(load_template(tmp_path / "t.npy"), template)
    np.savetxt(tmp_path / "t.gz", template - 0.5)  # NED's text format: pixel indices
    assert np.allclose(load_template(tmp_path / "t.gz"), template)


def _landmark_layer(points: np.ndarray) -> FlameLayer:
    """A rigid FLAME-format toy whose 68 landmarks are its own vertices (one-vertex faces, bary (1,0,0))."""
    n = len(points)
    weights = np.zeros((n, 5))
    weights[:, 0] = 1.0
    model = FlameModel(
        v_template=points, faces=np.repeat(np.arange(n)[:, None], 3, axis=1), shapedirs=np.zeros((n, 3, 2)),
        posedirs=np.zeros((n, 3, 36)), J_regressor=np.full((5, n), 1.0 / n),
        kintree_table=np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64), weights=weights,
        shape_basis_size=1,
    )
    corner = np.tile([1.0, 0.0, 0.0], (68, 1))
    embedding = LandmarkEmbedding(
        static_lmk_faces_idx=np.arange(17, 68), static_lmk_bary_coords=corner[17:],
        dynamic_lmk_faces_idx=np.tile(np.arange(17), (79, 1)), dynamic_lmk_bary_coords=np.tile(corner[:17], (79, 1, 1)),
        full_lmk_faces_idx=np.arange(68)[None], full_lmk_bary_coords=corner[None],
    )
    return FlameLayer(model, embedding, dtype=torch.float64)


def test_template_from_a_flame_layer_uses_its_neutral_landmarks() -> None:
    points = _symmetric_landmarks()
    assert np.allclose(landmark_template(_landmark_layer(points), 256), landmark_template(points, 256))

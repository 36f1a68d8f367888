"""The built-in procedural head: FLAME's layout and conventions, a sound mesh, blendshapes and
landmarks that do what their names say, and renders that show skin, eyes and an open mouth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scmcl.corpus.head import EXPRESSION_NAMES, REGION_NAMES, build_head
from scmcl.face3d.camera import orthographic
from scmcl.face3d.flame import CONTOUR_BIN_YAWS, FlameLayer
from scmcl.face3d.flame_file import (load_flame_model, load_landmark_embedding, save_flame_model,
                                     save_landmark_embedding)
from scmcl.face3d.raster import interpolate, rasterize
from tests.helpers import assert_float32_close

EXP = {name: i for i, name in enumerate(EXPRESSION_NAMES)}
REGION = {name: i for i, name in enumerate(REGION_NAMES)}
#: iBUG-68 index of each point's mirror image (left <-> right).
IBUG_MIRROR = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
               + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
               + [64, 63, 62, 61, 60, 67, 66, 65])
SIZE = 128
CAM = torch.tensor([[6.5, 0.0, 0.01]])


@pytest.fixture(scope="module")
def head():
    return build_head(seed=0)


@pytest.fixture(scope="module")
def layer(head):
    return FlameLayer(*head)


def pose_head(layer, exp=None, jaw=0.0, yaw=0.0, shape=None):
    """Vertices (V,3) and landmarks (68,3) for named expression activations and a jaw/yaw pose."""
    e = torch.zeros(1, layer.n_exp)
    for name, value in (exp or {}).items():
        e[0, EXP[name]] = value
    pose = torch.tensor([[0.0, yaw, 0.0, jaw, 0.0, 0.0]])
    s = torch.zeros(1, layer.n_shape) if shape is None else torch.as_tensor(shape, dtype=torch.float32)[None]
    out = layer(shape=s, exp=e, pose=pose)
    return out.vertices[0].double().numpy(), out.landmarks[0].double().numpy()


def region_map(layer, head, **kwargs) -> np.ndarray:
    """(H,W) region index seen by a front orthographic camera (-1 = background)."""
    model, _ = head
    verts, _ = pose_head(layer, **kwargs)
    verts = torch.as_tensor(verts, dtype=torch.float32)[None]
    screen = orthographic(verts, CAM, SIZE, SIZE)
    fragments = rasterize(screen, layer.faces, SIZE, SIZE)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(model.extras["vertex_region"].astype(np.int64)),
                                         len(REGION_NAMES)).float()[None]
    labels = interpolate(fragments, layer.faces, onehot)[0].argmax(-1)
    return torch.where(fragments.mask[0], labels, -1).numpy()


def to_pixels(points: np.ndarray) -> np.ndarray:
    return orthographic(torch.as_tensor(points, dtype=torch.float32)[None], CAM, SIZE, SIZE)[0, :, :2].numpy()


def test_flame_layout(head):
    model, emb = head
    v = model.num_vertices
    assert 2000 <= v <= 6000
    assert model.v_template.shape == (v, 3) and model.faces.shape[1] == 3 and model.faces.dtype == np.int64
    assert 20 <= model.num_shape <= 50 and model.num_expression == 25 == len(EXPRESSION_NAMES)
    assert model.shapedirs.shape == (v, 3, model.num_shape + 25)
    assert model.posedirs.shape == (v, 3, 36)
    assert model.J_regressor.shape == (5, v) and model.weights.shape == (v, 5)
    np.testing.assert_array_equal(model.kintree_table, [[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]])
    np.testing.assert_allclose(model.weights.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(model.J_regressor.sum(1), 1.0, atol=1e-12)
    assert model.weights.min() >= 0.0 and model.J_regressor.min() >= 0.0
    assert list(model.extras["expression_names"]) == list(EXPRESSION_NAMES)
    assert list(model.extras["region_names"]) == list(REGION_NAMES)
    labels = model.extras["vertex_region"]
    assert labels.shape == (v,) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(len(REGION_NAMES))), "every region has vertices"
    assert emb.static_lmk_faces_idx.shape == (51,) and emb.static_lmk_bary_coords.shape == (51, 3)
    assert emb.dynamic_lmk_faces_idx.shape == (79, 17) and emb.dynamic_lmk_bary_coords.shape == (79, 17, 3)
    assert emb.full_lmk_faces_idx.shape == (1, 68) and emb.full_lmk_bary_coords.shape == (1, 68, 3)
    for bary in (emb.static_lmk_bary_coords, emb.dynamic_lmk_bary_coords, emb.full_lmk_bary_coords):
        assert bary.min() >= 0.0
        np.testing.assert_allclose(bary.sum(-1), 1.0, atol=1e-9)
    assert emb.dynamic_lmk_faces_idx.max() < len(model.faces)


def test_round_trip_through_flame_files(head, tmp_path):
    model, emb = head
    save_flame_model(tmp_path / "generic_model.pkl", model)
    save_landmark_embedding(tmp_path / "landmark_embedding.npy", emb)
    loaded = load_flame_model(tmp_path / "generic_model.pkl")
    loaded_emb = load_landmark_embedding(tmp_path / "landmark_embedding.npy")
    for name in ("v_template", "faces", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name), err_msg=name)
    assert loaded.shape_basis_size == model.shape_basis_size
    assert list(loaded.extras["expression_names"]) == list(EXPRESSION_NAMES)
    np.testing.assert_array_equal(loaded.extras["vertex_region"], model.extras["vertex_region"])
    for name in vars(emb):
        np.testing.assert_array_equal(getattr(loaded_emb, name), getattr(emb, name), err_msg=name)
    exp = torch.zeros(1, 25)
    exp[0, EXP["lips_funnel"]] = 0.7
    a = FlameLayer(model, emb)(exp=exp)
    b = FlameLayer(loaded, loaded_emb)(exp=exp)
    torch.testing.assert_close(a.landmarks, b.landmarks)


def test_deterministic_and_seeded(head):
    model, emb = head
    again, again_emb = build_head(seed=0)
    np.testing.assert_array_equal(again.shapedirs, model.shapedirs)
    np.testing.assert_array_equal(again_emb.dynamic_lmk_faces_idx, emb.dynamic_lmk_faces_idx)
    other, _ = build_head(seed=1)
    np.testing.assert_array_equal(other.v_template, model.v_template)
    assert not np.allclose(other.shapedirs[:, :, : model.num_shape], model.shapedirs[:, :, : model.num_shape])
    np.testing.assert_array_equal(other.shapedirs[:, :, model.num_shape:], model.shapedirs[:, :, model.num_shape:])


def _edges(faces: np.ndarray) -> np.ndarray:
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def test_mesh_is_closed_but_for_the_eye_openings_and_consistently_wound(head):
    model, _ = head
    faces, v = model.faces, model.v_template
    directed = _edges(faces)
    undirected, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    assert counts.max() <= 2, "non-manifold edges"
    # Every shared edge is walked once in each direction: one consistent orientation.
    pairs = {tuple(e) for e in directed}
    assert len(pairs) == len(directed), "an edge is walked twice in the same direction"
    boundary = undirected[counts == 1]
    assert len(boundary) > 0
    labels = model.extras["vertex_region"]
    assert set(labels[boundary.ravel()]) == {REGION["eyelid"]}, "only the eye openings are open"
    left = boundary[v[boundary[:, 0], 0] > 0]
    assert len(left) == len(boundary) - len(left), "one opening per eye, mirror images"
    for loop in (left, boundary[v[boundary[:, 0], 0] < 0]):
        assert np.all(np.bincount(loop.ravel())[np.unique(loop)] == 2), "each opening is one simple loop"
    tri = v[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert area.min() > 1e-9, "degenerate faces (< 0.001 mm^2)"


def test_faces_wind_outwards(head, layer):
    model, _ = head
    tri = model.v_template[model.faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    centre = tri.mean(1)
    front = (centre[:, 2] > 0.07) & (np.abs(centre[:, 0]) < 0.03) & (np.abs(centre[:, 1] + 0.01) < 0.05)
    front &= model.extras["vertex_region"][model.faces].max(1) <= REGION["eyelid"]
    assert front.sum() > 200 and (normal[front, 2] > 0).mean() > 0.97
    # Seen from the front, back-face culling removes nothing the camera sees.
    screen = orthographic(torch.as_tensor(model.v_template, dtype=torch.float32)[None], CAM, SIZE, SIZE)
    shown = rasterize(screen, layer.faces, SIZE, SIZE).pix_to_face
    culled = rasterize(screen, layer.faces, SIZE, SIZE, cull_backfaces=True).pix_to_face
    assert (shown == culled).float().mean() > 0.995
    # Each eyeball is a closed surface of positive volume (outward normals).
    for joint in (3, 4):
        idx = np.flatnonzero(model.weights[:, joint] == 1.0)
        own = np.isin(model.faces, idx).all(1)
        t = model.v_template[model.faces[own]] - model.J_regressor[joint] @ model.v_template
        assert np.einsum("fi,fi->f", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() > 0


def test_joints_and_skinning(head, layer):
    model, _ = head
    joints = layer().joints[0].double().numpy()
    assert abs(joints[2, 0]) < 1e-6 and joints[2, 1] > joints[1, 1], "jaw hinge on the midline, above the neck"
    assert joints[3, 0] > 0.02 and joints[4, 0] < -0.02, "eye_left on the subject's left (+x)"
    assert_float32_close(joints[3] * [-1, 1, 1], joints[4])
    eyes = model.weights[:, 3:].sum(1) == 1.0
    assert eyes.sum() > 100
    ball = model.v_template[model.weights[:, 3] == 1.0]
    np.testing.assert_allclose(joints[3], (ball.min(0) + ball.max(0)) / 2, atol=1e-4)
    labels = model.extras["vertex_region"]
    lips = (model.v_template[:, 2] > 0.08) & (np.abs(model.v_template[:, 0]) < 0.015)
    upper = (labels == REGION["lips"]) & lips & (model.v_template[:, 1] > -0.035)
    lower = (labels == REGION["lips"]) & lips & (model.v_template[:, 1] < -0.045)
    assert model.weights[upper, 2].max() < 0.1 and model.weights[lower, 2].min() > 0.9
    # Joints follow identity: a wider head moves the eyes apart.
    wide = np.zeros(model.num_shape)
    wide[0] = 2.0
    out = layer(shape=torch.tensor(wide, dtype=torch.float32)[None])
    assert out.joints[0, 3, 0] - out.joints[0, 4, 0] > joints[3, 0] - joints[4, 0]


def test_bases_are_smooth_and_of_plausible_size(head):
    """Identity at +-2 and every expression at 1 displace by millimetres and fold no face
    (closing a lid folds the skin at the eye corners only)."""
    model, _ = head
    s = model.num_shape
    tri = model.faces
    labels = model.extras["vertex_region"]

    def normals(v: np.ndarray) -> np.ndarray:
        return np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])

    base = normals(model.v_template)
    for k in range(model.shapedirs.shape[2]):
        coeffs = (-2.0, 2.0) if k < s else (1.0,)
        disp = np.linalg.norm(model.shapedirs[:, :, k], axis=1).max() * max(coeffs)
        assert 0.0015 < disp < 0.02, f"component {k}: peak displacement {disp * 1000:.1f} mm"
        for c in coeffs:
            folded = np.einsum("fi,fi->f", normals(model.v_template + c * model.shapedirs[:, :, k]), base) <= 0
            if k - s in (EXP["eyelid_close_left"], EXP["eyelid_close_right"]):
                assert folded.sum() <= 2 and (labels[tri[folded]] == REGION["eyelid"]).all()
            else:
                assert not folded.any(), f"component {k} at {c} folds {folded.sum()} faces"
    eyes = model.weights[:, 3:].sum(1) == 1.0
    assert np.abs(model.shapedirs[eyes, :, s:]).max() == 0.0, "expressions leave the eyeballs alone"
    assert 0.0 < np.abs(model.posedirs).max() < 0.01
    assert np.count_nonzero(np.abs(model.posedirs).max(axis=(0, 1))) == 1, "one jaw corrective"


def test_landmarks_mirror_symmetric_at_neutral(layer):
    _, lmk = pose_head(layer)
    mirrored = lmk * [-1.0, 1.0, 1.0]
    assert_float32_close(mirrored[IBUG_MIRROR], lmk)
    assert lmk[8, 1] < lmk[57, 1] < lmk[66, 1] < lmk[62, 1] < lmk[51, 1] < lmk[33, 1] < lmk[30, 1] < lmk[27, 1]
    assert lmk[36, 0] < lmk[39, 0] < lmk[42, 0] < lmk[45, 0], "36-41 is the subject's right eye (image left)"


def test_jaw_opens_the_mouth(layer, head):
    _, closed = pose_head(layer)
    _, opened = pose_head(layer, jaw=0.3)
    closed_gap, open_gap = (np.linalg.norm(lmk[62] - lmk[66]) for lmk in (closed, opened))
    assert closed_gap < 0.003 and open_gap > closed_gap + 0.02
    assert opened[8, 1] < closed[8, 1] - 0.015, "chin moves down"
    assert_float32_close(opened[[27, 30, 36, 45]], closed[[27, 30, 36, 45]])


def test_eyelid_close_closes_its_own_eye(layer):
    _, neutral = pose_head(layer)
    for side, shut, open_ in (("left", ((43, 47), (44, 46)), ((37, 41), (38, 40))),
                              ("right", ((37, 41), (38, 40)), ((43, 47), (44, 46)))):
        _, lmk = pose_head(layer, exp={f"eyelid_close_{side}": 1.0})
        for top, bottom in shut:
            before, after = neutral[top, 1] - neutral[bottom, 1], lmk[top, 1] - lmk[bottom, 1]
            assert before > 0.005 and after < 0.1 * before, f"{side}: {top}/{bottom} gap {before} -> {after}"
        for top, bottom in open_:
            assert lmk[top, 1] - lmk[bottom, 1] == pytest.approx(neutral[top, 1] - neutral[bottom, 1], abs=1e-6)


def test_mouth_corners_and_brows_move_as_named(layer):
    _, neutral = pose_head(layer)
    _, up_left = pose_head(layer, exp={"mouth_corner_up_left": 1.0})
    assert up_left[54, 1] - neutral[54, 1] > 0.002 and abs(up_left[48, 1] - neutral[48, 1]) < 0.0005
    _, up_right = pose_head(layer, exp={"mouth_corner_up_right": 1.0})
    assert up_right[48, 1] - neutral[48, 1] > 0.002 and abs(up_right[54, 1] - neutral[54, 1]) < 0.0005
    _, down = pose_head(layer, exp={"mouth_corner_down_left": 1.0, "mouth_corner_down_right": 1.0})
    assert (down[[48, 54], 1] < neutral[[48, 54], 1] - 0.002).all()
    _, brows = pose_head(layer, exp={"brow_inner_raise": 1.0})
    assert (brows[[21, 22], 1] > neutral[[21, 22], 1] + 0.002).all()
    np.testing.assert_allclose(brows[36:48], neutral[36:48], atol=2e-4, err_msg="brows leave the lid rims alone")
    _, press = pose_head(layer, exp={"lips_press": 1.0})
    assert abs(press[62, 1] - press[66, 1]) < 0.2 * abs(neutral[62, 1] - neutral[66, 1])


def test_contour_follows_the_outline_when_the_head_turns(head, layer):
    model, emb = head
    assert (emb.full_lmk_faces_idx[0, :17] == emb.dynamic_lmk_faces_idx[0]).all()
    yaw = float(np.deg2rad(30.0))
    verts, lmk = pose_head(layer, yaw=yaw)
    mask = region_map(layer, head, yaw=yaw) >= 0
    px = to_pixels(lmk)
    # Turned towards image right: the subject's left cheek (points 12-16) is the outline.
    for i in range(12, 17):
        x, y = int(px[i, 0]), int(px[i, 1])
        assert mask[y, x - 3] and not mask[y, min(x + 3, SIZE - 1)], f"point {i} is not on the silhouette"
    # The frontal contour would sit inside the face there.
    frontal = layer.full_landmarks(torch.as_tensor(verts, dtype=torch.float32)[None])[0].double().numpy()
    assert (to_pixels(frontal)[12:17, 0] < px[12:17, 0] - 1.0).mean() >= 0.6
    # Mirror yaw, mirror contour.
    _, lmk_neg = pose_head(layer, yaw=-yaw)
    np.testing.assert_allclose((lmk_neg * [-1, 1, 1])[list(range(16, -1, -1))], lmk[:17], atol=1e-5)
    assert set(np.round(CONTOUR_BIN_YAWS).astype(int)) == set(range(-39, 40))


def test_front_render_shows_face_eyes_and_open_mouth(layer, head):
    neutral = region_map(layer, head)
    centre = neutral[SIZE // 4: 3 * SIZE // 4, SIZE // 4: 3 * SIZE // 4]
    skin_like = np.isin(centre, [REGION[n] for n in ("skin", "eyelid", "brow", "lips")])
    assert skin_like.mean() > 0.8
    for name in ("iris", "pupil", "sclera", "lips", "brow"):
        assert (neutral == REGION[name]).sum() > 3, name
    _, lmk = pose_head(layer, jaw=0.3)
    top, bottom = to_pixels(lmk)[[62, 66]]
    opened = region_map(layer, head, jaw=0.3)
    between = opened[int(top[1]) + 2: int(bottom[1]) - 1, int(top[0]) - 4: int(top[0]) + 5]
    assert between.size > 20 and (between == REGION["mouth"]).mean() > 0.5
    rows = np.unique(np.nonzero(neutral == REGION["mouth"])[0])
    assert len(rows) <= 2 and (neutral == REGION["mouth"]).sum() < 0.2 * (opened == REGION["mouth"]).sum(), \
        "the closed mouth shows as a thin line"


def test_closed_eyelid_covers_the_eyeball(layer, head):
    eyeball = [REGION[n] for n in ("sclera", "iris", "pupil")]
    neutral = np.isin(region_map(layer, head), eyeball)
    half = SIZE // 2
    assert neutral[:, half:].sum() > 10 and neutral[:, :half].sum() > 10
    shut = np.isin(region_map(layer, head, exp={"eyelid_close_left": 1.0}), eyeball)
    assert shut[:, half:].sum() == 0, "the subject's left eye (image right) is covered"
    assert shut[:, :half].sum() == neutral[:, :half].sum()
    closed = {"eyelid_close_left": 1.0, "eyelid_close_right": 1.0}
    both = np.isin(region_map(layer, head, exp=closed, jaw=0.1), eyeball)
    assert both.sum() == 0


def test_denser_head_keeps_its_structure(head):
    sparse, _ = head
    model, _ = build_head(seed=0, detail=2)
    assert model.num_vertices > 1.4 * sparse.num_vertices

    def boundary_edges(faces: np.ndarray) -> int:
        _, counts = np.unique(np.sort(_edges(faces), axis=1), axis=0, return_counts=True)
        assert counts.max() == 2
        return int((counts == 1).sum())

    assert boundary_edges(model.faces) == boundary_edges(sparse.faces), "the same eye openings"
    with pytest.raises(ValueError):
        build_head(detail=0)

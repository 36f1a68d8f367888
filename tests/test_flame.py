"""FLAME files and layer on a tiny synthetic FLAME-format model (no real model needed)."""

from __future__ import annotations

import math
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.spatial.transform import Rotation

from scmcl.face3d.flame import CONTOUR_BIN_YAWS, FlameLayer, contour_bin, landmarks_from_vertices
from scmcl.face3d.flame_file import (
    FlameFileError,
    load_flame_model,
    load_landmark_embedding,
    save_flame_model,
    save_landmark_embedding,
)
from scmcl.face3d.flame_model import FlameModel, LandmarkEmbedding
from scmcl.face3d.lbs import batch_rodrigues

N_VERTS, N_FACES, N_SHAPE, N_EXP = 40, 30, 6, 4
JAW, NECK = 2, 1
DOUBLE = torch.float64


@pytest.fixture()
def model() -> FlameModel:
    """40 vertices: 0-19 skinned to global/neck, 20-29 partly to the jaw, 30-39 to the eyes.

    Jaw pose correctives are zero off the jaw region, as in FLAME, so a jaw rotation must
    leave those vertices alone.
    """
    rng = np.random.default_rng(0)
    v_template = rng.normal(scale=0.05, size=(N_VERTS, 3))
    weights = np.zeros((N_VERTS, 5))
    weights[:20, 0] = rng.uniform(0.2, 0.8, 20)
    weights[:20, 1] = 1.0 - weights[:20, 0]
    weights[20:30, JAW] = rng.uniform(0.3, 1.0, 10)
    weights[20:30, NECK] = 1.0 - weights[20:30, JAW]
    weights[30:35, 3] = 1.0
    weights[35:, 4] = 1.0
    posedirs = rng.normal(scale=1e-3, size=(N_VERTS, 3, 36))
    posedirs[weights[:, JAW] == 0, :, 9:18] = 0.0
    regressor = rng.uniform(size=(5, N_VERTS))
    return FlameModel(
        v_template=v_template,
        faces=rng.integers(0, N_VERTS, size=(N_FACES, 3)).astype(np.int64),
        shapedirs=rng.normal(scale=0.01, size=(N_VERTS, 3, N_SHAPE + N_EXP)),
        posedirs=posedirs,
        J_regressor=regressor / regressor.sum(1, keepdims=True),
        kintree_table=np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        weights=weights,
        shape_basis_size=N_SHAPE,
        extras={"bs_style": "lbs", "bs_type": "lrotmin", "region": np.arange(N_VERTS) % 3},
    )


@pytest.fixture()
def embedding() -> LandmarkEmbedding:
    rng = np.random.default_rng(1)

    def bary(*shape: int) -> np.ndarray:
        b = rng.uniform(0.05, 1.0, size=(*shape, 3))
        return b / b.sum(-1, keepdims=True)

    return LandmarkEmbedding(
        static_lmk_faces_idx=rng.integers(0, N_FACES, 51).astype(np.int64),
        static_lmk_bary_coords=bary(51),
        dynamic_lmk_faces_idx=rng.integers(0, N_FACES, (79, 17)).astype(np.int64),
        dynamic_lmk_bary_coords=bary(79, 17),
        full_lmk_faces_idx=rng.integers(0, N_FACES, (1, 68)).astype(np.int64),
        full_lmk_bary_coords=bary(1, 68),
    )


def _arrays(model: FlameModel) -> dict[str, np.ndarray]:
    return {k: getattr(model, k) for k in
            ("v_template", "faces", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")}


def _file_dict(model: FlameModel) -> dict:
    """The model as FLAME's file keys, with a sparse regressor, as in ``generic_model.pkl``."""
    data = {"v_template": model.v_template, "f": model.faces, "shapedirs": model.shapedirs,
            "posedirs": model.posedirs, "J_regressor": sp.csc_matrix(model.J_regressor),
            "kintree_table": model.kintree_table, "weights": model.weights}
    data.update(model.extras)
    return data


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 wrote ``str`` (BINSTRING), like FLAME's original file."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _write_py2(path: Path, data: dict) -> None:
    """Protocol-2 pickle with Python-2 strings as keys and the old numpy and scipy module paths."""
    with open(path, "wb") as fh:
        _Py2Pickler(fh, protocol=2).dump({k.encode("latin1"): v for k, v in data.items()})
    raw = path.read_bytes().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path.write_bytes(raw.replace(b"cscipy.sparse._csc\n", b"cscipy.sparse.csc\n"))


def _assert_same(loaded: FlameModel, expected: FlameModel) -> None:
    for name, arr in _arrays(expected).items():
        got = getattr(loaded, name)
        assert isinstance(got, np.ndarray), name
        np.testing.assert_array_equal(got, arr, err_msg=name)


# ---------------------------------------------------------------- files


def test_model_round_trip_is_exact(tmp_path, model):
    path = tmp_path / "generic_model.pkl"
    save_flame_model(path, model)
    loaded = load_flame_model(path)
    _assert_same(loaded, model)
    assert loaded.shape_basis_size == N_SHAPE
    assert loaded.num_expression == N_EXP
    assert loaded.extras.keys() == model.extras.keys()
    np.testing.assert_array_equal(loaded.extras["region"], model.extras["region"])
    assert loaded.extras["bs_style"] == "lbs"
    assert [p.name for p in tmp_path.iterdir()] == ["generic_model.pkl"]  # no temp file left
    with open(path, "rb") as fh:
        raw = pickle.load(fh)
    assert sp.issparse(raw["J_regressor"]) and raw["f"].shape == (N_FACES, 3)


def test_sparse_regressor_loads_dense_and_default_basis_is_300(tmp_path, model):
    data = _file_dict(model)
    data["shapedirs"] = np.zeros((N_VERTS, 3, 310))
    path = tmp_path / "m.pkl"
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    loaded = load_flame_model(path)
    assert isinstance(loaded.J_regressor, np.ndarray)
    np.testing.assert_array_equal(loaded.J_regressor, model.J_regressor)
    assert loaded.shape_basis_size == 300 and loaded.num_expression == 10


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_python2_pickle_with_latin1_strings(tmp_path, model):
    data = _file_dict(model)
    data.update(bs_style=b"lbs", note="caf\xe9".encode("latin1"))
    path = tmp_path / "py2.pkl"
    _write_py2(path, data)
    loaded = load_flame_model(path)
    _assert_same(loaded, model)
    assert loaded.extras["bs_style"] == "lbs"
    assert loaded.extras["note"] == "caf\xe9"


@pytest.fixture()
def fake_chumpy():
    """A throwaway ``chumpy.ch.Ch`` importable only while pickling."""
    chumpy = types.ModuleType("chumpy")
    ch_mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x: np.ndarray) -> None:
            self.__dict__ = {"x": x, "_dirty_vars": {"x"}, "_itr": None, "_depends_on_deps": {},
                             "_make_dense": False, "_make_sparse": False}

    class ChByArgs:
        """Rebuilt by calling the class with the value (the ``__reduce__`` path)."""

        def __init__(self, x: np.ndarray) -> None:
            self.value = x

        def __reduce__(self):
            return (type(self), (self.value,))

    for cls in (Ch, ChByArgs):
        cls.__module__, cls.__qualname__ = "chumpy.ch", cls.__name__
        setattr(ch_mod, cls.__name__, cls)
    chumpy.ch = ch_mod
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": ch_mod})
    try:
        yield ch_mod
    finally:
        sys.modules.pop("chumpy", None)
        sys.modules.pop("chumpy.ch", None)


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_chumpy_arrays_load_without_chumpy(tmp_path, model, fake_chumpy):
    data = _file_dict(model)
    for key in ("v_template", "shapedirs", "posedirs"):
        data[key] = fake_chumpy.Ch(data[key])
    data["weights"] = fake_chumpy.ChByArgs(model.weights)
    data["J"] = fake_chumpy.Ch(fake_chumpy.Ch(np.ones((5, 3))))  # a Ch wrapping a Ch
    path = tmp_path / "chumpy.pkl"
    _write_py2(path, data)
    sys.modules.pop("chumpy")
    sys.modules.pop("chumpy.ch")

    loaded = load_flame_model(path)
    _assert_same(loaded, model)
    np.testing.assert_array_equal(loaded.extras["J"], np.ones((5, 3)))
    assert "chumpy" not in sys.modules


def test_chumpy_object_without_value_names_file_and_key(tmp_path, model, fake_chumpy):
    data = _file_dict(model)
    op = fake_chumpy.Ch(model.posedirs)
    op.__dict__ = {"a": model.posedirs, "b": 1.0}  # an operator node, no stored 'x'
    data["posedirs"] = op
    path = tmp_path / "op.pkl"
    _write_py2(path, data)
    with pytest.raises(FlameFileError, match=r"op\.pkl.*'posedirs'.*chumpy\.ch\.Ch"):
        load_flame_model(path)


def test_missing_file_and_missing_key(tmp_path, model):
    with pytest.raises(FlameFileError, match=r"nowhere\.pkl.*flame\.is\.tue\.mpg\.de"):
        load_flame_model(tmp_path / "nowhere.pkl")
    data = _file_dict(model)
    del data["posedirs"]
    path = tmp_path / "partial.pkl"
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    with pytest.raises(FlameFileError, match=r"partial\.pkl.*'posedirs'.*flame\.is\.tue\.mpg\.de") as err:
        load_flame_model(path)
    assert "\n" not in str(err.value)
    path.write_bytes(b"not a pickle")
    with pytest.raises(FlameFileError, match=r"partial\.pkl"):
        load_flame_model(path)


def test_landmark_embedding_round_trip_and_errors(tmp_path, embedding):
    path = tmp_path / "landmark_embedding.npy"
    save_landmark_embedding(path, embedding)
    loaded = load_landmark_embedding(path)
    for key, arr in vars(embedding).items():
        np.testing.assert_array_equal(getattr(loaded, key), arr, err_msg=key)
        assert getattr(loaded, key).dtype == arr.dtype, key
    raw = np.load(path, allow_pickle=True, encoding="latin1")[()]
    assert isinstance(raw, dict) and raw["dynamic_lmk_faces_idx"].shape == (79, 17)

    with pytest.raises(FlameFileError, match=r"absent\.npy"):
        load_landmark_embedding(tmp_path / "absent.npy")
    broken = {k: v for k, v in vars(embedding).items() if k != "dynamic_lmk_bary_coords"}
    np.save(tmp_path / "broken.npy", np.array(broken, dtype=object), allow_pickle=True)
    with pytest.raises(FlameFileError, match=r"broken\.npy.*'dynamic_lmk_bary_coords'"):
        load_landmark_embedding(tmp_path / "broken.npy")


# ---------------------------------------------------------------- lbs


def test_batch_rodrigues_matches_scipy():
    rng = np.random.default_rng(2)
    axes = rng.normal(size=(7, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.array([0.0, 1e-9, 1e-5, 1e-3, 0.5, 2.0, math.pi - 1e-4])
    aa = np.concatenate([axes * angles[:, None], rng.normal(size=(20, 3))])
    got = batch_rodrigues(torch.tensor(aa)).numpy()
    np.testing.assert_allclose(got, Rotation.from_rotvec(aa).as_matrix(), atol=1e-12)

    zero = torch.zeros(1, 3, dtype=DOUBLE, requires_grad=True)
    batch_rodrigues(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def _layer(model: FlameModel, embedding: LandmarkEmbedding | None = None, **kw) -> FlameLayer:
    return FlameLayer(model, embedding, dtype=DOUBLE, **kw)


def test_zero_input_reproduces_template(model):
    out = _layer(model)()
    assert out.vertices.shape == (1, N_VERTS, 3) and out.landmarks is None
    np.testing.assert_allclose(out.vertices[0].numpy(), model.v_template, atol=1e-14)
    np.testing.assert_allclose(out.joints[0].numpy(), model.J_regressor @ model.v_template, atol=1e-14)


def test_coefficients_add_linear_blendshapes(model):
    layer = _layer(model, n_shape=4, n_exp=2)
    rng = np.random.default_rng(3)
    shape, exp = rng.normal(size=(3, 4)), rng.normal(size=(3, 2))
    out = layer(shape=torch.tensor(shape), exp=torch.tensor(exp))
    expected = (model.v_template
                + np.einsum("bl,vcl->bvc", shape, model.shapedirs[:, :, :4])
                + np.einsum("bl,vcl->bvc", exp, model.shapedirs[:, :, N_SHAPE:N_SHAPE + 2]))
    np.testing.assert_allclose(out.vertices.numpy(), expected, atol=1e-12)
    with pytest.raises(ValueError, match="exceed"):
        _layer(model, n_exp=N_EXP + 1)
    with pytest.raises(ValueError, match="exp must have shape"):
        layer(exp=torch.zeros(3, 5))


def test_jaw_moves_only_jaw_vertices_and_opens_downward(model):
    layer = _layer(model)
    rest = layer().vertices[0]
    jaw = layer(pose=torch.tensor([[0.0, 0.0, 0.0, 0.3, 0.0, 0.0]], dtype=DOUBLE))
    moved = (jaw.vertices[0] - rest).norm(dim=1) > 1e-9
    assert torch.equal(moved, torch.as_tensor(model.weights[:, JAW] > 0))

    # A point fully skinned to the jaw, below and in front of the jaw joint, drops when pose[:, 3] > 0.
    chin = model.J_regressor[JAW] @ model.v_template + np.array([0.0, -0.05, 0.08])
    model.v_template[20], model.weights[20], model.posedirs[20] = chin, np.eye(5)[JAW], 0.0
    layer = _layer(model)
    dy = (layer(pose=torch.tensor([[0, 0, 0, 0.2, 0, 0]], dtype=DOUBLE)).vertices - layer().vertices)[0, 20]
    assert dy[1] < -0.01


def test_global_rotation_is_rigid_about_root(model):
    layer = _layer(model)
    shape = torch.tensor(np.random.default_rng(4).normal(size=(1, N_SHAPE)))
    aa = np.array([0.3, -0.7, 0.2])
    rest = layer(shape=shape)
    out = layer(shape=shape, pose=torch.tensor(np.r_[aa, 0, 0, 0][None]))
    root = rest.joints[0, 0].numpy()
    expected = (rest.vertices[0].numpy() - root) @ Rotation.from_rotvec(aa).as_matrix().T + root
    np.testing.assert_allclose(out.vertices[0].numpy(), expected, atol=1e-12)
    expected_joints = (rest.joints[0].numpy() - root) @ Rotation.from_rotvec(aa).as_matrix().T + root
    np.testing.assert_allclose(out.joints[0].numpy(), expected_joints, atol=1e-12)


# ---------------------------------------------------------------- landmarks


def _bary_points(verts: np.ndarray, faces: np.ndarray, idx: np.ndarray, bary: np.ndarray) -> np.ndarray:
    return np.einsum("lk,lkc->lc", bary, verts[faces[idx]])


def test_landmarks_are_barycentric_combinations(model, embedding):
    layer = _layer(model, embedding)
    pose = torch.tensor([[0.05, 0.1, 0.0, 0.2, 0.0, 0.0]], dtype=DOUBLE)
    exp = torch.tensor(np.random.default_rng(5).normal(size=(1, N_EXP)))
    out = layer(exp=exp, pose=pose)
    verts = out.vertices[0].numpy()
    row = round(math.degrees(0.1))  # yaw of a small global turn about y, positive → bin = yaw
    assert out.landmarks.shape == (1, 68, 3)
    np.testing.assert_allclose(out.landmarks[0, :17].numpy(), _bary_points(
        verts, model.faces, embedding.dynamic_lmk_faces_idx[row], embedding.dynamic_lmk_bary_coords[row]), atol=1e-12)
    np.testing.assert_allclose(out.landmarks[0, 17:].numpy(), _bary_points(
        verts, model.faces, embedding.static_lmk_faces_idx, embedding.static_lmk_bary_coords), atol=1e-12)
    np.testing.assert_allclose(layer.full_landmarks(out.vertices)[0].numpy(), _bary_points(
        verts, model.faces, embedding.full_lmk_faces_idx[0], embedding.full_lmk_bary_coords[0]), atol=1e-12)

    idx = torch.tensor([[0, 3]])
    bary = torch.tensor([[[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]], dtype=DOUBLE)
    pts = landmarks_from_vertices(out.vertices, layer.faces, idx, bary)[0].numpy()
    np.testing.assert_allclose(pts[0], verts[model.faces[0, 0]], atol=1e-15)
    np.testing.assert_allclose(pts[1], bary[0, 1].numpy() @ verts[model.faces[3]], atol=1e-15)


def _yaw_pose(global_deg: float, neck_deg: float = 0.0) -> dict[str, torch.Tensor]:
    rad = torch.tensor([global_deg, neck_deg], dtype=DOUBLE).deg2rad()
    return {"pose": torch.tensor([[0.0, rad[0], 0.0, 0.0, 0.0, 0.0]], dtype=DOUBLE),
            "neck_pose": torch.tensor([[0.0, rad[1], 0.0]], dtype=DOUBLE)}


@pytest.mark.parametrize(("global_deg", "neck_deg", "row"), [
    (0.0, 0.0, 0), (20.0, 0.0, 20), (-20.0, 0.0, 59), (12.0, 8.0, 20), (70.0, 0.0, 39), (-70.0, 0.0, 78),
])
def test_contour_follows_head_yaw(model, embedding, global_deg, neck_deg, row):
    layer = _layer(model, embedding)
    out = layer(**_yaw_pose(global_deg, neck_deg))
    expected = _bary_points(out.vertices[0].numpy(), model.faces, embedding.dynamic_lmk_faces_idx[row],
                            embedding.dynamic_lmk_bary_coords[row])
    np.testing.assert_allclose(out.landmarks[0, :17].numpy(), expected, atol=1e-12)
    assert CONTOUR_BIN_YAWS[row] == max(-39, min(39, round(global_deg + neck_deg)))


def test_contour_yaw_is_that_of_global_times_neck(model, embedding):
    """Global pitch 40 deg then neck yaw 25 deg: R_global @ R_neck has yaw ~18.9 deg (row 19);
    the other order would give 25."""
    layer = _layer(model, embedding)
    pitch, yaw = math.radians(40.0), math.radians(25.0)
    full_pose = torch.tensor([[pitch, 0, 0, 0, yaw, 0] + [0.0] * 9], dtype=DOUBLE)
    assert layer.contour_bins(full_pose).tolist() == [19]


def test_contour_bin_layout():
    yaws = torch.tensor(CONTOUR_BIN_YAWS, dtype=DOUBLE)
    assert torch.equal(contour_bin(yaws), torch.arange(79))
    assert contour_bin(torch.tensor([-100.0, 100.0, -0.4])).tolist() == [78, 39, 0]


def test_layer_device_moves(model, embedding):
    layer = FlameLayer(model, embedding).to(torch.device("cpu"))
    out = layer(exp=torch.zeros(2, N_EXP))
    assert out.vertices.device.type == "cpu" and out.vertices.dtype == torch.float32
    assert out.landmarks.shape == (2, 68, 3)
    assert layer.state_dict() == {}  # buffers are rebuilt from the model file, not checkpointed

    moved = layer.to("meta")
    assert {b.device.type for b in moved.buffers()} == {"meta"}
    out = moved(pose=torch.zeros(2, 6, device="meta"))
    assert out.vertices.device.type == "meta" and out.landmarks.shape == (2, 68, 3)

    double = FlameLayer(model, embedding).to(DOUBLE)
    assert double.v_template.dtype == DOUBLE and double.faces.dtype == torch.int64


def _reference_lbs(model: FlameModel, betas: np.ndarray, full_pose: np.ndarray) -> np.ndarray:
    """Textbook per-vertex LBS with 4x4 matrices, one joint at a time (independent of lbs.py)."""
    v_shaped = model.v_template + model.shapedirs[:, :, : len(betas)] @ betas
    joints = model.J_regressor @ v_shaped
    rots = Rotation.from_rotvec(full_pose.reshape(-1, 3)).as_matrix()
    v_posed = v_shaped + model.posedirs @ (rots[1:] - np.eye(3)).ravel()
    parents = [-1, 0, 1, 1, 1]
    world = []
    for j, p in enumerate(parents):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = joints[j] - (joints[p] if p >= 0 else 0.0)
        world.append(local if p < 0 else world[p] @ local)
    skin = []
    for j, w in enumerate(world):
        unposed = np.eye(4)
        unposed[:3, 3] = -joints[j]
        skin.append(w @ unposed)
    blended = np.einsum("vj,jmn->vmn", model.weights, np.stack(skin))
    return np.einsum("vmn,vn->vm", blended, np.c_[v_posed, np.ones(len(v_posed))])[:, :3]


def test_layer_matches_reference_lbs_at_a_random_pose(model):
    rng = np.random.default_rng(6)
    betas = rng.normal(size=N_SHAPE + N_EXP)
    pose, neck, eyes = rng.normal(scale=0.4, size=6), rng.normal(scale=0.4, size=3), rng.normal(scale=0.4, size=6)
    out = _layer(model)(shape=torch.tensor(betas[None, :N_SHAPE]), exp=torch.tensor(betas[None, N_SHAPE:]),
                        pose=torch.tensor(pose[None]), neck_pose=torch.tensor(neck[None]),
                        eye_pose=torch.tensor(eyes[None]))
    full_pose = np.r_[pose[:3], neck, pose[3:], eyes]
    np.testing.assert_allclose(out.vertices[0].numpy(), _reference_lbs(model, betas, full_pose), atol=1e-12)

"""Reading and writing FLAME's model files without chumpy.

``generic_model.pkl`` is a Python-2 pickle in which several arrays are chumpy ``Ch`` objects
and ``J_regressor`` is a scipy sparse matrix.  Installing chumpy (unmaintained, broken on
current numpy) just to read numbers is not worth it, so the unpickler below swaps every chumpy
class for a stand-in that keeps the pickled state and hands back the plain array.  The
built-in head is written in the same layout so both go through one loader.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from scmcl.face3d.flame_model import FLAME_SHAPE_BASIS, FlameModel, LandmarkEmbedding
from scmcl.io.atomic import atomic_path

FLAME_SOURCE = "the real model comes from https://flame.is.tue.mpg.de (registration required)"
DECA_SOURCE = "the real file ships with DECA's data (FLAME registration required, https://flame.is.tue.mpg.de)"

#: File key → FlameModel field, for the keys every FLAME-format model must have.
_MODEL_KEYS = {
    "v_template": "v_template",
    "f": "faces",
    "shapedirs": "shapedirs",
    "posedirs": "posedirs",
    "J_regressor": "J_regressor",
    "kintree_table": "kintree_table",
    "weights": "weights",
}
_INT_FIELDS = ("faces", "kintree_table")
_LANDMARK_KEYS = (
    "static_lmk_faces_idx",
    "static_lmk_bary_coords",
    "dynamic_lmk_faces_idx",
    "dynamic_lmk_bary_coords",
    "full_lmk_faces_idx",
    "full_lmk_bary_coords",
)


class FlameFileError(ValueError):
    """A FLAME/DECA model file is missing, unreadable or lacks a required key."""


class _ChumpyStandIn:
    """Takes the place of any chumpy class while unpickling and remembers how it was built.

    A pickled ``Ch`` comes back either through ``__new__`` + ``__setstate__(dict)`` (the usual
    protocol-2 path) or by calling the class with arguments (``__reduce__``); both are kept so
    :meth:`to_array` can find the value (``x``) afterwards.
    """

    chumpy_name = "chumpy.Ch"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_ChumpyStandIn":
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, {}
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (dict state, slot state)
            state = {k: v for part in state if isinstance(part, dict) for k, v in part.items()}
        self.state = state if isinstance(state, dict) else {"x": state}

    def to_array(self) -> np.ndarray:
        """The object's value; only leaf ``Ch`` objects (a stored ``x``) can be read back."""
        for source in (self.state, self.kwargs):
            if "x" in source:
                return _plain(source["x"])
        if self.args:
            return _plain(self.args[0])
        raise FlameFileError(
            f"a {self.chumpy_name} object holds no stored value 'x' (only plain Ch arrays are supported)"
        )


class _FlameUnpickler(pickle.Unpickler):
    """Unpickler that never imports chumpy (its classes become :class:`_ChumpyStandIn` types)
    and reads sparse matrices from the old ``scipy.sparse.csc``-style module paths, which are
    deprecated and will disappear in SciPy 2."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return type(name, (_ChumpyStandIn,), {"chumpy_name": f"{module}.{name}"})
        if module.startswith("scipy.sparse.") and hasattr(sp, name):
            return getattr(sp, name)
        return super().find_class(module, name)


def _plain(value: Any) -> Any:
    """chumpy stand-ins and scipy sparse matrices → dense ndarrays; anything else unchanged."""
    if isinstance(value, _ChumpyStandIn):
        return np.asarray(value.to_array())
    if sp.issparse(value):
        return np.asarray(value.toarray())
    return value


def _entry(value: Any, path: Path, key: str, source: str) -> Any:
    """:func:`_plain` with the file and key named when a value cannot be recovered."""
    try:
        return _plain(value)
    except FlameFileError as exc:
        raise FlameFileError(f"{path}: key '{key}': {exc}; {source}") from None


def _read_pickle(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FlameFileError(f"{what} not found: {path}; {FLAME_SOURCE}")
    try:
        with open(path, "rb") as fh:
            data = _FlameUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as exc:
        raise FlameFileError(f"{path}: not a readable {what} ({exc}); {FLAME_SOURCE}") from exc
    if not isinstance(data, dict):
        raise FlameFileError(f"{path}: expected a dict of arrays, found {type(data).__name__}; {FLAME_SOURCE}")
    return data


def _require(data: dict, key: str, path: Path, source: str) -> Any:
    if key not in data:
        raise FlameFileError(f"{path}: required key '{key}' is missing; {source}")
    return data[key]


def load_flame_model(path: str | os.PathLike) -> FlameModel:
    """Read a FLAME-format ``generic_model.pkl`` (the real one or the built-in head)."""
    path = Path(path)
    data = {str(k): _entry(v, path, str(k), FLAME_SOURCE) for k, v in _read_pickle(path, "FLAME model").items()}
    fields: dict[str, np.ndarray] = {}
    for key, field_name in _MODEL_KEYS.items():
        arr = np.asarray(_require(data, key, path, FLAME_SOURCE))
        fields[field_name] = arr.astype(np.int64) if field_name in _INT_FIELDS else arr
    shape_basis = int(data.get("shape_basis_size", FLAME_SHAPE_BASIS))
    extras = {k: v for k, v in data.items() if k not in _MODEL_KEYS and k != "shape_basis_size"}
    return FlameModel(**fields, shape_basis_size=shape_basis, extras=extras)


def save_flame_model(path: str | os.PathLike, model: FlameModel) -> None:
    """Write ``model`` in FLAME's own layout (protocol 2, sparse ``J_regressor``), atomically."""
    data = dict(model.extras)
    for key, field_name in _MODEL_KEYS.items():
        data[key] = getattr(model, field_name)
    data["J_regressor"] = sp.csc_matrix(model.J_regressor)
    data["shape_basis_size"] = int(model.shape_basis_size)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(data, fh, protocol=2)


def load_landmark_embedding(path: str | os.PathLike) -> LandmarkEmbedding:
    """Read DECA's ``landmark_embedding.npy`` (an ``np.save``d pickled dict)."""
    path = Path(path)
    if not path.is_file():
        raise FlameFileError(f"landmark embedding not found: {path}; {DECA_SOURCE}")
    try:
        data = np.load(path, allow_pickle=True, encoding="latin1")[()]
    except (ValueError, OSError, pickle.UnpicklingError, EOFError) as exc:
        raise FlameFileError(f"{path}: not a readable landmark embedding ({exc}); {DECA_SOURCE}") from exc
    if not isinstance(data, dict):
        raise FlameFileError(f"{path}: expected a pickled dict, found {type(data).__name__}; {DECA_SOURCE}")
    fields = {}
    for key in _LANDMARK_KEYS:
        arr = np.asarray(_entry(_require(data, key, path, DECA_SOURCE), path, key, DECA_SOURCE))
        fields[key] = arr.astype(np.int64) if key.endswith("faces_idx") else arr
    return LandmarkEmbedding(**fields)


def save_landmark_embedding(path: str | os.PathLike, emb: LandmarkEmbedding) -> None:
    """Write ``emb`` as DECA does (``np.save`` of a dict), atomically."""
    data = {key: np.asarray(getattr(emb, key)) for key in _LANDMARK_KEYS}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.array(data, dtype=object), allow_pickle=True)

"""In-memory form of a FLAME-format head model, shared by the loader, the layer and the corpus.

FLAME's ``generic_model.pkl`` and the built-in procedural head hold the same keys; this
dataclass is what both become after loading, with plain numpy arrays only (no chumpy, no
scipy sparse), so every later stage sees one representation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Number of identity columns in FLAME's ``shapedirs`` before the expression columns start.
FLAME_SHAPE_BASIS = 300

#: Joint order of FLAME's kinematic tree (``kintree_table`` columns).
JOINT_NAMES = ("global", "neck", "jaw", "eye_left", "eye_right")


@dataclass
class FlameModel:
    """Arrays of a FLAME-format model.

    Shapes: ``v_template`` (V,3); ``faces`` (F,3) int64; ``shapedirs`` (V,3,S+E) with the
    identity basis first (``shape_basis_size`` columns) and the expression basis after it;
    ``posedirs`` (V,3,9*(J-1)); ``J_regressor`` (J,V) dense; ``kintree_table`` (2,J);
    ``weights`` (V,J).  ``extras`` keeps any further keys of the file (for the built-in head:
    region labels and blendshape names), untouched.
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    kintree_table: np.ndarray
    weights: np.ndarray
    shape_basis_size: int = FLAME_SHAPE_BASIS
    extras: dict = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.shape_basis_size)

    @property
    def num_expression(self) -> int:
        return int(self.shapedirs.shape[2] - self.shape_basis_size)


@dataclass
class LandmarkEmbedding:
    """DECA's ``landmark_embedding.npy`` content: 68 landmarks as faces + barycentric coords.

    ``static_*``: the 51 inner points (68-point indices 17..67); ``dynamic_*``: the 17 jaw
    contour points for each of 79 head-yaw rows in DECA's order (rows 0..39 for yaw 0..39
    degrees, rows 40..78 for -1..-39: ``scmcl.face3d.flame.CONTOUR_BIN_YAWS``); ``full_*``:
    all 68 points for a frontal face.
    """

    static_lmk_faces_idx: np.ndarray  # (51,) int64
    static_lmk_bary_coords: np.ndarray  # (51,3)
    dynamic_lmk_faces_idx: np.ndarray  # (79,17) int64
    dynamic_lmk_bary_coords: np.ndarray  # (79,17,3)
    full_lmk_faces_idx: np.ndarray  # (1,68) int64
    full_lmk_bary_coords: np.ndarray  # (1,68,3)

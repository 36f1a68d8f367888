"""The FLAME layer as DECA drives it: (shape, exp, pose) → mesh, joints and 68 landmarks.

Pose convention (DECA's): ``pose`` (B,6) = ``[global_rot(3), jaw_rot(3)]`` axis-angle, so
``pose[:, 3]`` is the jaw's x-axis rotation and positive values open the mouth.  Neck and eyes
are separate inputs that default to zero.  The full FLAME pose is
``[global, neck, jaw, eye_left, eye_right]``.

The 17 jaw-contour landmarks depend on head yaw as in DECA: the yaw of ``R_global @ R_neck``
in degrees, clamped to [-39, 39] and rounded, picks one of 79 bins laid out as
:data:`CONTOUR_BIN_YAWS` (0..39 degrees, then -1..-39 degrees).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from scmcl.face3d.flame_model import JOINT_NAMES, FlameModel, LandmarkEmbedding
from scmcl.face3d.lbs import batch_rodrigues, lbs

#: Largest |yaw| (degrees) with its own contour bin.
MAX_CONTOUR_YAW = 39
#: Yaw in degrees of each row of ``dynamic_lmk_*`` (DECA/RingNet layout: 0..39, then -1..-39).
CONTOUR_BIN_YAWS = np.concatenate([np.arange(0, MAX_CONTOUR_YAW + 1), -np.arange(1, MAX_CONTOUR_YAW + 1)])
_NECK = JOINT_NAMES.index("neck")


@dataclass
class FlameOutput:
    """Posed mesh (B,V,3), joints (B,J,3) and 68 iBUG landmarks (B,68,3) when an embedding is given."""

    vertices: torch.Tensor
    joints: torch.Tensor
    landmarks: torch.Tensor | None


def landmarks_from_vertices(
    vertices: torch.Tensor, faces: torch.Tensor, lmk_faces_idx: torch.Tensor, lmk_bary: torch.Tensor
) -> torch.Tensor:
    """Points (B,L,3) given as barycentric coordinates (B,L,3) inside triangles ``lmk_faces_idx`` (B,L)."""
    batch, n_lmk = lmk_faces_idx.shape
    corner_idx = faces[lmk_faces_idx].reshape(batch, -1, 1).expand(-1, -1, 3)
    corners = torch.gather(vertices, 1, corner_idx).reshape(batch, n_lmk, 3, 3)
    return (corners * lmk_bary.to(vertices.dtype).unsqueeze(-1)).sum(2)


def head_yaw_degrees(rot: torch.Tensor) -> torch.Tensor:
    """Yaw (B,) in degrees of rotations (B,3,3), as DECA's ``rot_mat_to_euler``."""
    cos_yaw = torch.sqrt(rot[:, 0, 0] ** 2 + rot[:, 1, 0] ** 2)
    return torch.atan2(-rot[:, 2, 0], cos_yaw) * (180.0 / math.pi)


def contour_bin(yaw_deg: torch.Tensor) -> torch.Tensor:
    """Row of ``dynamic_lmk_*`` for a yaw in degrees: inverse of :data:`CONTOUR_BIN_YAWS`."""
    yaw = torch.round(yaw_deg.clamp(-MAX_CONTOUR_YAW, MAX_CONTOUR_YAW)).long()
    return torch.where(yaw < 0, MAX_CONTOUR_YAW - yaw, yaw)


def _parents(kintree_table: np.ndarray) -> list[int]:
    """Parent column of every joint (-1 for the root), from FLAME's (2,J) ``kintree_table``."""
    col_of_id = {int(j): i for i, j in enumerate(kintree_table[1])}
    parents = [col_of_id.get(int(p), -1) for p in kintree_table[0]]
    if parents[0] != -1 or any(not 0 <= p < i for i, p in enumerate(parents) if i > 0):
        raise ValueError(f"kintree_table must list the root first and parents before children, got {parents}")
    return parents


def _chain_to_root(parents: list[int], joint: int) -> list[int]:
    chain = []
    while joint != -1:
        chain.append(joint)
        joint = parents[joint]
    return chain


class FlameLayer(nn.Module):
    """FLAME with DECA's inputs; every array is a (non-persistent) buffer so ``.to()`` moves it."""

    def __init__(
        self,
        model: FlameModel,
        landmarks: LandmarkEmbedding | None = None,
        n_shape: int | None = None,
        n_exp: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.n_shape = model.num_shape if n_shape is None else int(n_shape)
        self.n_exp = model.num_expression if n_exp is None else int(n_exp)
        if not (0 <= self.n_shape <= model.num_shape and 0 <= self.n_exp <= model.num_expression):
            raise ValueError(f"n_shape={self.n_shape}, n_exp={self.n_exp} exceed the model's "
                             f"{model.num_shape} identity and {model.num_expression} expression components")
        n_joints = len(model.kintree_table[0])
        if n_joints != len(JOINT_NAMES):
            raise ValueError(f"FLAME has {len(JOINT_NAMES)} joints {JOINT_NAMES}, the model has {n_joints}")
        self.parents = _parents(model.kintree_table)
        self.neck_chain = _chain_to_root(self.parents, _NECK)

        base = model.shape_basis_size
        shapedirs = np.concatenate(
            [model.shapedirs[:, :, : self.n_shape], model.shapedirs[:, :, base : base + self.n_exp]], axis=2
        )
        self._float("v_template", model.v_template, dtype)
        self._float("shapedirs", shapedirs, dtype)
        self._float("posedirs", model.posedirs, dtype)
        self._float("J_regressor", model.J_regressor, dtype)
        self._float("lbs_weights", model.weights, dtype)
        self.register_buffer("faces", torch.as_tensor(np.asarray(model.faces, np.int64)), persistent=False)
        self.has_landmarks = landmarks is not None
        if landmarks is not None:
            self._landmark_buffers(landmarks, dtype)

    def _float(self, name: str, array: np.ndarray, dtype: torch.dtype) -> None:
        self.register_buffer(name, torch.as_tensor(np.asarray(array), dtype=dtype), persistent=False)

    def _landmark_buffers(self, emb: LandmarkEmbedding, dtype: torch.dtype) -> None:
        for kind in ("static", "dynamic", "full"):
            idx = np.asarray(getattr(emb, f"{kind}_lmk_faces_idx"), np.int64)
            self.register_buffer(f"{kind}_lmk_faces_idx", torch.as_tensor(idx), persistent=False)
            self._float(f"{kind}_lmk_bary_coords", getattr(emb, f"{kind}_lmk_bary_coords"), dtype)

    def _coeffs(self, value: torch.Tensor | None, batch: int, width: int, name: str) -> torch.Tensor:
        """An input as (B,width) in the layer's dtype and device; ``None`` means zeros."""
        ref = self.v_template
        if value is None:
            return ref.new_zeros(batch, width)
        if tuple(value.shape) != (batch, width):
            raise ValueError(f"{name} must have shape ({batch}, {width}), got {tuple(value.shape)}")
        return value.to(ref.dtype)

    def forward(
        self,
        shape: torch.Tensor | None = None,
        exp: torch.Tensor | None = None,
        pose: torch.Tensor | None = None,
        neck_pose: torch.Tensor | None = None,
        eye_pose: torch.Tensor | None = None,
    ) -> FlameOutput:
        """Pose the head; missing inputs are zeros, the batch size comes from the given ones (else 1)."""
        given = [t for t in (shape, exp, pose, neck_pose, eye_pose) if t is not None]
        batch = given[0].shape[0] if given else 1
        shape = self._coeffs(shape, batch, self.n_shape, "shape")
        exp = self._coeffs(exp, batch, self.n_exp, "exp")
        pose = self._coeffs(pose, batch, 6, "pose")
        neck_pose = self._coeffs(neck_pose, batch, 3, "neck_pose")
        eye_pose = self._coeffs(eye_pose, batch, 6, "eye_pose")

        full_pose = torch.cat([pose[:, :3], neck_pose, pose[:, 3:], eye_pose], dim=1)
        vertices, joints = lbs(torch.cat([shape, exp], dim=1), full_pose, self.v_template, self.shapedirs,
                               self.posedirs, self.J_regressor, self.parents, self.lbs_weights)
        landmarks = self._landmarks68(vertices, full_pose) if self.has_landmarks else None
        return FlameOutput(vertices=vertices, joints=joints, landmarks=landmarks)

    def contour_bins(self, full_pose: torch.Tensor) -> torch.Tensor:
        """Dynamic-contour row (B,) for full poses (B,15), from the yaw of the global*neck rotation."""
        chain_aa = full_pose.reshape(full_pose.shape[0], -1, 3)[:, self.neck_chain]
        rots = batch_rodrigues(chain_aa.reshape(-1, 3)).reshape(full_pose.shape[0], -1, 3, 3)
        head = rots[:, 0]
        for i in range(1, rots.shape[1]):
            head = rots[:, i] @ head
        return contour_bin(head_yaw_degrees(head))

    def _landmarks68(self, vertices: torch.Tensor, full_pose: torch.Tensor) -> torch.Tensor:
        """iBUG-ordered 68 points: the yaw-dependent jaw contour (0..16), then the 51 static ones."""
        batch = vertices.shape[0]
        bins = self.contour_bins(full_pose)
        faces_idx = torch.cat([self.dynamic_lmk_faces_idx[bins],
                               self.static_lmk_faces_idx.expand(batch, -1)], dim=1)
        bary = torch.cat([self.dynamic_lmk_bary_coords[bins],
                          self.static_lmk_bary_coords.expand(batch, -1, -1)], dim=1)
        return landmarks_from_vertices(vertices, self.faces, faces_idx, bary)

    def full_landmarks(self, vertices: torch.Tensor) -> torch.Tensor:
        """DECA's ``landmarks3d``: the 68 points of the fixed (frontal) embedding, (B,68,3)."""
        if not self.has_landmarks:
            raise ValueError("this FlameLayer was built without a landmark embedding")
        batch = vertices.shape[0]
        return landmarks_from_vertices(vertices, self.faces, self.full_lmk_faces_idx.expand(batch, -1),
                                       self.full_lmk_bary_coords.expand(batch, -1, -1))

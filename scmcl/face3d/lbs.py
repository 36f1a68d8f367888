"""FLAME's geometry pipeline: blendshapes, joint regression, pose correctives, linear blend skinning.

Written for batches and any device; array layouts are those of the FLAME file
(``shapedirs`` (V,3,L), ``posedirs`` (V,3,9*(J-1))), so the loaded arrays are used as they are.
"""

from __future__ import annotations

from typing import Sequence

import torch

#: Below this squared angle (rad^2) the Rodrigues coefficients use their Taylor series, whose
#: truncation error there (~theta^4/120) is far below float64 precision.
_SMALL_ANGLE2 = 1e-6


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(N,3) → (N,3,3) cross-product matrices ``[v]_x``."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(-1, 3, 3)


def batch_rodrigues(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle (N,3) → rotation matrices (N,3,3).

    ``R = I + a K + b K^2`` with ``K = [aa]_x``, ``a = sin t / t`` and
    ``b = (1 - cos t) / t^2 = 2 sin^2(t/2) / t^2``: finite, with finite gradients, at zero angle
    (Taylor series below :data:`_SMALL_ANGLE2`) and free of ``1 - cos`` cancellation.
    """
    theta2 = (aa * aa).sum(-1)
    small = theta2 < _SMALL_ANGLE2
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, 2.0 * torch.sin(theta / 2.0) ** 2 / safe2)
    k = _skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye + a[:, None, None] * k + b[:, None, None] * (k @ k)


def _kinematic_chain(
    rot: torch.Tensor, joints: torch.Tensor, parents: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """World rotations (B,J,3,3) and positions (B,J,3) of every joint after posing.

    Each joint turns about its rest position and carries its children; ``parents[0]`` is the
    root (-1) and every parent precedes its children.
    """
    world_r = [rot[:, 0]]
    world_t = [joints[:, 0]]
    for i in range(1, len(parents)):
        p = parents[i]
        offset = (joints[:, i] - joints[:, p]).unsqueeze(-1)
        world_r.append(world_r[p] @ rot[:, i])
        world_t.append((world_r[p] @ offset).squeeze(-1) + world_t[p])
    return torch.stack(world_r, 1), torch.stack(world_t, 1)


def lbs(
    betas: torch.Tensor,
    pose: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs: torch.Tensor,
    J_regressor: torch.Tensor,
    parents: Sequence[int] | torch.Tensor,
    lbs_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed vertices (B,V,3) and posed joints (B,J,3).

    ``betas`` (B,L) weight ``shapedirs`` (V,3,L); ``pose`` (B,J*3) is axis-angle per joint in
    kinematic-tree order; ``posedirs`` (V,3,9*(J-1)) is driven by ``R_j - I`` of joints
    1..J-1 flattened row-major; ``J_regressor`` (J,V); ``lbs_weights`` (V,J).
    """
    if isinstance(parents, torch.Tensor):
        parents = parents.tolist()
    batch = betas.shape[0]
    v_shaped = v_template + torch.einsum("bl,vcl->bvc", betas, shapedirs)
    joints = torch.einsum("jv,bvc->bjc", J_regressor, v_shaped)

    rot = batch_rodrigues(pose.reshape(-1, 3)).reshape(batch, -1, 3, 3)
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    pose_feature = (rot[:, 1:] - eye).reshape(batch, -1)
    v_posed = v_shaped + torch.einsum("bp,vcp->bvc", pose_feature, posedirs)

    world_r, world_t = _kinematic_chain(rot, joints, parents)
    # Skinning transforms map rest-pose points: x -> R_w (x - j_rest) + t_w.
    skin_t = world_t - (world_r @ joints.unsqueeze(-1)).squeeze(-1)
    vert_r = torch.einsum("vj,bjmn->bvmn", lbs_weights, world_r)
    vert_t = torch.einsum("vj,bjm->bvm", lbs_weights, skin_t)
    verts = (vert_r @ v_posed.unsqueeze(-1)).squeeze(-1) + vert_t
    return verts, world_t

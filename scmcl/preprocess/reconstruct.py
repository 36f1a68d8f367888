"""3DMM reconstruction behind one interface: ``fit`` (landmark fitting, the demo default)
and ``deca`` (DECA's encoder with the official weights). Both return FLAME-format
parameters in the clip's crop frame with the same columns downstream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import cv2
import numpy as np
import torch

from scmcl.face3d.camera import orthographic
from scmcl.face3d.flame import FlameLayer, FlameOutput


@dataclass
class Reconstruction:
    """Per-clip identity and per-frame expression, pose and orthographic crop camera."""

    shape: np.ndarray  # (n_shape,)
    exp: np.ndarray  # (T, n_exp)
    pose: np.ndarray  # (T, 6) [global(3), jaw(3)] axis-angle
    cam: np.ndarray  # (T, 3) [s, tx, ty]: orthographic(verts, cam, S, S) lands in the S-px crop
    per_frame_rms: np.ndarray  # (T,) landmark error in crop pixels


class Reconstructor(Protocol):
    def reconstruct(self, crops: np.ndarray, landmarks: np.ndarray, valid: np.ndarray) -> Reconstruction: ...


#: Frames per FLAME forward pass when meshes of a whole clip are needed (bounds memory).
MESH_CHUNK = 32


def mesh_batches(layer: FlameLayer, recon: Reconstruction, device: torch.device) -> Iterator[tuple[slice, FlameOutput, torch.Tensor]]:
    """The reconstructed meshes of a clip in chunks: (frames, FLAME output, orthographic camera)."""
    n = len(recon.exp)
    shape = torch.as_tensor(recon.shape[None, : layer.n_shape], dtype=torch.float32, device=device)
    for start in range(0, n, MESH_CHUNK):
        sl = slice(start, min(n, start + MESH_CHUNK))
        exp, pose, cam = (torch.as_tensor(a[sl], dtype=torch.float32, device=device)
                          for a in (recon.exp[:, : layer.n_exp], recon.pose, recon.cam))
        yield sl, layer(shape=shape.expand(len(exp), -1), exp=exp, pose=pose), cam


@torch.no_grad()
def projected_landmarks(layer: FlameLayer, recon: Reconstruction, size: int, device: torch.device) -> np.ndarray:
    """(T,68,2) the reconstruction's own landmarks in crop pixels."""
    return np.concatenate([orthographic(mesh.landmarks, cam, size, size)[..., :2].cpu().numpy()
                           for _, mesh, cam in mesh_batches(layer, recon, device)])


def landmark_rms(layer: FlameLayer, recon: Reconstruction, landmarks: np.ndarray, size: int,
                 device: torch.device) -> np.ndarray:
    """Per-frame RMS distance (px) between the model's projected and the tracked landmarks."""
    pred = projected_landmarks(layer, recon, size, device)
    return np.sqrt(np.nanmean(((pred - landmarks) ** 2).sum(-1), axis=1))


class FitReconstructor:
    """Batched landmark fitting of the configured FLAME-format model (scmcl.face3d.fit)."""

    def __init__(self, layer: FlameLayer, device: torch.device, size: int, iterations: int, expression_prior: float,
                 identity: np.ndarray | None):
        from scmcl.face3d.fit import FitSettings

        self.layer, self.device, self.size, self.identity = layer, device, size, identity
        self.settings = FitSettings(n_shape=layer.n_shape, n_exp=layer.n_exp, iters_full=iterations,
                                    w_exp=expression_prior)

    def reconstruct(self, crops: np.ndarray, landmarks: np.ndarray, valid: np.ndarray) -> Reconstruction:
        from scmcl.face3d.fit import fit_clip

        result = fit_clip(self.layer, landmarks, self.size, self.settings, valid=valid, device=self.device,
                          identity=self.identity)
        return Reconstruction(result.shape, result.exp, result.pose, result.cam, result.per_frame_rms)


#: DECA's TestData crop: a square of 1.25 × (1.1 × mean bbox side) around the landmark box, to 224.
_DECA_SIZE, _DECA_BOX, _DECA_SCALE = 224, 1.1, 1.25


def deca_crop_transform(landmarks: np.ndarray) -> np.ndarray:
    """(T,2,3) crop → DECA-input similarity (scale + translation) from each frame's landmarks."""
    lo, hi = np.nanmin(landmarks, axis=1), np.nanmax(landmarks, axis=1)
    centre = (lo + hi) / 2
    side = _DECA_SCALE * _DECA_BOX * (hi - lo).mean(axis=1)
    k = _DECA_SIZE / side
    matrices = np.zeros((len(landmarks), 2, 3))
    matrices[:, 0, 0] = matrices[:, 1, 1] = k
    matrices[:, :, 2] = _DECA_SIZE / 2 - k[:, None] * centre
    return matrices


def deca_cam_to_crop(cam: np.ndarray, matrices: np.ndarray, size: int) -> np.ndarray:
    """Re-express DECA's camera (DECA-input frame) as an orthographic camera of the crop.

    DECA maps a point to 224-px coordinates u = (s(x+tx)+1)·112; the crop point is
    (u - b)/k. Writing that as (s'(x+tx')+1)·S/2 gives s' = s·224/(k·S) and the offsets below.
    """
    k, b = matrices[:, 0, 0], matrices[:, :, 2]
    s = cam[:, 0]
    s_new = s * _DECA_SIZE / (k * size)
    # x: ((s(x+tx)+1)·112 - bx)/k = (s'(x+tx')+1)·S/2
    half = s_new * size / 2
    tx = ((s * cam[:, 1] * 112 + 112 - b[:, 0]) / k - size / 2) / half
    # y is flipped on both sides: ((1 - s(y+ty))·112 - by)/k = (1 - s'(y+ty'))·S/2
    ty = (size / 2 - (112 - s * cam[:, 2] * 112 - b[:, 1]) / k) / half
    return np.stack([s_new, tx, ty], axis=1)


class DecaReconstructor:
    """DECA's E_flame on each frame's 224 crop; identity averaged over the clip."""

    def __init__(self, layer: FlameLayer, model_path: str, device: torch.device, size: int):
        from scmcl.face3d.deca import load_deca

        self.layer, self.device, self.size = layer, device, size
        self.encoder = load_deca(model_path, device=str(device))

    def reconstruct(self, crops: np.ndarray, landmarks: np.ndarray, valid: np.ndarray) -> Reconstruction:
        filled = _fill_invalid(landmarks, valid)
        matrices = deca_crop_transform(filled)
        images = np.stack([cv2.warpAffine(c, m, (_DECA_SIZE, _DECA_SIZE), flags=cv2.INTER_LINEAR)
                           for c, m in zip(crops, matrices)])
        batch = torch.as_tensor(images, device=self.device).permute(0, 3, 1, 2).float() / 255
        codes = [self.encoder.encode(batch[i : i + 32]) for i in range(0, len(batch), 32)]
        param = {k: torch.cat([c[k] for c in codes]).cpu().numpy() for k in ("shape", "exp", "pose", "cam")}
        recon = Reconstruction(
            shape=param["shape"].mean(axis=0)[: self.layer.n_shape],
            exp=param["exp"][:, : self.layer.n_exp],
            pose=param["pose"],
            cam=deca_cam_to_crop(param["cam"], matrices, self.size),
            per_frame_rms=np.zeros(len(crops)),
        )
        recon.per_frame_rms = landmark_rms(self.layer, recon, filled, self.size, self.device)
        return recon


def _fill_invalid(landmarks: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Frames without a detection take the nearest valid frame's landmarks."""
    good = np.flatnonzero(valid)
    nearest = good[np.abs(np.arange(len(valid))[:, None] - good[None]).argmin(axis=1)]
    return landmarks[nearest]


def make_reconstructor(name: str, layer: FlameLayer, device: torch.device, size: int, deca_model: str,
                       fit_iterations: int, fit_expression_prior: float, identity: np.ndarray | None = None) -> Reconstructor:
    """The backend ``name``; ``identity`` (the actor's, ``scmcl.preprocess.identity``) fixes the
    fit's shape, and DECA, which predicts a shape per frame, takes none."""
    if name == "fit":
        return FitReconstructor(layer, device, size, fit_iterations, fit_expression_prior, identity)
    if identity is not None:
        raise ValueError(f"an actor identity is for the fit backend; the {name} backend predicts its own shapes")
    if name == "deca":
        return DecaReconstructor(layer, deca_model, device, size)
    raise ValueError(f"unknown reconstruction backend '{name}': use fit or deca")

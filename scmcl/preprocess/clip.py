"""One clip through preprocessing: track → reconstruct → align → conditioning images.

Outputs per clip (no per-frame files): ``frames.parquet`` with every per-frame number, and
one memory-mappable uint8 stack per image kind (``STACKS``). The NMFC, shape, mask and
eye-gaze images are rasterized straight into the aligned crop (one resampling less than NED,
which rendered in DECA's 224 frame, warped to the crop, then aligned).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from scmcl.face3d.flame import FlameLayer
from scmcl.io.atomic import write_parquet
from scmcl.io.stacks import write_stack
from scmcl.preprocess.align import invert, transform_points, umeyama_batch, warp_stack
from scmcl.preprocess.conditioning import eye_gaze_image, face_mask, nmfc_colors, nmfc_image, rasterize_surface, shape_image
from scmcl.preprocess.eyes import eye_landmarks
from scmcl.preprocess.masks import SegmentationMasker
from scmcl.preprocess.reconstruct import Reconstruction, mesh_batches, projected_landmarks
from scmcl.preprocess.tracking import TrackedClip

#: Image stacks written per clip: crops and masks in crop space, the rest aligned.
STACKS = ("crops", "masks", "faces_aligned", "masks_aligned", "nmfc_aligned", "shape_aligned", "eyes_aligned")
TABLE = "frames.parquet"


@dataclass
class ClipOutputs:
    table: pd.DataFrame
    stacks: dict[str, np.ndarray]


def _columns(prefix: str, block: np.ndarray) -> dict[str, np.ndarray]:
    block = block.reshape(len(block), -1)
    return {f"{prefix}_{j:02d}": block[:, j].astype(np.float32) for j in range(block.shape[1])}


@torch.no_grad()
def _render_aligned(layer: FlameLayer, recon: Reconstruction, align: np.ndarray, size: int,
                    device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NMFC, shape images and face masks of the reconstructed meshes, in the aligned crop."""
    faces = layer.faces.to(device)
    colors = nmfc_colors(layer.v_template).to(device)
    nmfc, shape, mask = [], [], []
    for sl, mesh, cam in mesh_batches(layer, recon, device):
        transform = torch.as_tensor(align[sl], dtype=torch.float32, device=device)
        surface = rasterize_surface(mesh.vertices, faces, cam, size, pixel_transform=transform)
        nmfc.append(_to_uint8(nmfc_image(surface, faces, colors)))
        shape.append(_to_uint8(shape_image(surface, faces)))
        mask.append(face_mask(surface, faces).cpu().numpy())
    return np.concatenate(nmfc), np.concatenate(shape), np.concatenate(mask)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def process_clip(tracked: TrackedClip, recon: Reconstruction, layer: FlameLayer, template: np.ndarray,
                 eye_points: int, device: torch.device, masker: SegmentationMasker | None = None) -> ClipOutputs:
    """Alignment, eye points and conditioning images of a tracked and reconstructed clip.

    The face mask is the segmentation network's when one is given (FSGAN's U-Net), otherwise
    the rasterized region of the reconstructed mesh.
    """
    size = tracked.crops.shape[1]
    fitted = projected_landmarks(layer, recon, size, device)
    anchors = np.where(tracked.found[:, None, None], tracked.landmarks_crop, fitted)
    align = umeyama_batch(anchors, template)  # crop → aligned
    nmfc, shape, masks_aligned = _render_aligned(layer, recon, align, size, device)
    if masker is None:
        masks = warp_stack(masks_aligned, invert(align), size, "nearest")
    else:
        masks = masker.masks(tracked.crops)
        masks_aligned = warp_stack(masks, align, size, "nearest")
    faces_aligned = warp_stack(tracked.crops, align, size, "lanczos") * masks_aligned[..., None]
    eyes_crop = eye_landmarks(tracked.crops, anchors, with_mouth=eye_points == 34)
    eyes = transform_points(np.asarray(eyes_crop), align)
    gaze = eye_gaze_image(eyes, size).cpu().numpy()

    n = len(tracked.found)
    cols: dict[str, np.ndarray] = {"frame": np.arange(n), "found": tracked.found, "filled": tracked.filled}
    cols |= _columns("box", tracked.boxes)
    cols |= _columns("lmk_x", tracked.landmarks[..., 0]) | _columns("lmk_y", tracked.landmarks[..., 1])
    cols |= _columns("crop_matrix", tracked.matrices) | _columns("align_matrix", align)
    cols |= _columns("eye_x", eyes[..., 0]) | _columns("eye_y", eyes[..., 1])
    cols |= _columns("shape", np.broadcast_to(recon.shape, (n, len(recon.shape))))
    cols |= _columns("exp", recon.exp) | _columns("pose", recon.pose) | _columns("cam", recon.cam)
    cols["fit_rms_px"] = recon.per_frame_rms.astype(np.float32)
    stacks = {"crops": tracked.crops, "masks": masks.astype(np.uint8) * 255, "faces_aligned": faces_aligned.astype(np.uint8),
              "masks_aligned": masks_aligned.astype(np.uint8) * 255, "nmfc_aligned": nmfc, "shape_aligned": shape,
              "eyes_aligned": gaze}
    return ClipOutputs(pd.DataFrame(cols), stacks)


def write_clip_outputs(outputs: ClipOutputs, directory: Path) -> list[Path]:
    """Publish a clip's table and stacks, each atomically; the table goes last."""
    written = []
    for name, stack in outputs.stacks.items():
        write_stack(directory / f"{name}.npy", stack)
        written.append(directory / f"{name}.npy")
    write_parquet(outputs.table, directory / TABLE)
    return [*written, directory / TABLE]

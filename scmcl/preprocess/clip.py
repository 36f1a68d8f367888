"""One clip through preprocessing: track → reconstruct → align → conditioning images.

Outputs per clip (no per-frame files) follow :mod:`scmcl.io.clip_data`: ``frames.parquet`` with
every per-frame number and one memory-mappable uint8 stack per image kind. The NMFC, shape,
mask and eye-gaze images are rasterized straight into the aligned crop (one resampling less
than NED, which rendered in DECA's 224 frame, warped to the crop, then aligned).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from scmcl.face3d.flame import FlameLayer
from scmcl.io import clip_data as cd
from scmcl.preprocess.align import invert, transform_points, umeyama_batch, warp_stack
from scmcl.preprocess.conditioning import eye_gaze_image, face_mask, nmfc_colors, nmfc_image, rasterize_surface, shape_image
from scmcl.preprocess.eyes import eye_landmarks
from scmcl.preprocess.masks import SegmentationMasker
from scmcl.preprocess.reconstruct import Reconstruction, mesh_batches, projected_landmarks
from scmcl.preprocess.tracking import TrackedClip


@dataclass
class ClipOutputs:
    table: pd.DataFrame
    stacks: dict[str, np.ndarray]


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
    blocks = {"box": tracked.boxes, "landmarks": tracked.landmarks, "crop_matrix": tracked.matrices, "align_matrix": align,
              "eyes": eyes, "shape": np.broadcast_to(recon.shape, (n, len(recon.shape))), "exp": recon.exp,
              "pose": recon.pose, "cam": recon.cam}
    table = cd.frames_table(blocks, found=tracked.found, filled=tracked.filled,
                            fit_rms_px=recon.per_frame_rms.astype(np.float32))
    stacks = {cd.CROPS: tracked.crops, cd.MASKS: masks.astype(np.uint8) * 255,
              cd.FACES_ALIGNED: faces_aligned.astype(np.uint8), cd.MASKS_ALIGNED: masks_aligned.astype(np.uint8) * 255,
              cd.NMFC_ALIGNED: nmfc, cd.SHAPE_ALIGNED: shape, cd.EYES_ALIGNED: gaze}
    return ClipOutputs(table, stacks)

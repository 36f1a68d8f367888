"""NMFC and shape images of a clip's frames with other expressions, drawn with our rasterizer
straight into the clip's aligned crop (defect 11: SCMCL warped re-rendered images into an
un-aligned crop, in BGR). Each frame keeps its reconstruction's identity, head pose and camera
and its alignment; the manipulator's 51 values replace the expression and the jaw opening.
The images are quantised to 8 bits like the preprocessed stacks the renderer trained on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from scmcl.face3d.flame import FlameLayer
from scmcl.face3d.flame_file import load_flame_model, load_landmark_embedding
from scmcl.io.clip_data import MASKS_ALIGNED
from scmcl.preprocess.conditioning import face_mask, nmfc_colors, nmfc_image, rasterize_surface, screen_vertices, shape_image
from scmcl.preprocess.eyes import EYES
from scmcl.renderer.windows import RendererClip

#: The jaw opening of the 51-d view is the jaw's x-axis rotation, pose[3] of [global(3), jaw(3)].
JAW_OPEN = 3


def _quantised(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) in [0, 1] → (N, 3, H, W) rounded to the stacks' 8-bit levels."""
    return ((images.clamp(0, 1) * 255 + 0.5).floor() / 255).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class Rendered:
    """``images`` (n, 6, H, W): NMFC then shape in [0, 1]; ``eyelids`` (n, 12, 2): the mesh's 68-point
    eye landmarks 36-47 in the aligned crop; ``mask`` (n, H, W) bool: the pixels the mesh covers."""

    images: torch.Tensor
    eyelids: torch.Tensor
    mask: torch.Tensor


class Rerenderer:
    """The FLAME model of preprocessing, loaded once, rendering edited frames of any clip."""

    def __init__(self, model_path: str, landmarks_path: str, device: torch.device) -> None:
        self.model = load_flame_model(model_path)
        self.landmarks = load_landmark_embedding(landmarks_path)
        self.device = device
        self.layers: dict[tuple[int, int], FlameLayer] = {}

    def _layer(self, n_shape: int, n_exp: int) -> FlameLayer:
        key = (min(n_shape, self.model.num_shape), min(n_exp, self.model.num_expression))
        if key not in self.layers:
            self.layers[key] = FlameLayer(self.model, landmarks=self.landmarks, n_shape=key[0], n_exp=key[1]).to(self.device)
        return self.layers[key]

    @torch.no_grad()
    def render(self, clip: RendererClip, frames: Sequence[int], expressions51: np.ndarray | torch.Tensor) -> Rendered:
        """NMFC and shape images and mesh eye points of ``frames`` of ``clip`` with the (n, 51)
        ``[jaw_open, exp_00..exp_49]`` values in place of the reconstructed ones."""
        index = np.asarray(frames)
        table = clip.table
        shape, exp, pose, cam, align = (np.array(table.block(name)[index], np.float32)
                                        for name in ("shape", "exp", "pose", "cam", "align_matrix"))
        edited = np.asarray(torch.as_tensor(expressions51).detach().cpu(), np.float32)
        width = min(exp.shape[1], edited.shape[1] - 1)
        exp[:, :width] = edited[:, 1:1 + width]
        pose[:, JAW_OPEN] = edited[:, 0]
        layer = self._layer(shape.shape[1], exp.shape[1])
        tensor = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
        mesh = layer(shape=tensor(shape[:, :layer.n_shape]), exp=tensor(exp[:, :layer.n_exp]), pose=tensor(pose))
        faces = layer.faces.to(self.device)
        size = clip.stacks[MASKS_ALIGNED].shape[1]
        surface = rasterize_surface(mesh.vertices, faces, tensor(cam), size, pixel_transform=tensor(align))
        nmfc = nmfc_image(surface, faces, nmfc_colors(layer.v_template).to(self.device))
        images = torch.cat([_quantised(nmfc), _quantised(shape_image(surface, faces))], dim=1)
        eyelids = screen_vertices(mesh.landmarks[:, EYES], tensor(cam), size, tensor(align))[..., :2]
        return Rendered(images, eyelids, face_mask(surface, faces))

    def images(self, clip: RendererClip, frames: Sequence[int], expressions51) -> torch.Tensor:
        """(n, 6, H, W) in [0, 1]: the NMFC then the shape images of :meth:`render`."""
        return self.render(clip, frames, expressions51).images

    def conditioning(self, clip: RendererClip, frames: Sequence[int], expressions51) -> torch.Tensor:
        """(n, 10, H, W): the clip's conditioning of ``frames`` with NMFC and shape re-rendered
        from ``expressions51``; its eye-gaze image and mask stay."""
        original = clip.conditioning(frames).to(self.device)
        rendered = self.images(clip, frames, expressions51)
        return torch.cat([rendered[:, :3], original[:, 3:6], rendered[:, 3:], original[:, 9:]], dim=1)

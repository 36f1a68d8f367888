"""Test-only helpers: float32 comparisons, weight files in the official layouts, one-call renders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from scmcl.corpus.layout import ClipKey, groundtruth_path
from scmcl.face3d.deca import DecaEncoder
from scmcl.io import clip_data as cd
from scmcl.preprocess.conditioning import face_mask, nmfc_image, rasterize_surface, shape_image
from scmcl.preprocess.masks import UNet


def assert_float32_close(actual, expected, rtol: float = 1e-5) -> None:
    """Float32 results differ by CPU (kernels, summation order): compare within ``rtol`` of each
    value plus the same fraction of the largest magnitude (for values near zero)."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * float(expected.abs().max()), check_dtype=False)


def save_deca_like(path: str | Path, encoder: DecaEncoder) -> None:
    """Write ``encoder`` in the layout of DECA's ``deca_model.tar`` (one state dict per network)."""
    torch.save({name: {k: v.detach().cpu() for k, v in net.state_dict().items()}
                for name, net in encoder.networks().items()}, path)


def save_unet_like(path: str | Path, model: UNet) -> None:
    """Write ``model`` in the layout of FSGAN's segmentation checkpoint, ``{'state_dict': …}``."""
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)


def render_nmfc(vertices, faces, cam, colors, size, *, pixel_transform=None, out_size=None) -> torch.Tensor:
    """NMFC image (B,out,out,3) of ``vertices`` (B,V,3) coloured by ``colors`` (V,3)."""
    surface = rasterize_surface(vertices, faces, cam, size, pixel_transform=pixel_transform, out_size=out_size)
    return nmfc_image(surface, faces, colors)


def render_shape(vertices, faces, cam, size, *, normals=None) -> torch.Tensor:
    """DECA's shape image (B,size,size,3), optionally shaded with other vertex ``normals``."""
    return shape_image(rasterize_surface(vertices, faces, cam, size), faces, normals)


def render_face_mask(vertices, faces, cam, size, face_vertex_mask=None) -> torch.Tensor:
    """(B,size,size) bool: where the NMFC and shape images are drawn."""
    return face_mask(rasterize_surface(vertices, faces, cam, size), faces, face_vertex_mask)


def truth_expressions(truth: pd.DataFrame, actor: str, key: ClipKey) -> pd.DataFrame:
    """Expression-table rows of one clip from the corpus's ground-truth table: the true jaw pose
    and expression that preprocessing estimates (for tests of what consumes the table)."""
    data = {"actor": actor, "emotion": key.emotion, "level": int(key.level), "clip": key.clip, "frame": truth.frame}
    data |= {f"jaw_pose_{j}": truth[f"pose_{3 + j:02d}"].astype(np.float32) for j in range(3)}
    data |= {f"exp_{j:02d}": truth.get(f"exp_{j:02d}", 0.0 * truth.frame).astype(np.float32) for j in range(50)}
    return pd.DataFrame(data)


def truth_expression_table(root: str | Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """The per-actor expression table of every manifest clip from the corpus's ground truth."""
    parts = []
    for row in manifest.itertuples(index=False):
        key = ClipKey(row.emotion, int(row.level), row.clip)
        parts.append(truth_expressions(pd.read_parquet(groundtruth_path(root, row.actor, key)), row.actor, key))
    return pd.concat(parts, ignore_index=True)


RENDERER_CLIP_FRAMES, RENDERER_CLIP_SIZE = 6, 16


def write_renderer_clip(directory: Path, points: int = 34, seed: int = 0) -> dict[str, np.ndarray]:
    """A clip folder of random aligned stacks and ``points`` eye and mouth points, the renderer's
    inputs; returns what it wrote."""
    rng = np.random.default_rng(seed)
    n, size = RENDERER_CLIP_FRAMES, RENDERER_CLIP_SIZE
    stacks = {name: rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8) for name in cd.STACKS}
    for name in (cd.MASKS, cd.MASKS_ALIGNED):
        stacks[name] = (rng.random((n, size, size)) > 0.5).astype(np.uint8) * 255
    eyes = rng.uniform(2, size - 2, size=(n, points, 2))
    cd.write_clip(directory, cd.frames_table({"eyes": eyes}), stacks)
    return stacks | {"eyes": eyes}

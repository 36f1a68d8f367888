"""Test-only helpers: float32 comparisons, weight files in the official layouts, one-call renders."""

from __future__ import annotations

from pathlib import Path

import torch

from scmcl.face3d.deca import DecaEncoder
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

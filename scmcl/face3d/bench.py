"""Rasterizer throughput on a FLAME-sized mesh (``scmcl bench raster``); figures, never asserts."""

from __future__ import annotations

import math
import resource
import time

import torch

from scmcl.face3d.camera import orthographic
from scmcl.face3d.render import render_mesh

#: Head-like ellipsoid semi-axes (x, y, z) in metres.
HEAD_RADII = (0.08, 0.11, 0.09)


def ellipsoid_mesh(
    n_lat: int = 51, n_lon: int = 100, radii: tuple[float, float, float] = HEAD_RADII
) -> tuple[torch.Tensor, torch.Tensor]:
    """UV ellipsoid around the origin, poles on ±y, faces wound counter-clockwise from outside.

    The defaults give 5002 vertices and 10000 faces, about FLAME's 5023 / 9976.
    """
    theta = torch.arange(1, n_lat, dtype=torch.float64) * (math.pi / n_lat)
    phi = torch.arange(n_lon, dtype=torch.float64) * (2 * math.pi / n_lon)
    st, ct = torch.sin(theta)[:, None], torch.cos(theta)[:, None]
    ring = torch.stack([st * torch.sin(phi), ct.expand(-1, n_lon), st * torch.cos(phi)], dim=-1).reshape(-1, 3)
    unit = torch.cat([torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), ring, torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64)])
    verts = (unit * torch.tensor(radii, dtype=torch.float64)).float()

    j = torch.arange(n_lon)
    nxt = (j + 1) % n_lon
    bottom = verts.shape[0] - 1
    rows = [torch.stack([torch.zeros_like(j), 1 + j, 1 + nxt], dim=-1)]
    for i in range(n_lat - 2):
        a, b = 1 + i * n_lon + j, 1 + (i + 1) * n_lon + j
        c, d = 1 + (i + 1) * n_lon + nxt, 1 + i * n_lon + nxt
        rows += [torch.stack([a, b, c], dim=-1), torch.stack([a, c, d], dim=-1)]
    last = 1 + (n_lat - 2) * n_lon
    rows.append(torch.stack([last + j, torch.full_like(j, bottom), last + nxt], dim=-1))
    return verts, torch.cat(rows).long()


def _yawed_batch(verts: torch.Tensor, batch: int) -> torch.Tensor:
    """``batch`` copies of ``verts`` turned by different yaw angles (so frames differ)."""
    angles = torch.linspace(-0.4, 0.4, batch)
    c, s = torch.cos(angles), torch.sin(angles)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    rot = torch.stack([c, zero, s, zero, one, zero, -s, zero, c], dim=-1).view(batch, 3, 3)
    return torch.einsum("bij,vj->bvi", rot, verts)


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_raster_bench(size: int = 256, batch: int = 8, iters: int = 10, device: str = "cpu") -> dict:
    """Time :func:`render_mesh` on ``batch`` frames of a ~10k-face head-sized ellipsoid.

    The mesh fills about 85% of the image height.  One warm-up call, then ``iters`` timed
    calls.  ``peak_mem_mb`` is CUDA's max allocated on GPU, else the growth of the process's
    peak RSS during the run (0 when earlier work already peaked higher).
    """
    dev = torch.device(device)
    base_verts, faces = ellipsoid_mesh()
    verts = _yawed_batch(base_verts, batch).to(dev)
    faces = faces.to(dev)
    colors = (0.5 + 0.5 * torch.nn.functional.normalize(verts, dim=-1)).clamp(0, 1)
    cam = torch.tensor([[0.85 / HEAD_RADII[1], 0.0, 0.0]], device=dev).expand(batch, 3)
    screen = orthographic(verts, cam, size, size)

    def step() -> None:
        render_mesh(verts, faces, colors, screen, size, size)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    rss_before = _max_rss_mb()
    step()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    seconds = time.perf_counter() - start
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = _max_rss_mb() - rss_before
    frames = batch * iters
    return {
        "size": size,
        "batch": batch,
        "faces": int(faces.shape[0]),
        "device": str(dev),
        "frames_per_s": frames / seconds,
        "ms_per_frame": 1000.0 * seconds / frames,
        "peak_mem_mb": peak,
    }


def format_bench(result: dict) -> str:
    """One line for humans, e.g. for ``scmcl bench raster``."""
    peak = result["peak_mem_mb"]
    mem = "n/a" if peak is None else f"{peak:.0f} MB"
    return (
        f"raster {result['size']}x{result['size']} batch {result['batch']} faces {result['faces']} on {result['device']}: "
        f"{result['frames_per_s']:.1f} frames/s ({result['ms_per_frame']:.2f} ms/frame), peak mem {mem}"
    )

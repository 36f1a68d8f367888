"""The renderer's held-out figures (issue 11's Done-when): on the actor's test clips, the
generated face against the real one on the face region, in PSNR and SSIM, beside two
baselines built from the training clips: the actor's mean face and retrieval (the training frame
whose NMFC image is nearest). Also the sample grid the report shows."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from scmcl.renderer.baselines import mean_face, nearest_frames, nmfc_thumbnails
from scmcl.renderer.images import face_psnr_ssim
from scmcl.renderer.networks import Generator
from scmcl.renderer.sequence import render_clip
from scmcl.renderer.windows import RendererClip

METHODS = ("renderer", "mean_face", "nearest_nmfc")


def _masks(clip: RendererClip, frames: range) -> torch.Tensor:
    return clip.conditioning(frames)[:, -1]


#: Held-out frames in the evaluation's sample grid, spread over the first test clip.
GRID_ROWS = 6


def evaluate_renderer(generator: Generator, train_dirs: Sequence[str], test_dirs: Sequence[str],
                      device: torch.device) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per (test clip, method): mean face-region PSNR (dB) and SSIM over its frames;
    and a sample grid of the first test clip's frames."""
    train = [RendererClip(d) for d in train_dirs]
    mean = mean_face(train).to(device)
    thumbs = torch.cat([nmfc_thumbnails(c, range(len(c))) for c in train])
    index = [(c, f) for c in train for f in range(len(c))]
    generator = generator.to(device).eval()
    rows, grid = [], None
    for directory in test_dirs:
        clip = RendererClip(directory)
        frames = range(len(clip))
        real, masks = clip.faces(frames).to(device), _masks(clip, frames).to(device)
        nearest = nearest_frames(thumbs, nmfc_thumbnails(clip, frames))
        retrieved = torch.cat([index[i][0].faces([index[i][1]]) for i in nearest.tolist()]).to(device)
        candidates = {"renderer": render_clip(generator, clip.conditioning(frames).to(device)),
                      "mean_face": mean.expand_as(real), "nearest_nmfc": retrieved}
        for method in METHODS:
            psnr, ssim = face_psnr_ssim(candidates[method], real, masks)
            rows.append({"clip": str(Path(directory).relative_to(Path(directory).parents[2])), "method": method,
                         "frames": len(clip), "psnr": psnr.mean().item(), "ssim": ssim.mean().item()})
        if grid is None:
            shown = np.linspace(0, len(clip) - 1, GRID_ROWS).round().astype(int)
            grid = sample_grid(clip.conditioning(shown), real[shown], candidates["renderer"][shown])
    return pd.DataFrame(rows), grid


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Frame-weighted means per method, in METHODS order."""
    weighted = table.assign(psnr=table.psnr * table.frames, ssim=table.ssim * table.frames).groupby("method")
    sums = weighted[["psnr", "ssim", "frames"]].sum()
    out = sums[["psnr", "ssim"]].div(sums.frames, axis=0).reindex(list(METHODS))
    return out.reset_index()


def sample_grid(conditioning: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> np.ndarray:
    """(rows·H, 3·W, 3) uint8: per row the frame's NMFC | the real face | the generated face.
    ``conditioning`` (N, 10, H, W) in [0, 1]; faces (N, 3, H, W) in [−1, 1]."""
    nmfc = conditioning[:, :3].cpu()
    tiles = torch.cat([nmfc, (real.cpu() + 1) / 2, (fake.cpu() + 1) / 2], dim=3).clamp(0, 1)
    return (tiles.permute(0, 2, 3, 1).flatten(0, 1) * 255).round().to(torch.uint8).numpy()

"""What the paper metrics' feature networks share: the check of the faces they are given and
the batched, gradient-free pass that turns them into one float64 feature row per frame."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def check_faces(faces: np.ndarray) -> np.ndarray:
    """``faces`` as a (T, H, W, 3) uint8 RGB array, or a ValueError saying what it is instead."""
    if not (isinstance(faces, np.ndarray) and faces.ndim == 4 and faces.shape[-1] == 3 and faces.dtype == np.uint8):
        shown = f"{faces.dtype} {faces.shape}" if isinstance(faces, np.ndarray) else type(faces).__name__
        raise ValueError(f"faces must be a (T, H, W, 3) uint8 RGB array, not {shown}")
    return faces


def batched_features(model: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                     make_input: Callable[[np.ndarray], torch.Tensor], faces: np.ndarray, width: int,
                     device: str | torch.device, batch_size: int) -> np.ndarray:
    """(T, width) float64 features of checked ``faces``: ``forward(make_input(batch))`` in eval
    mode, ``batch_size`` frames at a time on ``device``."""
    faces = check_faces(faces)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")
    device = torch.device(device)
    model.eval()
    out = np.empty((len(faces), width), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(faces), batch_size):
            batch = make_input(faces[start:start + batch_size]).to(device)
            out[start:start + len(batch)] = forward(batch).double().cpu().numpy()
    return out

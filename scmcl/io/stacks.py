"""Image stacks: one uint8 ``.npy`` per clip and kind, memory-mapped for random frame access.

Replaces NED's one-PNG-per-frame folders (millions of files on a cluster file system).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from scmcl.io.atomic import atomic_path


def write_stack(path: str | os.PathLike, images: np.ndarray) -> None:
    """Write (T,H,W[,C]) images atomically as a plain .npy (no pickle)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(images), allow_pickle=False)


def read_stack(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """Open a stack; memory-mapped by default so a data loader reads only the frames it uses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image stack {path} is missing: rerun the preprocessing shard that writes it")
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)

"""Dynamic time warping of two feature sequences, as the ``dtw`` package (L1 cost, unit steps).

The paper's code fills the accumulated cost with a pure-Python O(N·M) double loop; here each
anti-diagonal (cells whose predecessors are all on the two previous anti-diagonals) is one numpy
operation, so the Python loop runs only N+M times.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

__all__ = ["dtw_path"]

#: Traceback moves (di, dj), in tie-breaking order: diagonal, up (i-1), left (j-1).
_MOVES = ((1, 1), (1, 0), (0, 1))


def _accumulated(cost: np.ndarray) -> np.ndarray:
    """(N+1, M+1) padded accumulated cost: D[0,0]=0, the rest of row and column 0 infinite."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for diag in range(n + m - 1):
        i = np.arange(max(0, diag - m + 1), min(n - 1, diag) + 1)
        j = diag - i
        best = np.minimum(np.minimum(acc[i, j], acc[i, j + 1]), acc[i + 1, j])
        acc[i + 1, j + 1] = cost[i, j] + best
    return acc


def dtw_path(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matched indices (i, j), int64, of the minimum L1-cost warping of ``a`` (N,d) onto ``b`` (M,d).

    The path runs from (0,0) to (N-1,M-1), each step advancing i, j or both by one, with no
    step penalty and no window.  Ties in the traceback prefer the diagonal, then i-1, then j-1,
    like ``dtw.dtw(a, b, dist=L1)``, so paths match the paper's.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or len(a) == 0 or len(b) == 0 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need non-empty (N,d) and (M,d) sequences, got {a.shape} and {b.shape}")
    acc = _accumulated(cdist(a, b, "cityblock"))

    i, j = len(a) - 1, len(b) - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        di, dj = _MOVES[int(np.argmin((acc[i, j], acc[i, j + 1], acc[i + 1, j])))]
        i, j = i - di, j - dj
        path.append((i, j))
    rows, cols = np.array(path[::-1], dtype=np.int64).T
    return rows, cols

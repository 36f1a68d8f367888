"""SCMCL's pseudo-targets (method.md §4.3): for a source window and a target emotion, training
windows of that emotion whose audio is close, retrieved from the per-actor neutral×emotion
audio-distance matrices (``scmc.dists``).

- same emotion: the window itself, distance 0;
- neutral → emotion: that emotion's windows in the source's matrix row within ``dist_thresh``,
  nearest first, at most ``topk``; emotion → neutral: the same down the source's column;
- emotion → other emotion: through a neutral window: the nearest neutral window j to the
  source, then the single nearest target window k to j (both within the threshold); k is the
  target with distance d(j, k), j the intermediate with distance d(source, j).

Candidates are only training windows (a ``WindowSet`` holds no test clip), and the tables are
built from the matrices handed in, so a new distance file cannot leave stale targets (defect 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scmcl.manipulator.windows import WindowSet

NONE = -1


@dataclass(frozen=True)
class PseudoBatch:
    """Drawn pseudo-targets of a batch: ``target``/``inter`` are window indices (NONE where there
    is none), ``mask`` is 1 where a target exists; distances are inf where there is none."""

    target: torch.Tensor
    distance: torch.Tensor
    inter: torch.Tensor
    inter_distance: torch.Tensor
    mask: torch.Tensor


class PseudoTargets:
    """``candidates`` (N, emotions, topk) window indices and their ``distances``; ``inter`` and
    ``inter_distance`` (N, emotions) for emotion → emotion targets."""

    def __init__(self, n_windows: int, n_emotions: int, topk: int) -> None:
        self.candidates = np.full((n_windows, n_emotions, topk), NONE, np.int64)
        self.distances = np.full((n_windows, n_emotions, topk), np.inf, np.float32)
        self.inter = np.full((n_windows, n_emotions), NONE, np.int64)
        self.inter_distance = np.full((n_windows, n_emotions), np.inf, np.float32)

    def coverage(self) -> float:
        """Fraction of (source, target emotion) pairs that have a pseudo-target."""
        return float((self.candidates[:, :, 0] != NONE).mean())

    def draw(self, sources: np.ndarray, targets: np.ndarray, rng: np.random.Generator,
             device: torch.device | str) -> PseudoBatch:
        """One candidate per (source, target label), uniformly among those that exist."""
        candidates, distances = self.candidates[sources, targets], self.distances[sources, targets]
        count = (candidates != NONE).sum(1)
        pick = np.floor(rng.random(len(sources)) * np.maximum(count, 1)).astype(np.int64)
        rows = np.arange(len(sources))
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        return PseudoBatch(as_tensor(candidates[rows, pick]), as_tensor(distances[rows, pick]),
                           as_tensor(self.inter[sources, targets]), as_tensor(self.inter_distance[sources, targets]),
                           as_tensor((count > 0).astype(np.float32)))


def _positions(windows: WindowSet, actor: str, emotion: str, size: int) -> np.ndarray:
    """Window index of each matrix row (neutral) or column (emotion) of an actor; NONE for the
    rows of windows that are not training windows (test clips)."""
    table = windows.table
    mine = table[(table.actor == actor) & (table.emotion == emotion)]
    positions = np.full(size, NONE, np.int64)
    positions[mine.row.to_numpy()] = mine.index.to_numpy()
    return positions


def _nearest(distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the indices and values of the k smallest finite entries, nearest first (NONE/inf pad)."""
    k = min(k, distances.shape[1])
    if k == 0:
        return np.full((len(distances), 0), NONE, np.int64), np.zeros((len(distances), 0), np.float32)
    index = np.argpartition(distances, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(distances, index, 1)
    order = np.argsort(values, axis=1, kind="stable")
    index, values = np.take_along_axis(index, order, 1), np.take_along_axis(values, order, 1)
    return np.where(np.isfinite(values), index, NONE), values


def build_pseudo_targets(windows: WindowSet, matrix_dirs: dict[str, str | Path], dist_thresh: float,
                         topk: int) -> PseudoTargets:
    """The pseudo-target table of every window of ``windows`` (``matrix_windows``' output), from
    each actor's ``<emotion>.npy`` matrices in ``matrix_dirs[actor]``."""
    emotions = list(windows.emotions)
    neutral = emotions.index("neutral")
    table = PseudoTargets(len(windows), len(emotions), topk)
    index = np.arange(len(windows))
    table.candidates[index, windows.labels.numpy(), 0] = index  # same emotion: itself, distance 0
    table.distances[index, windows.labels.numpy(), 0] = 0.0
    for actor, folder in matrix_dirs.items():
        matrices, rows, cols = {}, None, {}
        for emotion in emotions:
            if emotion == "neutral":
                continue
            path = Path(folder) / f"{emotion}.npy"
            matrix = np.array(np.load(path, mmap_mode="r"), dtype=np.float32)
            if rows is None:  # the neutral windows are every matrix's rows
                rows = _positions(windows, actor, "neutral", matrix.shape[0])
            cols[emotion] = _positions(windows, actor, emotion, matrix.shape[1])
            matrix[rows == NONE, :] = np.inf
            matrix[:, cols[emotion] == NONE] = np.inf
            matrix[matrix > dist_thresh] = np.inf
            matrices[emotion] = matrix
        if rows is None:
            continue
        sources_n = rows[rows != NONE]
        for emotion, matrix in matrices.items():
            label = emotions.index(emotion)
            found, values = _nearest(matrix[rows != NONE], topk)  # neutral → emotion
            table.candidates[sources_n, label, :found.shape[1]] = np.where(found != NONE, cols[emotion][found], NONE)
            table.distances[sources_n, label, :found.shape[1]] = values
            col_sources = cols[emotion] != NONE
            sources_e = cols[emotion][col_sources]
            found, values = _nearest(matrix[:, col_sources].T, topk)  # emotion → neutral
            table.candidates[sources_e, neutral, :found.shape[1]] = np.where(found != NONE, rows[found], NONE)
            table.distances[sources_e, neutral, :found.shape[1]] = values
            j, d_j = found[:, :1], values[:, :1]  # emotion → other emotion, via the nearest neutral j
            for other, other_matrix in matrices.items():
                if other == emotion:
                    continue
                has_j = j[:, 0] != NONE
                k, d_k = _nearest(other_matrix[j[has_j, 0]], 1)
                ok = k[:, 0] != NONE
                src = sources_e[has_j][ok]
                other_label = emotions.index(other)
                table.candidates[src, other_label, 0] = cols[other][k[ok, 0]]
                table.distances[src, other_label, 0] = d_k[ok, 0]
                table.inter[src, other_label] = rows[j[has_j, 0][ok]]
                table.inter_distance[src, other_label] = d_j[has_j, 0][ok]
    return table

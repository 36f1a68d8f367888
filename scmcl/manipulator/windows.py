"""The manipulator's training windows: ``seq_len`` consecutive 51-d expression frames of one
training clip, with the clip's emotion as label.

Test clips (config ``test_clips``) never become a window here, so nothing downstream (sources,
references, pseudo-targets) can put one in a batch. The ``ned`` variant takes every window at
hop 1, as NED's MEAD dataset; the ``scmcl`` variant takes the windows of the audio-distance
matrices (``scmc.dists.enumerate_windows``, read from their ``windows.parquet``), so a matrix
row or column and a training window are the same frames (defect 13).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from scmcl.io.clip_data import CLIP_KEY, expression_clips, read_expressions, read_table

#: Per window: its clip, first frame, and (scmcl windows) its row within its emotion in the
#: distance matrices of its actor.
KEY_COLUMNS = [*CLIP_KEY, "start"]


@dataclass(frozen=True)
class WindowSet:
    """``frames`` (N, seq_len, 51) float32, ``labels`` (N,) indices into ``emotions``, and
    ``table`` (N rows: ``KEY_COLUMNS``, plus ``row`` for matrix-indexed windows)."""

    frames: torch.Tensor
    labels: torch.Tensor
    table: pd.DataFrame
    emotions: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> WindowSet:
        return WindowSet(self.frames.to(device), self.labels.to(device), self.table, self.emotions)


def training_sequences(expression_tables: Iterable[str | os.PathLike | pd.DataFrame], emotions: Sequence[str],
                       test_clips: Sequence[str]) -> dict[tuple, np.ndarray]:
    """(T,51) frames of every clip of a configured emotion whose id is not a test clip, by clip key."""
    sequences = {}
    for table in expression_tables:
        rows = read_expressions(table)
        sequences |= expression_clips(rows[rows.emotion.isin(emotions) & ~rows["clip"].isin(test_clips)])
    if not sequences:
        raise ValueError(f"no training clip in the expression tables (emotions {', '.join(emotions)}, "
                         f"test clips {', '.join(test_clips)} excluded)")
    return dict(sorted(sequences.items()))


def _window_set(sequences: dict[tuple, np.ndarray], table: pd.DataFrame, emotions: Sequence[str],
                seq_len: int) -> WindowSet:
    table = table.reset_index(drop=True)
    frames = np.empty((len(table), seq_len, sequences[next(iter(sequences))].shape[1]), np.float32)
    for index, row in enumerate(table[KEY_COLUMNS].itertuples(index=False)):
        frames[index] = sequences[tuple(row[:4])][row.start:row.start + seq_len]
    labels = torch.tensor([emotions.index(e) for e in table.emotion], dtype=torch.long)
    return WindowSet(torch.from_numpy(frames), labels, table, tuple(emotions))


def every_window(sequences: dict[tuple, np.ndarray], emotions: Sequence[str], seq_len: int) -> WindowSet:
    """Every ``seq_len`` window at hop 1 of each sequence (the ``ned`` variant)."""
    parts = [pd.DataFrame({**dict(zip(CLIP_KEY, key)), "start": np.arange(len(seq) - seq_len + 1)})
             for key, seq in sequences.items() if len(seq) >= seq_len]
    if not parts:
        raise ValueError(f"no training clip has {seq_len} frames (scmc.dists.seq_len)")
    return _window_set(sequences, pd.concat(parts, ignore_index=True), list(emotions), seq_len)


def matrix_windows(sequences: dict[tuple, np.ndarray], window_tables: dict[str, str | os.PathLike],
                   emotions: Sequence[str], seq_len: int) -> WindowSet:
    """The windows of each actor's distance matrices (``windows.parquet`` by actor) that lie in a
    training sequence, in matrix order; each keeps its matrix ``row``. A window of a clip that
    is neither a training sequence nor excluded as a test clip means the matrices are stale."""
    known_actors = {key[0] for key in sequences}
    parts = []
    for actor, path in window_tables.items():
        if actor not in known_actors:
            raise ValueError(f"{path}: actor {actor} has no training clip in the expression tables")
        table = read_table(path, ["emotion", "level", "clip", "start", "last", "row"],
                           "rerun scmc_dists for this actor", "the distance windows").assign(actor=actor)
        table = table[table.emotion.isin(emotions)]
        keys = list(zip(table.actor, table.emotion, table.level, table["clip"]))
        table = table[[key in sequences for key in keys]]
        too_long = table[[row.start + seq_len > len(sequences[(row.actor, row.emotion, row.level, row.clip)])
                          for row in table.itertuples(index=False)]]
        if len(too_long) or (len(table) and (table["last"] - table.start + 1 != seq_len).any()):
            raise ValueError(f"{path}: its windows do not fit the expression tables or scmc.dists.seq_len {seq_len}: "
                             "rerun scmc_dists (the matrices are older than the expressions)")
        parts.append(table[[*KEY_COLUMNS, "row"]])
    windows = pd.concat(parts, ignore_index=True)
    if windows.empty:
        raise ValueError("the distance windows hold no window of a training clip")
    return _window_set(sequences, windows, list(emotions), seq_len)

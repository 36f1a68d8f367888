"""The per-clip data contract: what preprocessing writes and every later stage reads.

A preprocessed clip is one folder (``<clip_root>/level_<n>/<clip>/``) holding

- ``frames.parquet`` (``FRAMES_TABLE``), one row per video frame: plain columns (``frame``,
  ``found``, ``filled``, ``fit_rms_px``) and the named ``BLOCKS`` as float32 columns;
- one uint8 ``.npy`` image stack (T,H,W[,C]) per name in ``STACKS``, memory-mapped on reading.

A block is stored as ``<prefix>_<j>`` over its values flattened in C order (``crop_matrix_00``
to ``crop_matrix_05``, row by row); a point block (N,2) as its x column block then its y column
block (``lmk_x_00..lmk_x_67, lmk_y_00..lmk_y_67``). The corpus ground truth and ``scmcl track``
use the same naming, so tables of different stages compare block by block.

Per actor, ``expressions.parquet`` (``EXPRESSIONS_TABLE``) holds ``EXPRESSION_COLUMNS``: the clip
key, ``frame``, the jaw pose ``jaw_pose_0..2`` and ``exp_00..exp_49`` (zero-padded for models
with fewer components), so the schema is the same for the built-in head and FLAME.

Every reader fails with one line naming the file, the missing column or stack, and the rule
to rerun (``rerun``), instead of a bare path or a pandas ``KeyError`` deep in a later stage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scmcl.io.atomic import write_parquet
from scmcl.io.stacks import read_stack, write_stack

FRAMES_TABLE = "frames.parquet"
EXPRESSIONS_TABLE = "expressions.parquet"
CLIP_KEY = ["actor", "emotion", "level", "clip"]

CROPS = "crops"                  # tracked crops (crop space)
MASKS = "masks"                  # face masks (crop space), 0/255
FACES_ALIGNED = "faces_aligned"  # masked faces in the aligned crop
MASKS_ALIGNED = "masks_aligned"
NMFC_ALIGNED = "nmfc_aligned"
SHAPE_ALIGNED = "shape_aligned"
EYES_ALIGNED = "eyes_aligned"    # eye-gaze images
STACKS = (CROPS, MASKS, FACES_ALIGNED, MASKS_ALIGNED, NMFC_ALIGNED, SHAPE_ALIGNED, EYES_ALIGNED)

#: Who writes each input: (Snakemake rule, command).
WRITERS = {
    "manifest": ("corpus_manifest", "scmcl corpus scan"),
    "groundtruth": ("synth_corpus", "scmcl corpus synth"),
    "identity": ("actor_identity", "scmcl preprocess identity"),
    "shard": ("preprocess_shard", "scmcl preprocess shard"),
    "expressions": ("expression_table", "scmcl preprocess expressions"),
    "pairs": ("align_audio", "scmcl scmc align"),
}


def rerun(kind: str, target: str = "") -> str:
    """How to remake an input of ``WRITERS``: 'rerun preprocess_shard for SYN01/happy (scmcl preprocess shard)'."""
    rule, command = WRITERS[kind]
    return f"rerun {rule}{f' for {target}' if target else ''} ({command})"


def clip_id(actor: str, emotion: str, level: int, clip: str) -> str:
    """A clip as log lines and errors name it: SYN01/happy/level_3/001."""
    return f"{actor}/{emotion}/level_{int(level)}/{clip}"


def parse_clip_id(name: str) -> tuple[str, str, int, str]:
    """(actor, emotion, level, clip) of a ``clip_id`` (edit records name their source so)."""
    parts = name.split("/")
    if len(parts) != 4 or not parts[2].startswith("level_") or not parts[2][6:].isdigit():
        raise ValueError(f"{name!r} is not a clip id <actor>/<emotion>/level_<n>/<clip>")
    return parts[0], parts[1], int(parts[2][6:]), parts[3]


class ClipDataError(ValueError):
    """A table or stack breaks the contract: a column is missing or a length is wrong."""


class MissingInput(FileNotFoundError):
    """An input file is absent; the message says which rule writes it."""


def _missing_file(path: Path, fix: str) -> MissingInput:
    return MissingInput(f"{path} is missing: {fix}" if fix else f"{path} is missing")


def _parquet(read, path: Path, fix: str):
    """``read(path)``; a file that is not Parquet (truncated, another format) is one line naming it,
    not pyarrow's bare 'magic bytes not found'."""
    try:
        return read(path)
    except pa.ArrowException as err:
        reason = str(err).strip().rstrip(".")
        raise ClipDataError(f"{path} is not a readable Parquet table ({reason}): it is truncated or another "
                            f"format; {fix or 'write it again'}") from None


def _require(present, columns: Iterable[str], source: str, fix: str) -> None:
    absent = next((c for c in columns if c not in present), None)
    if absent is not None:
        raise ClipDataError(f"{source} has no column {absent}: {fix}" if fix else f"{source} has no column {absent}")


# --- tables -------------------------------------------------------------------------------------

def require_columns(table: pd.DataFrame, columns: Iterable[str], source: str, fix: str = "") -> None:
    """Fail with '<source> has no column <c>: <fix>' for the first absent column."""
    _require(set(table.columns), columns, source, fix)


def check_table(path: str | os.PathLike, columns: Iterable[str] = (), fix: str = "") -> None:
    """Check that a Parquet file exists and has ``columns`` from its schema alone (no data read),
    so a shard can check all its inputs before the first clip."""
    path = Path(path)
    if not path.is_file():
        raise _missing_file(path, fix)
    _require(set(_parquet(pq.read_schema, path, fix).names), columns, str(path), fix)


def table_label(table: str | os.PathLike | pd.DataFrame, name: str) -> str:
    """How errors call a table: its file, or ``name`` for one given in memory."""
    return name if isinstance(table, pd.DataFrame) else str(table)


def read_table(table: str | os.PathLike | pd.DataFrame, columns: Iterable[str] = (), fix: str = "",
               name: str = "table") -> pd.DataFrame:
    """A table read from its Parquet file, or given in memory (then called ``name`` in errors),
    checked to have ``columns``."""
    columns = list(columns)
    if isinstance(table, pd.DataFrame):
        require_columns(table, columns, name, fix)
        return table
    check_table(table, columns, fix)
    return _parquet(pd.read_parquet, Path(table), fix)


def _runs(numbers: np.ndarray, most: int = 8) -> str:
    """'4-6, 9': sorted frame numbers as runs, the first ``most`` of them, so a message stays one line."""
    runs: list[list[int]] = []
    for n in map(int, numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:most])
    return text + (f", ... ({len(numbers)} frames)" if len(runs) > most else "")


def require_finite(values, source: str, fix: str, columns: Sequence[str] = (), frames=None) -> None:
    """Fail with '<source>: column <c> is not finite at frames 4-6, 9: <fix>' for the first of
    ``columns`` of (T, C) ``values`` holding a NaN or inf (without ``columns``: '<source> is not
    finite at frames ...' over (T, ...) values): downstream a NaN renders as a blob face with exit 0.
    ``frames`` numbers the rows (default 0..T-1)."""
    bad = ~np.isfinite(np.asarray(values).reshape(len(values), -1))
    if not bad.any():
        return
    if columns:
        column = int(bad.any(0).argmax())
        rows, what = bad[:, column], f": column {columns[column]} is"
    else:
        rows, what = bad.any(1), " is"
    numbers = np.arange(len(bad)) if frames is None else np.asarray(frames)
    raise ClipDataError(f"{source}{what} not finite at frames {_runs(np.sort(numbers[rows]))}: {fix}")


# --- blocks -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    """A named group of per-frame values stored as columns ``<prefix>_<j>``; a ``None`` first
    dimension is the model's own size (shape/expression components, 14 or 34 eye points)."""

    prefix: str
    shape: tuple[int | None, ...]
    points: bool = False  # (N, 2): an x column block then a y column block

    def size_in(self, columns: Iterable[str]) -> int:
        """A free first dimension as stored: one past the highest index among ``columns``, so a
        gap is a missing column, not a shorter block."""
        head = f"{self.prefix}_x_" if self.points else f"{self.prefix}_"
        indices = [int(c[len(head):]) for c in columns if c.startswith(head) and c[len(head):].isdigit()]
        return max(indices) + 1 if indices else 0

    def columns(self, size: int | None = None) -> list[str]:
        """Every column in storage order; ``size`` gives a free first dimension."""
        shape = (self.shape[0] if size is None else size, *self.shape[1:])
        if None in shape:
            raise ValueError(f"block {self.prefix} has a free dimension: give its size")
        if self.points:
            return [f"{self.prefix}_{axis}_{j:02d}" for axis in "xy" for j in range(shape[0])]
        return [f"{self.prefix}_{j:02d}" for j in range(int(np.prod(shape)))]


#: Blocks of ``frames.parquet`` (and the corpus ground truth). pose = [global(3), jaw(3)] axis-angle;
#: cam = [s, tx, ty] orthographic; matrices are 2x3 screen-space maps (frame → crop, crop → aligned).
BLOCKS = {
    "box": Block("box", (4,)),
    "landmarks": Block("lmk", (68, 2), points=True),
    "crop_matrix": Block("crop_matrix", (2, 3)),
    "align_matrix": Block("align_matrix", (2, 3)),
    "eyes": Block("eye", (None, 2), points=True),
    "shape": Block("shape", (None,)),
    "exp": Block("exp", (None,)),
    "pose": Block("pose", (6,)),
    "neck_pose": Block("neck_pose", (3,)),
    "eye_pose": Block("eye_pose", (6,)),
    "cam": Block("cam", (3,)),
}
JAW = slice(3, 6)  # the jaw rotation within the pose block


def write_block(columns: dict[str, np.ndarray], name: str, values: np.ndarray) -> None:
    """Add block ``name`` of (T, *shape) ``values`` to ``columns`` (column name → array) as float32."""
    block = BLOCKS[name]
    values = np.asarray(values)
    if values.ndim != 1 + len(block.shape) or any(d is not None and d != v for d, v in zip(block.shape, values.shape[1:])):
        raise ValueError(f"block {name} takes (T, {', '.join(str(d or 'n') for d in block.shape)}) values, got {values.shape}")
    stored = values.transpose(0, 2, 1) if block.points else values
    flat = stored.reshape(len(values), int(np.prod(values.shape[1:])))
    columns.update(zip(block.columns(values.shape[1]), flat.T.astype(np.float32)))


def _stored(table: pd.DataFrame, name: str) -> tuple[Block, int, list[str]]:
    """Block ``name``, its first dimension and its columns as ``table`` stores them."""
    block = BLOCKS[name]
    size = block.size_in(table.columns) if block.shape[0] is None else block.shape[0]
    return block, size, block.columns(max(size, 1))


def read_block(table: pd.DataFrame, name: str, source: str = "table", fix: str = "") -> np.ndarray:
    """Block ``name`` back as a (T, *shape) float64 array; a missing column names ``source``."""
    block, size, names = _stored(table, name)
    require_columns(table, names, source, fix)
    values = table[names].to_numpy(np.float64, copy=True)  # writable (pandas hands out read-only views)
    if block.points:
        return values.reshape(len(table), 2, size).transpose(0, 2, 1)
    return values.reshape(len(table), size, *block.shape[1:])


def frames_table(blocks: Mapping[str, np.ndarray], **columns: np.ndarray) -> pd.DataFrame:
    """A per-frame table: ``frame`` 0..T-1, the plain ``columns``, then each block of ``blocks``."""
    frames = len(next(iter(blocks.values())))
    table: dict[str, np.ndarray] = {"frame": np.arange(frames), **columns}
    for name, values in blocks.items():
        write_block(table, name, values)
    return pd.DataFrame(table)


@dataclass(frozen=True)
class FrameTable:
    """A per-frame table with the file it came from and how to remake it, so that a missing
    column is an error naming both."""

    data: pd.DataFrame
    source: str
    fix: str = ""

    def __len__(self) -> int:
        return len(self.data)

    def block(self, name: str) -> np.ndarray:
        return read_block(self.data, name, self.source, self.fix)

    def column(self, name: str) -> np.ndarray:
        require_columns(self.data, [name], self.source, self.fix)
        return self.data[name].to_numpy()

    def check_finite(self, names: Iterable[str]) -> None:
        """Fail naming the file, the column and the frames where a block of ``names`` is NaN or inf."""
        columns = [column for name in names for column in _stored(self.data, name)[2]]
        require_columns(self.data, columns, self.source, self.fix)
        require_finite(self.data[columns].to_numpy(), self.source, self.fix, columns, self.data.get("frame"))


def read_frame_table(path: str | os.PathLike, fix: str = "") -> FrameTable:
    """A per-frame table (a clip's ``frames.parquet``, a ground-truth sidecar) from its file."""
    path = Path(path)
    if not path.is_file():
        raise _missing_file(path, fix)
    return FrameTable(_parquet(pd.read_parquet, path, fix), str(path), fix)


def read_clip_frames(directory: str | os.PathLike, fix: str = "") -> FrameTable:
    """The ``frames.parquet`` of a preprocessed clip folder."""
    return read_frame_table(Path(directory) / FRAMES_TABLE, fix)


# --- image stacks -------------------------------------------------------------------------------

def stack_path(directory: str | os.PathLike, name: str) -> Path:
    """Where the stack ``name`` (one of ``STACKS``) of a clip folder lives."""
    if name not in STACKS:
        raise ValueError(f"unknown image stack '{name}': one of {', '.join(STACKS)}")
    return Path(directory) / f"{name}.npy"


def read_clip_stack(directory: str | os.PathLike, name: str, fix: str = "") -> np.ndarray:
    """A clip's image stack, memory-mapped; a missing one names the file and ``fix``."""
    path = stack_path(directory, name)
    if not path.is_file():
        raise _missing_file(path, fix)
    return read_stack(path)


def clip_files(directory: str | os.PathLike) -> list[Path]:
    """Every file of a complete clip folder: the stacks, then the table."""
    return [stack_path(directory, name) for name in STACKS] + [Path(directory) / FRAMES_TABLE]


def write_clip(directory: str | os.PathLike, table: pd.DataFrame, stacks: Mapping[str, np.ndarray]) -> list[Path]:
    """Publish a clip folder, each file atomically: every stack of ``STACKS`` (uint8, one image
    per table row), then the table, so a table on disk means a complete clip."""
    if set(stacks) != set(STACKS):
        raise ValueError(f"a clip has the stacks {', '.join(STACKS)}, got {', '.join(sorted(stacks))}")
    for name in STACKS:
        stack = stacks[name]
        if stack.dtype != np.uint8 or len(stack) != len(table):
            raise ValueError(f"stack {name}: expected {len(table)} uint8 images, got {stack.shape} {stack.dtype}")
        write_stack(stack_path(directory, name), stack)
    write_parquet(table, Path(directory) / FRAMES_TABLE)
    return clip_files(directory)


# --- per-actor expression table -----------------------------------------------------------------

EXPRESSION_DIM = 50
JAW_POSE_COLUMNS = [f"jaw_pose_{j}" for j in range(3)]
EXP_COLUMNS = BLOCKS["exp"].columns(EXPRESSION_DIM)
EXPRESSION_COLUMNS = [*CLIP_KEY, "frame", *JAW_POSE_COLUMNS, *EXP_COLUMNS]
#: The columns of :func:`expression_view51`.
VIEW51_COLUMNS = [JAW_POSE_COLUMNS[0], *EXP_COLUMNS]


def expression_rows(key: tuple, frame: np.ndarray, jaw_pose: np.ndarray, exp: np.ndarray) -> pd.DataFrame:
    """The expression table rows of one clip ``key`` (actor, emotion, level, clip): (T,3) jaw
    pose and (T,k) expression, zero-padded (or cut) to ``EXPRESSION_DIM``."""
    padded = np.zeros((len(exp), EXPRESSION_DIM), np.float32)
    k = min(EXPRESSION_DIM, np.shape(exp)[1])
    padded[:, :k] = np.asarray(exp)[:, :k]
    data = dict(zip(CLIP_KEY, key)) | {"frame": np.asarray(frame)}
    data |= dict(zip(JAW_POSE_COLUMNS, np.asarray(jaw_pose, np.float32).T))
    data |= dict(zip(EXP_COLUMNS, padded.T))
    return pd.DataFrame(data)


def read_expressions(table: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """An expression table, checked to have every column of ``EXPRESSION_COLUMNS``."""
    return read_table(table, EXPRESSION_COLUMNS, rerun("expressions"), "the expression table")


def expression_view51(table: pd.DataFrame) -> np.ndarray:
    """(N,51) [jaw_open, exp_00..exp_49], the view the SCMC encoder and the manipulator use:
    jaw_open is the jaw's x-axis rotation (mouth opening)."""
    return table[VIEW51_COLUMNS].to_numpy(np.float32)


def expression_clips(rows: pd.DataFrame) -> dict[tuple, np.ndarray]:
    """The (T,51) ``expression_view51`` frames of every clip in expression-table rows, in frame
    order, by clip key (actor, emotion, level, clip) in key order."""
    return {tuple(key): expression_view51(group.sort_values("frame")) for key, group in rows.groupby(CLIP_KEY)}


def find_clip(clips: Mapping[tuple, np.ndarray], actor: str, emotion: str, clip: str, what: str, source: str) -> np.ndarray:
    """The one clip of :func:`expression_clips` with this actor, emotion and clip id (any level);
    none or several is an error naming ``what`` and where it was looked for."""
    found = [frames for key, frames in clips.items() if (key[0], key[1], key[3]) == (actor, emotion, clip)]
    if len(found) != 1:
        raise ValueError(f"{source}: {len(found)} {what} clips of {actor}/{emotion}/{clip}, expected one")
    return found[0]

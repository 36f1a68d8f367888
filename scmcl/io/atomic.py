"""Atomic publishing of outputs: a killed or failed job never leaves a half-written file."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd

_ATTEMPTS = 100


def _create_sibling(path: Path) -> Path:
    """Create an empty, unused temporary name next to ``path``.

    Opened with mode 0666 so the kernel applies the umask (and any default ACL) exactly as for a
    plain ``open()``; ``tempfile.mkstemp`` would force 0600 and hide results from a cluster group.
    """
    for _ in range(_ATTEMPTS):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name next to {path} after {_ATTEMPTS} tries")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (same suffix, so tools infer the format); on
    success it replaces ``path`` in one rename, on any error it is removed."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory (give a file name inside it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_sibling(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table atomically (pyarrow, no index column)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)

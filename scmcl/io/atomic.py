"""Atomic publishing of outputs: a killed or failed job never leaves a half-written file."""

from __future__ import annotations

import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd

_ATTEMPTS = 100


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (ours included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``path`` that a killed writer left behind and return them.

    A job killed by SIGKILL (the OOM killer, SLURM after its time limit) or an unhandled SIGTERM
    never runs its cleanup, so its ``.<stem>.<pid>-<token>.partial<suffix>`` would stay for good.
    Snakemake gives a target one writer at a time, so every such sibling is stale, except one
    whose pid still runs on this machine (another thread or process writing now), which is kept.
    Siblings without a pid (the older ``.<stem>.<token>.partial<suffix>`` names) are removed.
    The pattern has no dot between the stem and ``.partial``, so ``a.b.txt``'s partials never
    match ``a.txt``'s.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.(?:(\d+)-)?[0-9a-f]{{8}}\.partial{re.escape(path.suffix)}")
    removed = []
    try:
        siblings = list(os.scandir(path.parent))
    except FileNotFoundError:
        return removed
    for entry in siblings:
        match = pattern.fullmatch(entry.name)
        if match is None or (match.group(1) is not None and _pid_alive(int(match.group(1)))):
            continue
        try:
            os.unlink(entry.path)
        except (FileNotFoundError, IsADirectoryError):
            continue
        removed.append(Path(entry.path))
    return removed


def _create_sibling(path: Path) -> Path:
    """Create an empty, unused temporary name next to ``path``, named with this process's id so
    that a later writer can tell a killed writer's leftover (``remove_stale_partials``).

    Opened with mode 0666 so the kernel applies the umask (and any default ACL) exactly as for a
    plain ``open()``; ``tempfile.mkstemp`` would force 0600 and hide results from a cluster group.
    """
    for _ in range(_ATTEMPTS):
        tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name next to {path} after {_ATTEMPTS} tries")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (same suffix, so tools infer the format); on
    success it replaces ``path`` in one rename, on any error it is removed. Partials of ``path``
    left by a killed earlier writer are removed first (``remove_stale_partials``)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory (give a file name inside it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
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

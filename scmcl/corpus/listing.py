"""A cheap fingerprint of a dataset tree, so the workflow rescans only when the clips change.

The manifest rule of a MEAD or RAVDESS root has no file inputs (the tree is not the workflow's),
so the digest of what is there stands in for them: the relative path, size and mtime (ns) of
every video and audio file of the chosen actors. Only directory entries and ``stat`` are read,
never a video, so it costs seconds on hundreds of thousands of files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Iterator

#: Suffixes of the files a scan reads (MEAD's .mp4/.m4a, RAVDESS's .mp4/.wav), lower case.
MEDIA_SUFFIXES = (".mp4", ".m4a", ".wav")
#: Folders below each actor that hold its media, per layout (RAVDESS keeps files flat).
LAYOUTS = {"mead": ("video", "audio"), "ravdess": ("",)}


def _media_entries(folder: str, rel: str, above: frozenset = frozenset()) -> Iterator[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every media file below ``folder``, depth first in name order.

    Symlinks are followed as the scan follows them, so a replaced link target (``scmcl corpus
    ravdess --links``) counts; a dangling link is listed with size and mtime -1, so its
    appearance still changes the digest. ``above`` holds the (device, inode) of the folders
    above, so a link back up the tree is not walked forever.
    """
    try:
        st = os.stat(folder)
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    here = (st.st_dev, st.st_ino)
    if here in above:
        return
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_dir():
            yield from _media_entries(entry.path, path, above | {here})
        elif entry.name.lower().endswith(MEDIA_SUFFIXES):
            try:
                st = entry.stat()
            except FileNotFoundError:
                yield path, -1, -1
            else:
                yield path, st.st_size, st.st_mtime_ns


def _actor_folders(root: str, layout: str) -> list[str]:
    """Every actor folder when none are named: MEAD's with ``video/``, RAVDESS's ``Actor_*``."""
    try:
        names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    if layout == "ravdess":
        return [name for name in names if name.startswith("Actor_")]
    return [name for name in names if os.path.isdir(os.path.join(root, name, "video"))]


def listing_digest(root: str | os.PathLike, actors: Iterable[str] | None = None, layout: str = "mead") -> str:
    """Hex SHA-256 over the root's path and the media files of ``actors`` (all actor folders
    when None) under a ``layout`` ('mead' or 'ravdess') root: a replaced, added or removed clip
    changes it, an untouched tree does not. A missing root or actor folder is hashed as absent,
    not an error, so that the scan itself reports it."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown dataset layout '{layout}': use {' or '.join(LAYOUTS)}")
    root = os.fspath(Path(root).absolute())
    names = sorted(set(actors)) if actors is not None else _actor_folders(root, layout)
    # The manifest holds absolute paths: the same files under another root are another manifest.
    digest = hashlib.sha256(f"{layout}\0{root}\n".encode())
    for actor in names:
        digest.update(f"actor\0{actor}\0{os.path.isdir(os.path.join(root, actor))}\n".encode())
        for sub in LAYOUTS[layout]:
            base = f"{actor}/{sub}" if sub else actor
            for path, size, mtime in _media_entries(os.path.join(root, base), base):
                digest.update(f"{path}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()

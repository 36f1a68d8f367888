"""Atomic outputs: published in one rename, with the permissions a plain open() would give."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from scmcl.io.atomic import atomic_path, write_parquet


@pytest.fixture
def restore_umask():
    """The process umask as it was before the test."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_outputs_get_the_umask_mode(tmp_path, restore_umask, mask, mode):
    os.umask(mask)
    write_parquet(pd.DataFrame({"a": [1, 2]}), tmp_path / "table.parquet")
    with atomic_path(tmp_path / "notes.txt") as tmp:
        tmp.write_text("hello")
    plain = tmp_path / "plain.txt"
    plain.write_text("same as open()")
    for name in ("table.parquet", "notes.txt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode == stat.S_IMODE(os.stat(plain).st_mode)


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_directory_target_is_refused_before_writing(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"cannot write {tmp_path}: it is a directory"):
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path)
    assert list(tmp_path.iterdir()) == []

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


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_partial_of_a_killed_writer_is_gone_after_a_rewrite(tmp_path):
    """A writer SIGKILLed mid-write (the OOM killer, SLURM after its time limit) runs no cleanup; the
    rerun's write of the same target removes its partial, and leaves nothing hidden behind."""
    import signal
    import subprocess
    import sys

    target = tmp_path / "table.parquet"
    script = ("import sys, time\nfrom scmcl.io.atomic import atomic_path\n"
              f"with atomic_path({str(target)!r}) as tmp:\n"
              "    tmp.write_bytes(b'half a table')\n    print(tmp, flush=True)\n    time.sleep(600)\n")
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        partial = writer.stdout.readline().strip()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert _hidden(tmp_path) == [os.path.basename(partial)]  # what the killed job left
    legacy = tmp_path / ".table.0badc0de.partial.parquet"  # a partial named before the pid was in the name
    legacy.write_bytes(b"older")
    write_parquet(pd.DataFrame({"a": [1]}), target)
    assert _hidden(tmp_path) == []
    assert pd.read_parquet(target)["a"].tolist() == [1]


def test_rewrite_keeps_partials_of_live_writers_and_other_targets(tmp_path):
    """Only the target's own stale partials go: not one a running process is writing, nor one of
    ``table.v2.parquet`` (a longer name with the same start)."""
    live = tmp_path / f".table.{os.getpid()}-0123abcd.partial.parquet"
    other = tmp_path / f".table.v2.{os.getpid() + 10**7}-0123abcd.partial.parquet"  # beyond pid_max: dead
    for path in (live, other):
        path.write_bytes(b"x")
    write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "table.parquet")
    assert _hidden(tmp_path) == sorted([live.name, other.name])

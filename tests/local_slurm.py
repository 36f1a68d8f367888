"""The real single-node SLURM of the cluster tests (`cluster` fixture), started by the shared
tools' slurm-local.sh. Its daemons take 15-40 s to come up and about 10 s to stop, nearly all of
it waiting: it starts in the background as soon as a test that needs it is collected, while the
tests before it run, and stops in the background while the tests after it run."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "tools" / "slurm-local.sh"
_started: dict[str, tuple[subprocess.Popen, IO[bytes]]] = {}


def _answers() -> bool:
    """Whether a SLURM controller is already up (a cluster machine, or a developer's own)."""
    return shutil.which("sinfo") is not None and subprocess.run(["sinfo"], capture_output=True).returncode == 0


def _script(action: str) -> None:
    log = tempfile.TemporaryFile()
    _started[action] = subprocess.Popen(["bash", str(SCRIPT), action], stdout=log, stderr=subprocess.STDOUT), log


def _finish(action: str) -> tuple[int, str]:
    process, log = _started[action]
    code = process.wait()
    log.seek(0)
    return code, log.read().decode(errors="replace")[-3000:]


def pytest_collection_finish(session):
    if session.config.option.collectonly or not SCRIPT.is_file():
        return
    if any("cluster" in getattr(item, "fixturenames", ()) for item in session.items) and not _answers():
        _script("up")


@pytest.fixture(scope="module")
def cluster():
    """A running SLURM: the one already up, or the local one started for this session."""
    if "up" not in _started:
        if not _answers():
            pytest.skip(f"no SLURM here: `sinfo` does not answer and {SCRIPT} (which starts a local one) is absent")
        yield
        return
    code, log = _finish("up")
    assert code == 0, log
    yield
    _script("down")


def pytest_sessionfinish(session):
    """Leave no daemons behind: wait for the stop, or stop a cluster that no test reached."""
    if "up" in _started and "down" not in _started:
        _finish("up")
        _script("down")
    if "down" in _started:
        _finish("down")

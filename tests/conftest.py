"""Shared fixtures: the repository root and a runner for the workflow's command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run_cmd(args: list[str], cwd: Path = REPO, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a command with the project's venv first on PATH (as `make` does)."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO

"""Shared fixtures: the repository root and a runner for the workflow's command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import yaml

from scmcl.corpus.head import build_head
from scmcl.corpus.manifest import scan_mead
from scmcl.corpus.synth import SynthSettings, synth_actor
from scmcl.face3d.flame_file import save_flame_model, save_landmark_embedding
from scmcl.options import schema_default
from scmcl.preprocess.settings import PreprocessSettings
from scmcl.preprocess.shard import ShardRunner, run_shard

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


#: A `scontrol` that fails at once, first on the tests' PATH (see its comment): every Snakemake
#: start would otherwise wait 9 s for a SLURM controller that is not there. test_cluster, which
#: talks to a real SLURM, builds its own environment without it.
NO_SLURM = Path(__file__).resolve().parent / "no_slurm"


def command_env(env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of the tests' commands: the project's venv first on PATH (as `make` does),
    with extra variables ``env`` and without those named in ``unset``."""
    full = {key: value for key, value in os.environ.items() if key not in unset}
    full.update(env or {}, PATH=os.pathsep.join([str(NO_SLURM), str(BIN), os.environ.get("PATH", "")]))
    return full


_running: list[pytest.Item] = []


@pytest.fixture(autouse=True)
def _current_test(request):
    """The running test, for run_cmd's check of the `workflow` mark."""
    _running.append(request.node)
    yield
    _running.pop()


def run_cmd(args: list[str], cwd: Path = REPO, timeout: float | None = None, env: dict[str, str] | None = None,
            unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run a command in the tests' environment (`command_env`). A test that runs Snakemake must
    carry the `workflow` mark, so that `make test-fast` (-m "not workflow and not training") stays
    the quick unit tier."""
    if args and args[0] == "snakemake" and _running and not _running[-1].get_closest_marker("workflow"):
        raise AssertionError(f"{_running[-1].nodeid} runs Snakemake: mark it @pytest.mark.workflow")
    return subprocess.run(args, cwd=cwd, env=command_env(env, unset), capture_output=True, text=True, timeout=timeout)


#: Test modules that share a session fixture run on one pytest-xdist worker, so that the fixture
#: is built once; every other module is a unit of its own (its module fixtures are built once).
SHARED_FIXTURE_GROUPS = {"test_workflow_run": "workflow_run", "test_paired": "workflow_run"}


def pytest_xdist_make_scheduler(config, log):
    """`make test` runs two xdist workers; they take whole modules (or SHARED_FIXTURE_GROUPS),
    in collection order. (xdist's own --dist loadgroup renames node ids, which pytest 9 ignores.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return SHARED_FIXTURE_GROUPS.get(Path(module).stem, module)

    return ModuleGroups(config, log)


def pytest_collection_modifyitems(config, items):
    """The long workflow and training modules first, so that the two workers end together."""
    slow = {item.module.__name__ for item in items if item.get_closest_marker("workflow") or item.get_closest_marker("training")}
    items.sort(key=lambda item: item.module.__name__ not in slow)  # stable: each module stays in one piece

"""The suite's own rules: what keeps `make test-fast` the quick unit tier."""

from __future__ import annotations

import os

import pytest

from tests.conftest import NO_SLURM, command_env, run_cmd


def test_snakemake_in_a_test_without_the_workflow_mark_is_refused():
    with pytest.raises(AssertionError, match=r"test_harness.py::\S+ runs Snakemake: mark it @pytest.mark.workflow"):
        run_cmd(["snakemake", "--version"])


def test_the_tests_commands_meet_the_failing_scontrol_first():
    path = command_env()["PATH"].split(os.pathsep)
    assert path[0] == str(NO_SLURM)
    result = run_cmd([str(NO_SLURM / "scontrol"), "show", "config"])
    assert result.returncode != 0 and result.stdout == ""

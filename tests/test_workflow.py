"""Static checks of the workflow: lint, the default DAG, the rule graph."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_cmd

pytestmark = pytest.mark.workflow


def test_lint_is_clean():
    result = run_cmd(["snakemake", "--lint"])
    assert result.returncode == 0, result.stdout + result.stderr


def _job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_dry_run_builds_default_dag():
    result = run_cmd(["snakemake", "-n", "--forceall"])
    assert result.returncode == 0, result.stderr
    counts = _job_counts(result.stdout)
    assert counts["synth_head"] == 1
    assert counts["synth_corpus"] == 3  # one job per demo actor
    assert counts["all"] == 1


def test_single_target_builds_only_its_actor():
    target = "resources/synthetic/SYN02/video/front/happy/level_3/001.mp4"
    result = run_cmd(["snakemake", "-n", "--forceall", target])
    assert result.returncode == 0, result.stderr
    assert "--actor SYN02" in result.stdout and "--actor SYN01" not in result.stdout


def test_scmc_actors_are_preprocessed_but_get_no_distances():
    result = run_cmd(["snakemake", "-n", "--forceall", "--config", "actors=[SYN01]", "scmc={'actors': ['SYN02', 'SYN03']}"])
    assert result.returncode == 0, result.stderr
    assert _job_counts(result.stdout)["synth_corpus"] == 3 and _job_counts(result.stdout)["scmc_dists"] == 2
    assert "--actors SYN02 SYN03 --pairs" in result.stdout  # the metric trains on scmc.actors only
    assert "dists_expression/SYN02" not in result.stdout and "work/preprocess/SYN03/expressions.parquet" in result.stdout


def test_rulegraph_renders_with_dot(tmp_path):
    result = run_cmd(["snakemake", "--rulegraph"])
    assert result.returncode == 0, result.stderr
    assert "synth_corpus" in result.stdout and "synth_head" in result.stdout
    svg = run_cmd(["bash", "-c", f"snakemake --rulegraph | dot -Tsvg > {tmp_path}/rules.svg"])
    assert svg.returncode == 0 and (tmp_path / "rules.svg").read_text().lstrip().startswith("<?xml")

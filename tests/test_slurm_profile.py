"""profiles/slurm without a cluster: what a dry run would submit, rule by rule."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO, run_cmd

pytestmark = pytest.mark.workflow

PROFILE = ["--workflow-profile", str(REPO / "profiles" / "slurm")]
PARTITIONS = {"SCMCL_SLURM_PARTITION": "cpuq", "SCMCL_SLURM_GPU_PARTITION": "gpuq", "SCMCL_SLURM_ACCOUNT": "acct"}


def _jobs(device: str) -> dict[str, set[tuple[str, str]]]:
    """rule -> {(gpu, partition)} of every job of `all` in a dry run through the profile."""
    result = run_cmd(["snakemake", "-n", *PROFILE, "--config", f"device={device}"], env=PARTITIONS)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs: dict[str, set[tuple[str, str]]] = {}
    for block in re.split(r"\n(?=rule \w+:)", result.stdout)[1:]:
        rule = re.match(r"rule (\w+):", block).group(1)
        resources = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", block).group(1)))
        jobs.setdefault(rule, set()).add((resources.get("gpu", "0"), resources["slurm_partition"]))
    return jobs


def test_every_gpu_rule_goes_to_the_gpu_partition():
    jobs = _jobs("cuda")
    gpu_rules = {rule for rule, kinds in jobs.items() if any(gpu != "0" for gpu, _ in kinds)}
    # the trainers, the shards and the distances ask for a GPU; no list of them is kept in the profile
    assert {"preprocess_shard", "train_scmc_audio", "finetune_scmc_expression", "scmc_dists"} <= gpu_rules
    for rule, kinds in jobs.items():
        for gpu, partition in kinds:
            assert partition == ("gpuq" if gpu != "0" else "cpuq"), f"{rule}: gpu={gpu} on {partition}"
    profile = (REPO / "profiles" / "slurm" / "config.v8+.yaml").read_text()
    assert not any(rule in profile for rule in gpu_rules)


def test_cpu_device_keeps_every_rule_on_the_cpu_partition():
    jobs = _jobs("cpu")
    assert {kind for kinds in jobs.values() for kind in kinds} == {("0", "cpuq")}


def test_unset_partition_variables_stop_with_one_line():
    result = run_cmd(["snakemake", "-n", *PROFILE, "--config", "device=cuda"], unset=tuple(PARTITIONS))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if "profiles/slurm needs" in line]
    assert len(lines) == 1
    for name in PARTITIONS:
        assert name in lines[0]
    assert "$SCMCL" not in output.replace("$USER", "")


def test_readme_explains_the_missing_profile_link(tmp_path):
    """`--profile slurm` before the README's one-time link: the message is in its troubleshooting."""
    result = run_cmd(["snakemake", "--profile", "slurm", "-n"], env={"XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)})
    assert result.returncode != 0
    message = next(line for line in (result.stdout + result.stderr).splitlines() if "no profile.yaml" in line)
    first_sentence = message.split(". ")[0]
    assert first_sentence in (REPO / "README.md").read_text(), first_sentence

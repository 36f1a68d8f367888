"""The workflow through a real SLURM, invoked as the README tells users: the literal
`snakemake --profile slurm <target>` after the one-time profile link, with profiles/default
present (loaded automatically; it must not cap the cluster run)."""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import time

import pytest
import yaml

from scmcl.train.loop import load_published
from tests.conftest import BIN, REPO, run_cmd, snakemake_args, tiny_workflow_config

pytestmark = pytest.mark.workflow

PARTITION = os.environ.get("SLURM_CI_PARTITION", "cpu")
GPU_PARTITION = os.environ.get("SLURM_CI_GPU_PARTITION", "gpu")
ACCOUNT = os.environ.get("SLURM_CI_ACCOUNT", "ci")
# device auto: GPU rules ask SLURM for a GPU; the job uses CUDA when the node has it.
CONFIG = tiny_workflow_config({"checkpoint_every": 5, "train_audio": {"steps": 10}}, device="auto")


def _sacct_rows(since: str, workdir: str) -> list[dict]:
    out = subprocess.run(["sacct", "-X", "--parsable2", "--noheader", "--starttime", since,
                          "--format=JobID,State,Partition,WorkDir,AllocTRES,SubmitLine"],
                         capture_output=True, text=True, check=True).stdout
    keys = ["id", "state", "partition", "workdir", "tres", "submit"]
    rows = [dict(zip(keys, line.split("|", 5))) for line in out.splitlines() if line]
    return [r for r in rows if os.path.realpath(r["workdir"]) == workdir]


def test_profile_runs_jobs_through_sbatch(cluster, tmp_path):
    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    # The README's one-time step, in a private config home: link the profile where Snakemake looks.
    (tmp_path / "xdg" / "snakemake").mkdir(parents=True)
    (tmp_path / "xdg" / "snakemake" / "slurm").symlink_to(REPO / "profiles" / "slurm")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               SCMCL_SLURM_PARTITION=PARTITION, SCMCL_SLURM_GPU_PARTITION=GPU_PARTITION, SCMCL_SLURM_ACCOUNT=ACCOUNT)
    # The synthetic head and corpus are built here first: each job through SLURM costs 15-40 s
    # (two Snakemake starts, then the executor's status checks, whose interval grows by 10 s while
    # a job runs), and two jobs (a CPU group, a GPU rule) show what the profile does.
    local = run_cmd(snakemake_args(workdir) + ["--until", "synth_corpus", "--", "work/scmc/audio.pt"])
    assert local.returncode == 0, local.stdout[-2000:] + local.stderr[-2000:]
    since = (datetime.datetime.now() - datetime.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S")
    # The executor first checks a job's status after 40 s by default (and the run's end waits one
    # more interval); 2 s here, the profile unchanged. While a job runs each next check comes 10 s
    # later than the last, so a job of 15-20 s (two Snakemake starts and the rule) is seen done
    # 36 s after its submission.
    result = subprocess.run(["snakemake", "--snakefile", str(REPO / "Snakefile"), "--configfile", "config.yaml",
                             "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "2",
                             "--seconds-between-status-checks", "2", "work/scmc/audio.pt"],
                            cwd=workdir, env=env, capture_output=True, text=True)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "Using profiles slurm and workflow specific profile" in log and "profiles/default" in log
    assert load_published(workdir / "work/scmc/audio.pt")["modality"] == "audio"

    expected = {"tables_align_audio_corpus_manifest", "train_scmc_audio"}
    for _ in range(30):  # accounting records land a moment after the job ends
        rows = _sacct_rows(since, os.path.realpath(workdir))
        rules = {m.group(1): r for r in rows if (m := re.search(r"--comment rule_(\S+?)(?:_wildcards_\S+)? ", r["submit"]))}
        if expected <= set(rules):
            break
        time.sleep(2)
    assert expected <= set(rules), rows
    assert all(r["state"] == "COMPLETED" for r in rules.values())
    gpu_job = rules["train_scmc_audio"]
    assert gpu_job["partition"] == GPU_PARTITION and "gres/gpu=1" in gpu_job["tres"] and "--gpus=1" in gpu_job["submit"]
    assert f"-A {ACCOUNT}" in gpu_job["submit"] and "--cpus-per-task=2" in gpu_job["submit"]
    cpu_job = rules["tables_align_audio_corpus_manifest"]
    assert cpu_job["partition"] == PARTITION and "gres/gpu" not in cpu_job["tres"]

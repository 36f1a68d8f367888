"""Reruns after real kills and failures, once per mechanism through Snakemake: the same command
continues a killed training rule from its saved step (SLURM's SIGTERM and the OOM killer's
SIGKILL), a failed job leaves no partial declared output, the next run redoes only what is
missing, and a preprocessing shard skips the clips it finished before. Every trainer's own
kill/resume is tested on its loop (test_train_loop, test_scmc, test_renderer_train,
test_manipulator_train); here one trainer stands for the rule-level path they share."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import REPO, command_env, run_cmd, snakemake_args, tiny_workflow_config

pytestmark = pytest.mark.workflow

STEPS, FIRST_CHECKPOINT = 60, 10  # killed at its first checkpoint: the rerun trains the other 50 steps
CONFIG = tiny_workflow_config({"checkpoint_every": FIRST_CHECKPOINT, "train_audio": {"steps": STEPS}})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("resume")
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    result = run_cmd([*snakemake_args(workdir), "work/scmc/aligned_pairs.parquet"])
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _job_process(workdir: Path, stage: str) -> int | None:
    """PID of the `scmcl <stage> train ...` (python) process of a rule running in workdir."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except (OSError, ValueError):
            continue
        words = [a.decode(errors="replace") for a in argv]
        if cwd == str(workdir) and "train" in words and stage in words and not words[0].endswith("sh"):
            return int(proc.name)
    return None


def _saved_step(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True)["step"] if checkpoint.is_file() else 0


class Trainer(NamedTuple):
    """A training rule as the kill test drives it: its target, run folder, `scmcl` stage, log,
    the name its loop logs, and its metrics table."""

    target: str
    run_dir: str
    stage: str
    log: str
    loop_name: str
    metrics: str
    steps: int


AUDIO = Trainer("work/scmc/audio.pt", "work/train/train_scmc_audio", "scmc", "logs/train_scmc_audio.log", "scmc_audio",
                "work/scmc/audio.metrics.tsv", STEPS)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_training_rule_resumes_from_saved_step(workdir, sig):
    trainer = AUDIO
    run_dir, target = workdir / trainer.run_dir, workdir / trainer.target
    shutil.rmtree(run_dir, ignore_errors=True)  # each signal starts from a fresh training run
    for leftover in target.parent.glob(target.stem + ".*"):
        leftover.unlink()
    args = [*snakemake_args(workdir), trainer.target]
    first = subprocess.Popen(args, cwd=REPO, env=command_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and _saved_step(run_dir / "checkpoint.pt") < FIRST_CHECKPOINT:
        time.sleep(0.2)
    pid = _job_process(workdir, trainer.stage)
    assert pid is not None, "the training job was not running half-way"
    os.kill(pid, sig)
    assert first.wait(timeout=120) != 0  # the job failed, Snakemake stopped
    saved = _saved_step(run_dir / "checkpoint.pt")
    assert FIRST_CHECKPOINT <= saved < trainer.steps and not target.exists()
    if sig == signal.SIGTERM:  # SLURM's time limit: finish the step, checkpoint, exit 143
        assert "checkpoint saved" in (workdir / trainer.log).read_text()

    rerun = run_cmd(args)  # the same command
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = (workdir / trainer.log).read_text()
    resumed = int(re.search(rf"resuming {trainer.loop_name} from step (\d+)", log).group(1))
    assert resumed == saved and resumed > 0
    assert list(pd.read_csv(workdir / trainer.metrics, sep="\t").step) == list(range(trainer.steps))
    assert torch.load(target, weights_only=True)  # the published weights load


def test_failed_shard_leaves_no_partial_output_and_rerun_redoes_only_it(workdir, tmp_path):
    shutil.rmtree(workdir / "work/preprocess/SYN01", ignore_errors=True)  # this actor's shards start afresh
    truth = workdir / "corpus/SYN01/groundtruth/happy/level_3/002.parquet"
    kept = tmp_path / "002.parquet"
    shutil.copy2(truth, kept)
    # Clip 002 of the happy shard now fails while it is processed, after clip 001: its table still
    # passes the shard's up-front schema check, but has fewer frames than the video.
    pd.read_parquet(kept).head(3).to_parquet(truth)
    target = "work/preprocess/SYN01/expressions.parquet"
    failed = run_cmd([*snakemake_args(workdir), "--keep-going", target])
    assert failed.returncode != 0
    assert (workdir / "work/preprocess/SYN01/neutral.parquet").is_file()
    assert not (workdir / "work/preprocess/SYN01/happy.parquet").exists()
    assert not list((workdir / "work").rglob("*.partial*"))  # atomic writes: no half-written files
    progress = (workdir / "work/preprocess/SYN01/happy/progress.json").read_text()
    assert "level_3/001" in progress and "level_3/002" not in progress

    shutil.copy2(kept, truth)  # the input is fixed: same bytes, same time stamp
    plan = run_cmd([*snakemake_args(workdir), target, "--dry-run", "--quiet", "rules"])
    scheduled = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.stdout, re.M))
    assert scheduled == {"preprocess_shard": "1", "expression_table": "1", "total": "2"}, plan.stdout

    rerun = run_cmd([*snakemake_args(workdir), target])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = (workdir / "logs/preprocess_shard/SYN01/happy.log").read_text()
    assert "level_3/001: finished before, skipped" in log
    assert len(pd.read_parquet(workdir / "work/preprocess/SYN01/happy.parquet")) == 2

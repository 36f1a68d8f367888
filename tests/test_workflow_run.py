"""The workflow end to end on a one-actor corpus: every rule runs through Snakemake, leaves
its log and benchmark, and a second run has nothing to do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, run_cmd, tiny_workflow_config

pytestmark = pytest.mark.workflow

CONFIG = tiny_workflow_config({
    "checkpoint_every": 5, **{name: {"steps": 10} for name in ("train_audio", "train_expression", "train_image")},
    "finetune_expression": {"steps": 6, "warmup": 2}, "finetune_image": {"steps": 4, "warmup": 2, "image_size": 32}})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf")
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    args = ["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(workdir / "config.yaml"), "--cores", "2"]
    result = run_cmd(args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, args


def test_every_rule_ran_with_log_and_benchmark(run):
    workdir, _ = run
    assert (workdir / "corpus/SYN01/video/front/happy/level_3/001.mp4").is_file()
    table = pd.read_parquet(workdir / "work/preprocess/SYN01/expressions.parquet")
    assert set(table.emotion) == {"neutral", "happy"} and len(table) > 20
    for rule, name in [("synth_corpus", "SYN01"), ("preprocess_shard", "SYN01/happy"), ("train_scmc_audio", ""),
                       ("finetune_scmc_image", ""), ("scmc_dists", "image/SYN01")]:
        stem = f"{rule}/{name}" if name else rule
        assert (workdir / f"logs/{stem}.log").is_file()
        assert (workdir / f"benchmarks/{stem}.tsv").is_file()
    assert (workdir / "logs/synth_head.log").is_file() and (workdir / "logs/corpus_manifest.log").is_file()
    happy = np.load(workdir / "work/scmc/dists_expression/SYN01/happy.npy")
    windows = pd.read_parquet(workdir / "work/scmc/dists_expression/SYN01/windows.parquet")
    assert happy.shape == ((windows.emotion == "neutral").sum(), (windows.emotion == "happy").sum())
    assert (workdir / "work/train/finetune_scmc_image/checkpoint.pt").is_file()


def test_second_run_has_nothing_to_do(run):
    _, args = run
    result = run_cmd([*args, "-n"])
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr

"""The workflow end to end on a one-actor corpus: every rule runs through Snakemake, leaves
its log and benchmark, and a second run has nothing to do."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, run_cmd

pytestmark = pytest.mark.workflow

CONFIG = {
    "actors": ["SYN01"],
    "emotions": ["neutral", "happy"],
    "data_root": "corpus",
    "flame": {"model": "head/generic_model.pkl", "landmark_embedding": "head/landmark_embedding.npy"},
    "synthetic": {"sentences": 1, "resolution": 64},
    "preprocess": {"crop_size": 64},
}


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
    for rule, name in [("synth_corpus", "SYN01"), ("preprocess_shard", "SYN01/happy")]:
        assert (workdir / f"logs/{rule}/{name}.log").is_file()
        assert (workdir / f"benchmarks/{rule}/{name}.tsv").is_file()
    assert (workdir / "logs/synth_head.log").is_file() and (workdir / "logs/corpus_manifest.log").is_file()


def test_second_run_has_nothing_to_do(run):
    _, args = run
    result = run_cmd([*args, "-n"])
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr

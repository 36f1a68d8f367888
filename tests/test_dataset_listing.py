"""A user's dataset tree (dataset: mead) is no input of the workflow, yet a replaced or added clip
rebuilds the manifest: the rule's params hold the digest of the tree's listing."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
import yaml

from tests.conftest import ACTOR, EMOTIONS, REPO, run_cmd

pytestmark = pytest.mark.workflow


@pytest.fixture()
def mead(tmp_path, corpus, head_files):
    root = tmp_path / "MEAD"
    shutil.copytree(corpus / ACTOR, root / ACTOR, ignore=shutil.ignore_patterns("groundtruth"))
    config = {"dataset": "mead", "data_root": str(root), "actors": [ACTOR], "emotions": EMOTIONS, "levels": [3],
              "flame": {"model": str(head_files[0]), "landmark_embedding": str(head_files[1])}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    args = ["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
            "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "work/corpus/manifest.parquet"]
    return root, args, tmp_path / "work/corpus/manifest.parquet"


def _dry_run(args):
    result = run_cmd([*args, "-n"])
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_changed_dataset_tree_rebuilds_the_manifest(mead):
    root, args, manifest = mead
    assert run_cmd(args).returncode == 0
    clips = len(pd.read_parquet(manifest))
    assert "Nothing to be done" in _dry_run(args)

    # a clip replaced by other files of the same names
    for kind, suffix in (("video/front", ".mp4"), ("audio", ".m4a")):
        replaced = root / ACTOR / kind / f"sad/level_3/001{suffix}"
        shutil.copyfile(root / ACTOR / kind / f"happy/level_3/001{suffix}", replaced)
        os.utime(replaced, ns=(replaced.stat().st_atime_ns, replaced.stat().st_mtime_ns + 10**9))
    assert "corpus_manifest" in _dry_run(args)
    assert run_cmd(args).returncode == 0

    # a clip added
    for kind, suffix in (("video/front", ".mp4"), ("audio", ".m4a")):
        folder = root / ACTOR / kind / "happy/level_3"
        shutil.copyfile(folder / f"001{suffix}", folder / f"002{suffix}")
    assert "corpus_manifest" in _dry_run(args)
    assert run_cmd(args).returncode == 0
    assert len(pd.read_parquet(manifest)) == clips + 1
    assert "Nothing to be done" in _dry_run(args)

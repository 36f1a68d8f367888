"""The SPFEM papers' metrics (FAD, CSIM, LSE-D/C) in the suite's shared workflow run
(`workflow_run`): seeded random networks of the official layouts score both protocols per emotion
for both methods, and a replaced network file reruns only the metrics (the skip line of an unset
file: test_paper_protocol)."""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from tests.conftest import WORKFLOW_CONFIG, run_cmd

pytestmark = pytest.mark.workflow

ACTOR, OTHER = WORKFLOW_CONFIG["actors"]  # the renderer actor, and the one that styles its cross-ID edits
CLIP = WORKFLOW_CONFIG["test_clips"][0]


def test_both_protocols_are_tabled_per_emotion_with_both_methods(workflow_run):
    workdir = workflow_run.workdir
    for protocol in ("intra_id", "cross_id"):
        table = pd.read_csv(workdir / f"results/paper_{protocol}.tsv", sep="\t")
        assert table.emotion.tolist() == [*WORKFLOW_CONFIG["emotions"], "mean"]
        for method in ("NED", "NED+SCMCL"):
            for metric in ("FAD", "CSIM", "LSE-D", "LSE-C"):
                assert table[f"{method} {metric}"].notna().all(), (protocol, method, metric)
        assert (table.filter(like="FAD") >= -1e-3).all().all() and (table.filter(like="CSIM").abs() <= 1 + 1e-6).all().all()
        assert table.iloc[-1, 1:].to_numpy(float) == pytest.approx(table.iloc[:-1, 1:].mean().to_numpy(float), abs=1e-4)
    # intra-ID edits are styled by the actor itself, cross-ID ones by the other actor
    assert (workdir / f"work/paper/scmcl/{ACTOR}/{CLIP}_happy_ref_{ACTOR}.npz").is_file()
    assert (workdir / f"work/paper/ned/{ACTOR}/{CLIP}_neutral_ref_{OTHER}.npz").is_file()
    log = (workdir / f"logs/paper_edit_features/ned/{ACTOR}/{CLIP}_happy_ref_{ACTOR}.log").read_text()
    assert "skipped" not in log and "arcface, efficientface, lse features" in log


def test_a_replaced_network_file_reruns_only_the_metrics(workflow_run, tmp_path):
    args = workflow_run.args
    config = workflow_run.workdir / "config.yaml"
    replaced = tmp_path / "syncnet_v2.model"
    shutil.copy(re.search(r"syncnet: (\S+)", config.read_text()).group(1), replaced)
    changed = tmp_path / "config.yaml"
    changed.write_text(re.sub(r"syncnet: \S+", f"syncnet: {replaced}", config.read_text()))
    at = args.index("--configfile")
    plan = run_cmd([*args[:at + 1], str(changed), *args[at + 2:], "--dry-run", "paper_metrics"])
    assert plan.returncode == 0, plan.stderr[-3000:]
    rules = set(re.findall(r"^(?:local)?rule (\w+):", plan.stdout, re.M))
    assert rules == {"paper_edit_features", "paper_table", "paper_metrics"}  # not the edits, nor the real frames' features

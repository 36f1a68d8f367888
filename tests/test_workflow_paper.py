"""The paper metrics' target end to end on a two-actor corpus with generated networks of the
official layouts: both protocol tables, NED and NED+SCMCL side by side per emotion and mean;
changing a network file reruns only the jobs it feeds (the skip line itself: test_paper_protocol)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch
import yaml

from scmcl.evaluate.csim import EfficientFace
from scmcl.evaluate.fad import ResNetFace
from scmcl.evaluate.lse import SyncNet
from tests.conftest import REPO, run_cmd, tiny_workflow_config

pytestmark = pytest.mark.workflow

EMOTIONS = ["neutral", "happy"]


def _save_networks(folder) -> dict[str, str]:
    """Seeded random networks in the released containers: ArcFace as a DataParallel state dict,
    EfficientFace as {'state_dict': ...} with the prefix, SyncNet bare without BatchNorm counters."""
    torch.manual_seed(0)
    prefixed = lambda net: {f"module.{k}": v for k, v in net.state_dict().items()}  # noqa: E731
    files = {"arcface": folder / "resnet18_110.pth", "efficientface": folder / "EfficientFace_Trained_on_AffectNet7.pth.tar",
             "syncnet": folder / "syncnet_v2.model"}
    torch.save(prefixed(ResNetFace()), files["arcface"])
    torch.save({"state_dict": prefixed(EfficientFace()), "epoch": 1}, files["efficientface"])
    sync = SyncNet().state_dict()
    torch.save({k: v for k, v in sync.items() if not k.endswith("num_batches_tracked")}, files["syncnet"])
    return {name: str(path) for name, path in files.items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("paper")
    files = _save_networks(workdir)
    config = tiny_workflow_config({"checkpoint_every": 5, **{n: {"steps": 6} for n in ("train_audio", "train_expression", "train_image")},
                                   "finetune_expression": {"steps": 4, "warmup": 2},
                                   "finetune_image": {"steps": 4, "warmup": 2, "image_size": 32}},
                                  actors=["SYN01", "SYN02"], emotions=EMOTIONS)
    config["renderer"] = {**config["renderer"], "actors": ["SYN01"]}
    config["evaluate"] = {**config["evaluate"], "paper": {"weights": files}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    args = ["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(workdir / "config.yaml"), "--cores", "2"]
    result = run_cmd([*args, "paper_metrics"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, config, args


def test_both_protocols_are_tabled_per_emotion_with_both_methods(run):
    workdir, *_ = run
    for protocol in ("intra_id", "cross_id"):
        table = pd.read_csv(workdir / f"results/paper_{protocol}.tsv", sep="\t")
        assert table.emotion.tolist() == [*EMOTIONS, "mean"]
        for method in ("NED", "NED+SCMCL"):
            for metric in ("FAD", "CSIM", "LSE-D", "LSE-C"):
                assert table[f"{method} {metric}"].notna().all(), (protocol, method, metric)
        assert (table.filter(like="FAD") >= -1e-3).all().all() and (table.filter(like="CSIM").abs() <= 1 + 1e-6).all().all()
        assert table.iloc[-1, 1:].to_numpy(float) == pytest.approx(table.iloc[:-1, 1:].mean().to_numpy(float), abs=1e-4)
    # intra-ID edits are styled by the actor itself, cross-ID ones by the other actor
    assert (workdir / "work/paper/scmcl/SYN01/002_happy_ref_SYN01.npz").is_file()
    assert (workdir / "work/paper/ned/SYN01/002_neutral_ref_SYN02.npz").is_file()
    log = (workdir / "logs/paper_edit_features/ned/SYN01/002_happy_ref_SYN01.log").read_text()
    assert "skipped" not in log and "arcface, efficientface, lse features" in log


def test_a_network_file_that_goes_missing_reruns_only_the_metrics(run, tmp_path):
    workdir, config, args = run
    changed = {**config, "evaluate": {**config["evaluate"], "paper": {"weights": {**config["evaluate"]["paper"]["weights"],
                                                                                  "syncnet": str(tmp_path / "syncnet_v2.model")}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(changed))
    plan = run_cmd([*args, "paper_metrics", "--dry-run", "--configfile", str(tmp_path / "config.yaml")])  # nargs+: last
    assert plan.returncode == 0, plan.stderr[-3000:]
    rules = set(re.findall(r"^(?:local)?rule (\w+):", plan.stdout, re.M))
    assert rules == {"paper_edit_features", "paper_table", "paper_metrics"}  # not the edits, nor the real frames' features

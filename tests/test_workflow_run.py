"""The workflow end to end on a one-actor corpus (the suite's shared run, `workflow_run`): every
rule runs through Snakemake and leaves its log and benchmark, the expression table holds the
fitted frames, and a second run has nothing to do."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import torch

from scmcl.evaluate.score import FIGURES
from scmcl.io.media import probe
from scmcl.renderer.checkpoint import load_network
from scmcl.renderer.networks import Generator, RendererSizes
from tests.conftest import WORKFLOW_CONFIG, run_cmd

pytestmark = pytest.mark.workflow

CONFIG = WORKFLOW_CONFIG
#: Snakemake's benchmark TSV header.
BENCHMARK_COLUMNS = ["s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time"]


@pytest.fixture(scope="module")
def run(workflow_run):
    return workflow_run.workdir, workflow_run.args


def _jobs(args: list[str]) -> list[dict[str, list[str]]]:
    """Every job of the workflow for this config, as the dry run of a forced rerun lists them:
    its rule and its declared ``output``, ``log`` and ``benchmark`` files."""
    plan = run_cmd([*args, "--dry-run", "--forceall"])
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs: list[dict[str, list[str]]] = []
    for line in plan.stdout.splitlines():
        if rule := re.fullmatch(r"(?:local)?rule (\w+):", line):
            jobs.append({"rule": [rule.group(1)]})
        elif jobs and (field := re.fullmatch(r"    (output|log|benchmark): (.+)", line)):
            jobs[-1][field.group(1)] = field.group(2).split(", ")
    table = plan.stdout.split("Job stats:")[1].split("total")[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    assert pd.Series([job["rule"][0] for job in jobs]).value_counts().to_dict() == counts, "jobs parsed = jobs planned"
    return jobs


def test_every_rule_ran_with_log_and_benchmark(run):
    workdir, args = run
    jobs = _jobs(args)
    for job in jobs:
        if "output" not in job:  # a target rule (all): nothing runs
            continue
        assert job.get("log"), f"rule {job['rule'][0]} declares no log"
        for log in job["log"]:
            assert (workdir / log).is_file() and (workdir / log).stat().st_size > 0, f"{log} is missing or empty"
        for benchmark in job.get("benchmark", []):
            table = pd.read_csv(workdir / benchmark, sep="\t")
            assert list(table.columns) == BENCHMARK_COLUMNS and len(table) == 1, benchmark
            assert table.s.iloc[0] > 0, benchmark


def test_expression_table_holds_every_frames_jaw_and_expression(run):
    """Per frame of every clip, expressions.parquet copies the clip's jaw pose and expression
    coefficients from its frames.parquet; columns past the model's components are 0."""
    workdir, _ = run
    table = pd.read_parquet(workdir / "work/preprocess/SYN01/expressions.parquet")
    jaw, exp = [f"jaw_pose_{j}" for j in range(3)], [f"exp_{j:02d}" for j in range(50)]
    assert list(table.columns) == ["actor", "emotion", "level", "clip", "frame", *jaw, *exp]
    clips = pd.concat([pd.read_parquet(workdir / f"work/preprocess/SYN01/{e}.parquet") for e in CONFIG["emotions"]])
    assert len(clips) == len(CONFIG["emotions"]) * CONFIG["synthetic"]["sentences"] and len(table) == clips.frames.sum()
    for clip in clips.itertuples(index=False):
        frames = pd.read_parquet(workdir / clip.directory / "frames.parquet")
        rows = table[(table.emotion == clip.emotion) & (table.level == clip.level) & (table["clip"] == clip.clip)]
        assert set(rows.actor) == {"SYN01"} and rows.frame.tolist() == frames.frame.tolist()
        np.testing.assert_array_equal(rows[jaw].to_numpy(), frames[["pose_03", "pose_04", "pose_05"]].to_numpy(np.float32))
        n_exp = frames.columns.str.fullmatch(r"exp_\d+").sum()
        assert 0 < n_exp < 50, "the built-in head has fewer components than FLAME's 50"
        np.testing.assert_array_equal(rows[exp[:n_exp]].to_numpy(), frames[exp[:n_exp]].to_numpy(np.float32))
        assert (rows[exp[n_exp:]].to_numpy() == 0).all()


def test_distances_and_checkpoints_are_where_the_manipulator_reads_them(run):
    workdir, _ = run
    happy = np.load(workdir / "work/scmc/dists_expression/SYN01/happy.npy")
    windows = pd.read_parquet(workdir / "work/scmc/dists_expression/SYN01/windows.parquet")
    assert happy.shape == ((windows.emotion == "neutral").sum(), (windows.emotion == "happy").sum())
    assert (workdir / "work/train/finetune_scmc_image/checkpoint.pt").is_file()


def test_both_renderers_are_trained_published_and_scored_on_the_test_clips(run):
    workdir, _ = run
    networks = CONFIG["renderer"]["networks"]
    sizes = RendererSizes(networks["ngf"], networks["downsample"], networks["blocks"], 3)
    for variant in ("ned", "scmcl"):
        folder = workdir / "work/renderer/SYN01"
        load_network(folder / f"{variant}.pth", Generator(sizes))  # NED's bare generator state dict, strictly
        scores = pd.read_csv(folder / f"{variant}.eval.tsv", sep="\t")
        assert sorted(set(scores["clip"])) == ["happy/level_3/002", "neutral/level_1/002"]  # the held-out clips only
        assert sorted(set(scores.method)) == ["mean_face", "nearest_nmfc", "renderer"]
        assert scores[["psnr", "ssim"]].notna().all().all()
        assert iio.imread(folder / f"{variant}.eval.png").shape[1] == 3 * CONFIG["preprocess"]["crop_size"]
        metrics = pd.read_csv(folder / f"{variant}.metrics.tsv", sep="\t")
        assert len(metrics) == CONFIG["renderer"][variant]["steps"]
    metrics = pd.read_csv(workdir / "work/renderer/SYN01/scmcl.metrics.tsv", sep="\t")
    assert {"g_image_source", "g_image_generated", "g_image_target", "sim", "pseudo_fraction"} <= set(metrics.columns)
    assert "LPIPS-weighted paired term is skipped" in (workdir / "logs/train_renderer/scmcl/SYN01.log").read_text()


def test_the_edited_video_has_the_sources_frames_duration_and_audio_and_a_record(run):
    workdir, _ = run
    video, source = workdir / "results/SYN01/edited_happy.mp4", workdir / "corpus/SYN01/video/front/neutral/level_1/002.mp4"
    ours, theirs = probe(video), probe(source)
    assert (ours.frames, ours.fps, ours.width, ours.height) == (theirs.frames, theirs.fps, theirs.width, theirs.height)
    assert abs(ours.audio_duration - theirs.audio_duration) <= 1 / theirs.fps
    record = json.loads((workdir / "results/SYN01/edited_happy.json").read_text())
    # the manifest's row of the edit's source clip, whatever the dataset's layout
    assert Path(record["source_video"]).resolve() == source.resolve() and record["blend"] == "pyramid"
    assert record["files"]["renderer"]["path"] == "work/renderer/SYN01/scmcl.pth"
    assert record["edit"]["weights"] == "work/manipulator/scmcl.pth" and len(record["files"]["renderer"]["sha256"]) == 64


def test_the_evaluation_scores_every_method_and_the_report_plays_the_videos(run):
    workdir, args = run
    table = pd.read_csv(workdir / "results/evaluation.tsv", sep="\t")
    assert list(table.row.unique()) == ["source", "naive", "ned", "scmcl", "truth"]
    assert set(table.emotion) == {"happy", "mean"} and (table.videos > 0).all()
    assert set(FIGURES) <= set(table.columns)
    figures = table.set_index("row")
    assert figures.loc["truth", "expression_error"].max() == 0 and figures.loc["source", "expression_accuracy"].max() == 0
    assert table.expression_error.notna().all() and table.image_accuracy.between(0, 1).all()
    assert iio.imread(workdir / "results/evaluation.png").ndim == 3
    assert iio.imread(workdir / "work/evaluate/SYN01/sheet_happy.png").shape[1] == 5 * CONFIG["synthetic"]["resolution"]
    for curves in ("scmc/audio", "manipulator/scmcl", "renderer/SYN01/ned"):
        assert (workdir / f"work/report/curves/{curves}.png").stat().st_size > 0

    built = run_cmd([*args, "--report", str(workdir / "report.zip")])
    assert built.returncode == 0, built.stderr[-3000:]
    with zipfile.ZipFile(workdir / "report.zip") as report:
        names = report.namelist()
        page = next(n for n in names if n.endswith("/index.html"))  # the video page, under report/data/raw/<id>/
        html = report.read(page).decode()
        assert html.count("<video") == 4  # source, NED, NED+SCMCL, the paired truth
        for src in re.findall(r'src="([^"]+)"', html):
            assert page.replace("index.html", src) in names
        assert any(n.endswith("/evaluation.png") for n in names) and any(n.endswith("/sheet_happy.png") for n in names)


def test_second_run_has_nothing_to_do(run):
    _, args = run
    result = run_cmd([*args, "-n"])
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_another_device_reruns_nothing(run):
    """Where a job runs does not change what it writes: `--config device=auto` plans no job."""
    _, args = run
    result = run_cmd([*args, "-n", "--config", "device=auto"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: device=cuda can run here")
def test_cuda_without_cuda_stops_before_any_job_deletes_anything(run):
    """A forced rerun on cuda where there is none stops before its first job, so the outputs it
    would have redone are still there, unchanged."""
    workdir, args = run
    table = workdir / "work/preprocess/SYN01/expressions.parquet"
    before = table.stat().st_mtime_ns
    result = run_cmd([*args, "--forcerun", "expression_table", "--config", "device=cuda"])
    assert result.returncode != 0
    assert "device: cuda, but this machine has no CUDA device for the jobs" in result.stdout + result.stderr
    assert table.stat().st_mtime_ns == before
    assert run_cmd([*args, "-n"]).returncode == 0  # and the run is still complete

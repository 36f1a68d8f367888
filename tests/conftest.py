"""Shared fixtures: the repository root and a runner for the workflow's command line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import yaml

from scmcl.corpus.head import build_head
from scmcl.corpus.manifest import scan_mead
from scmcl.corpus.synth import SynthSettings, synth_actor
from scmcl.evaluate.csim import EfficientFace
from scmcl.evaluate.fad import ResNetFace
from scmcl.evaluate.lse import SyncNet
from scmcl.face3d.flame_file import save_flame_model, save_landmark_embedding
from scmcl.options import schema_default
from scmcl.preprocess.settings import PreprocessSettings
from scmcl.preprocess.shard import ShardRunner, run_shard

REPO = Path(__file__).resolve().parent.parent

# The `cluster` fixture and its SLURM's start and stop in the background.
pytest_plugins = ["tests.local_slurm"]

BIN = Path(sys.executable).parent


#: A `scontrol` that fails at once, first on the tests' PATH (see its comment): every Snakemake
#: start would otherwise wait 9 s for a SLURM controller that is not there. test_slurm_cluster,
#: which talks to a real SLURM, builds its own environment without it.
NO_SLURM = Path(__file__).resolve().parent / "no_slurm"


def command_env(env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of the tests' commands: the project's venv first on PATH (as `make` does),
    with extra variables ``env`` and without those named in ``unset``."""
    full = {key: value for key, value in os.environ.items() if key not in unset}
    full.update(env or {}, PATH=os.pathsep.join([str(NO_SLURM), str(BIN), os.environ.get("PATH", "")]))
    return full


_running: list[pytest.Item] = []


@pytest.fixture(autouse=True)
def _current_test(request):
    """The running test, for run_cmd's check of the `workflow` mark; and torch's thread count as
    the test found it, restored after it: a CLI call in the test's process (`main([...])`) sets its
    job's thread budget, which would otherwise hold for every later test (one thread of two)."""
    _running.append(request.node)
    threads = torch.get_num_threads()
    yield
    _running.pop()
    torch.set_num_threads(threads)


def run_cmd(args: list[str], cwd: Path = REPO, timeout: float | None = None, env: dict[str, str] | None = None,
            unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run a command in the tests' environment (`command_env`). A test that runs Snakemake must
    carry the `workflow` mark, so that `make test-fast` (-m "not workflow and not training") stays
    the quick unit tier."""
    if args and args[0] == "snakemake" and _running and not _running[-1].get_closest_marker("workflow"):
        raise AssertionError(f"{_running[-1].nodeid} runs Snakemake: mark it @pytest.mark.workflow")
    return subprocess.run(args, cwd=cwd, env=command_env(env, unset), capture_output=True, text=True, timeout=timeout)


def run_cmds(*commands: list[str], cwd: Path = REPO) -> list[subprocess.CompletedProcess]:
    """Independent commands at once, as many as the machine has cores, each run as run_cmd runs
    it: a test's command-line calls mostly start Python and import torch, one core each."""
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        return list(pool.map(lambda args: run_cmd(args, cwd=cwd), commands))


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch on ``count`` intra-op threads inside the block, as a job given that many `threads`."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Preprocessing runs on one torch thread per job (see rules/preprocess.smk); so does the
    landmark fit, thousands of small tensor ops that a second thread only makes wait."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


#: Manipulator networks of a few thousand weights, for workflow runs in tests.
TINY_MANIPULATOR = {
    "networks": {"style_size": 4, "mapping_hidden": 8, "lstm_layers": 1, "generator_frame_widths": [16],
                 "generator_lstm_hidden": 16, "generator_head_widths": [16], "encoder_frame_widths": [16],
                 "encoder_lstm_hidden": 8, "encoder_head_widths": [8]},
    "train": {"batch_size": 8, "checkpoint_every": 5}, "ned": {"steps": 10}, "scmcl": {"steps": 6},
    "classifier": {"steps": 20, "hidden_widths": [16], "batch_size": 32}}


#: Renderer networks of a few thousand weights and a handful of steps, for workflow runs in tests.
TINY_RENDERER = {"networks": {"ngf": 4, "downsample": 1, "blocks": 2, "ndf": 4, "d_layers": 1, "d_scales": 1},
                 "train": {"checkpoint_every": 5, "sample_every": 5}, "ned": {"steps": 6, "run_frames": 2},
                 "scmcl": {"steps": 4}}


def tiny_workflow_config(scmc: dict, **top) -> dict:
    """Config of the workflow tests: one actor, neutral + happy, two sentences (002 the test
    clip), 64 px at 15 fps (each clip's rate comes from the manifest: MEAD's is 30, the demo's 25),
    short training."""
    return {"actors": ["SYN01"], "emotions": ["neutral", "happy"], "data_root": "corpus", "test_clips": ["002"],
            "flame": {"model": "head/generic_model.pkl", "landmark_embedding": "head/landmark_embedding.npy"},
            "synthetic": {"sentences": 2, "resolution": 64, "fps": 15}, "preprocess": {"crop_size": 64, "fit_iterations": 30},
            "scmc": {"pairs": 2, "batch_size": 8, "eval_batches": 2, **scmc}, "manipulator": TINY_MANIPULATOR,
            "renderer": TINY_RENDERER, "evaluate": {"face_classifier": {"steps": 20, "widths": [8, 8], "image_size": 32}}, **top}


#: The config of the one workflow run the suite shares (`workflow_run`): a second actor, without a
#: renderer, styles the cross-ID edits of the paper's metrics.
WORKFLOW_CONFIG = tiny_workflow_config({
    "checkpoint_every": 5, **{name: {"steps": 10} for name in ("train_audio", "train_expression", "train_image")},
    "finetune_expression": {"steps": 6, "warmup": 2}, "finetune_image": {"steps": 4, "warmup": 2, "image_size": 32}},
    actors=["SYN01", "SYN02"], renderer={**TINY_RENDERER, "actors": ["SYN01"]})


def save_paper_networks(folder: Path) -> dict[str, str]:
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


#: The cores of the tests' workflow runs: two jobs at once on one thread each. The tiny jobs spend
#: most of their time starting Python, reading and writing files: a rule's two threads would
#: leave the second core idle.
TEST_CORES = ["--cores", "2", "--max-threads", "1"]


def snakemake_args(directory: Path, *configfiles: Path) -> list[str]:
    """`snakemake` on the project's Snakefile in ``directory`` with ``configfiles`` (default: the
    directory's config.yaml), on TEST_CORES; targets and options go after it."""
    configs = [str(path) for path in configfiles or [directory / "config.yaml"]]
    return ["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(directory), "--configfile", *configs,
            *TEST_CORES]


class WorkflowRun(NamedTuple):
    """A finished workflow: its folder, the Snakemake command that ran it, and what it printed."""

    workdir: Path
    args: list[str]
    log: str


@pytest.fixture(scope="session")
def workflow_run(tmp_path_factory) -> WorkflowRun:
    """The whole `all` target once for the suite, on the tiny config (two actors, neutral + happy,
    the paired truth, evaluation, edited videos, and the paper's metrics from seeded random networks
    of the official layouts): the tests of each stage's outputs read it, and only read it."""
    workdir = tmp_path_factory.mktemp("wf")
    paper = {"paper": {"weights": save_paper_networks(workdir)}}
    config = {**WORKFLOW_CONFIG, "evaluate": {**WORKFLOW_CONFIG["evaluate"], **paper}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    args = snakemake_args(workdir)
    result = run_cmd(args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return WorkflowRun(workdir, args, result.stdout + result.stderr)


# A tiny built-in corpus shared by the corpus and preprocessing tests (generated once).
ACTOR = "SYN01"
EMOTIONS = ["neutral", "happy", "sad"]


def synth_settings(**overrides) -> SynthSettings:
    """The schema's corpus settings (config ``synthetic`` less ``sentences``), with test overrides."""
    defaults = {key: value for key, value in schema_default("synthetic").items() if key != "sentences"}
    return SynthSettings(**{**defaults, "device": "cpu", **overrides})


SETTINGS = synth_settings(resolution=96)


@pytest.fixture(scope="session")
def head_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("head")
    model, landmarks = build_head(seed=0)
    save_flame_model(out / "generic_model.pkl", model)
    save_landmark_embedding(out / "landmark_embedding.npy", landmarks)
    return out / "generic_model.pkl", out / "landmark_embedding.npy"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, head_files):
    root = tmp_path_factory.mktemp("corpus")
    synth_actor(*head_files, root, ACTOR, EMOTIONS, [3], 1, SETTINGS)
    return root


PREPROCESSED_CROP = 64


@pytest.fixture(scope="session")
def preprocessed(head_files, corpus, tmp_path_factory) -> list[str]:
    """The corpus fixture's actor preprocessed at PREPROCESSED_CROP px: its shard tables, one per emotion."""
    settings = PreprocessSettings(**{**schema_default("preprocess"), "crop_size": PREPROCESSED_CROP, "fit_iterations": 60,
                                     "device": "cpu", "tracker": "synthetic", "tracker_noise_px": 0.5})
    runner = ShardRunner(settings, str(head_files[0]), str(head_files[1]), str(corpus))
    out = tmp_path_factory.mktemp("preprocessed")
    manifest = scan_mead(corpus, actors=[ACTOR], emotions=EMOTIONS, levels=[3])
    for emotion in EMOTIONS:
        run_shard(manifest, ACTOR, emotion, out / emotion, out / f"{emotion}.parquet", runner)
    return [str(out / f"{emotion}.parquet") for emotion in EMOTIONS]

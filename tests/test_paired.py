"""The paired ground truth of a test clip, preprocessed like any clip: the neutral test clip shown
in another emotion is rendered into a MEAD-layout tree of its own, scanned and preprocessed by the
same rule definitions as the corpus, so the manipulator's evaluation compares like with like.
Real data has no paired ground truth: on MEAD no paired rule exists."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from scmcl.face3d.flame import FlameLayer
from scmcl.face3d.flame_file import load_flame_model, load_landmark_embedding
from tests.conftest import WORKFLOW_CONFIG, run_cmd, snakemake_args

pytestmark = pytest.mark.workflow

CONFIG = WORKFLOW_CONFIG  # two actors, neutral + happy, 2 sentences, 64 px
TEST_CLIP = CONFIG["test_clips"][0]
ACTOR, TARGET = CONFIG["actors"][0], "happy"
LEVEL = 3  # the last configured level (the schema's default levels: [3])
PAIRED_TABLE = f"work/paired/preprocess/{ACTOR}/expressions.parquet"
SOURCE_SHARD = f"work/preprocess/{ACTOR}/neutral.parquet"
JAW, EXP = [f"jaw_pose_{j}" for j in range(3)], [f"exp_{j:02d}" for j in range(50)]
GT_JAW = ["pose_03", "pose_04", "pose_05"]  # the jaw in a frames.parquet or ground-truth table


def _job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture(scope="module")
def run(workflow_run):
    """The suite's workflow run (`all`): the paired chain, the neutral source's preprocessing."""
    return workflow_run.workdir, workflow_run.log


def _face(workdir):
    """Per frame, the 68 landmarks (T,68,3) of a table's jaw pose and expression on the head,
    frontal and with the template identity: what an expression looks like, whatever its basis."""
    layer = FlameLayer(load_flame_model(workdir / CONFIG["flame"]["model"]),
                       landmarks=load_landmark_embedding(workdir / CONFIG["flame"]["landmark_embedding"]))

    def landmarks(table: pd.DataFrame, jaw: list[str], exp: list[str]) -> np.ndarray:
        pose = torch.zeros(len(table), 6)
        pose[:, 3:] = torch.tensor(table[jaw].to_numpy(np.float32))
        with torch.no_grad():
            return layer(exp=torch.tensor(table[exp[:layer.n_exp]].to_numpy(np.float32)), pose=pose).landmarks.numpy()
    return landmarks


def test_paired_clip_is_in_meads_layout_and_scanned_alone(run):
    workdir, _ = run
    root = workdir / "work/paired/corpus" / ACTOR
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        f"audio/{TARGET}/level_{LEVEL}/{TEST_CLIP}.m4a", f"groundtruth/{TARGET}/level_{LEVEL}/{TEST_CLIP}.parquet",
        f"video/front/{TARGET}/level_{LEVEL}/{TEST_CLIP}.mp4"]
    manifest = pd.read_parquet(workdir / "work/paired/manifest.parquet")
    assert manifest[["actor", "emotion", "level", "clip"]].values.tolist() == [[a, TARGET, LEVEL, TEST_CLIP] for a in CONFIG["actors"]]
    assert manifest.audio_source.tolist() == ["m4a"] * len(CONFIG["actors"])


def test_paired_expressions_are_the_source_speech_in_the_target_emotion(run):
    """Frame for frame the paired clip is the neutral source's sentence: same length, a jaw that
    opens and closes with the source's, and a reconstructed expression of its own."""
    workdir, _ = run
    paired = pd.read_parquet(workdir / PAIRED_TABLE)
    assert list(paired.columns) == ["actor", "emotion", "level", "clip", "frame", *JAW, *EXP]
    assert set(zip(paired.actor, paired.emotion, paired.level, paired["clip"])) == {(ACTOR, TARGET, LEVEL, TEST_CLIP)}

    source_clip = pd.read_parquet(workdir / SOURCE_SHARD).query("clip == @TEST_CLIP").iloc[0]
    source = pd.read_parquet(workdir / source_clip.directory / "frames.parquet")
    assert len(paired) == source_clip.frames == len(source)
    assert paired.frame.tolist() == list(range(len(source)))

    # the same speech: the reconstructed jaw opening follows the source's
    jaw_paired, jaw_source = paired[JAW[0]].to_numpy(), source[GT_JAW[0]].to_numpy()
    assert jaw_source.std() > 0.02, "the source's jaw should move with its speech"
    assert np.corrcoef(jaw_paired, jaw_source)[0, 1] > 0.9

    # another emotion: the reconstructed face (jaw and expression on the head, see _face) moves away
    # from the source's as the ground truth's does: as far within a factor 3, the same way, in
    # nearly every frame
    truth_source, truth_paired = (pd.read_parquet(workdir / root / f"{ACTOR}/groundtruth/{emotion}/level_{level}/{TEST_CLIP}.parquet")
                                  for root, emotion, level in ((CONFIG["data_root"], "neutral", 1),
                                                               ("work/paired/corpus", TARGET, LEVEL)))
    face = _face(workdir)
    shift = face(paired, JAW, EXP) - face(source, GT_JAW, EXP)
    true_shift = face(truth_paired, GT_JAW, EXP) - face(truth_source, GT_JAW, EXP)
    mean, true_mean = shift.mean(0).ravel(), true_shift.mean(0).ravel()
    assert 0.3 < np.linalg.norm(mean) / np.linalg.norm(true_mean) < 3
    assert mean @ true_mean / (np.linalg.norm(mean) * np.linalg.norm(true_mean)) > 0.5
    assert (shift.reshape(len(shift), -1) @ true_mean > 0).mean() > 0.8


def test_paired_chain_has_nothing_left_to_do(run):
    workdir, log = run
    counts, actors = _job_counts(log), len(CONFIG["actors"])  # one paired clip per actor
    assert {k: counts.get(k) for k in ("paired_corpus", "paired_manifest", "paired_preprocess_shard",
                                       "paired_expression_table")} == {
        "paired_corpus": actors, "paired_manifest": 1, "paired_preprocess_shard": actors, "paired_expression_table": actors}
    for log_file in ("logs/paired_corpus/SYN01/happy/002.log", "logs/paired_manifest.log",
                     "logs/paired_preprocess_shard/SYN01/happy.log", "logs/paired_expression_table/SYN01.log"):
        assert (workdir / log_file).stat().st_size > 0, log_file
    again = run_cmd([*snakemake_args(workdir), PAIRED_TABLE, SOURCE_SHARD, "-n"])
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.fixture()
def mead(tmp_path):
    """A MEAD config (the tree only listed: the dry run opens no file)."""
    for path in ("head/generic_model.pkl", "head/landmark_embedding.npy"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
    source = tmp_path / "MEAD" / ACTOR / "video/front/neutral/level_1" / f"{TEST_CLIP}.mp4"  # the edited video's source
    source.parent.mkdir(parents=True)
    source.touch()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**CONFIG, "dataset": "mead", "data_root": "MEAD"}))
    return tmp_path


def test_mead_has_no_paired_ground_truth(mead):
    plan = run_cmd([*snakemake_args(mead), "--dry-run", "--forceall"])
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    counts = _job_counts(plan.stdout)
    assert counts["preprocess_shard"] == len(CONFIG["actors"]) * len(CONFIG["emotions"]) and "corpus_manifest" in counts
    assert not [rule for rule in counts if "paired" in rule]
    asked = run_cmd([*snakemake_args(mead), "--dry-run", PAIRED_TABLE])
    assert asked.returncode != 0 and "MissingRuleException" in asked.stdout + asked.stderr

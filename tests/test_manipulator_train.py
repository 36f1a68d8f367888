"""Both manipulator variants, trained briefly on a small built-in corpus, edit the held-out
neutral clip towards its paired ground truth while keeping the speech; the training windows
never include a test clip; a killed run resumes to the same weights; released files import.

The expression tables are the corpus's true parameters (what preprocessing estimates; the
workflow test runs the real chain). The audio distances are a stand-in made from the clips'
own audio: the L2 distance of the MFCCs of each window's last two frames, which, like the
SCMC audio embedding, is small for the same speech in another emotion.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from scmcl.config import validate_config
from scmcl.corpus.head import EXPRESSION_NAMES
from scmcl.corpus.layout import ClipKey, groundtruth_path
from scmcl.corpus.manifest import scan_mead
from scmcl.corpus.synth import Generator, synth_actor
from scmcl.io.atomic import write_parquet
from scmcl.io.clip_data import CLIP_KEY, expression_view51
from scmcl.io.media import read_audio
from scmcl.manipulator.ablation import score_edit
from scmcl.manipulator.checkpoint import load_networks, save_networks
from scmcl.manipulator.classifier import ClassifierSettings, train_classifier
from scmcl.manipulator.edit import edit_sequence, label_style
from scmcl.manipulator.networks import FRAME_SIZE, NETWORK_KEYS, ManipulatorNets, NetworkSizes
from scmcl.manipulator.pseudo import NONE, build_pseudo_targets
from scmcl.manipulator.train import (
    ExpressionMetric,
    Inputs,
    TrainerSettings,
    VariantSettings,
    linear_decay,
    train_manipulator,
)
from scmcl.manipulator.windows import every_window, matrix_windows, training_sequences
from scmcl.options import settings_flags
from scmcl.scmc.dists import enumerate_windows
from scmcl.scmc.mfcc import mfcc_per_frame
from scmcl.scmc.train import JointModels, finetune_contents
from scmcl.train.loop import publish_weights, seed_everything
from tests.conftest import command_env, run_cmd, run_cmds, synth_settings, torch_threads
from tests.helpers import truth_expression_table, truth_expressions

pytestmark = pytest.mark.training

ACTOR = "SYN05"
EMOTIONS = ["neutral", "happy", "sad"]
TEST_CLIPS = ("003",)
SEQ_LEN = 10
SAMPLE_RATE = 16000
#: Small networks for a CPU test; the schema's are NED's.
NETWORKS = {"style_size": 8, "latent_size": 4, "mapping_hidden": 32, "lstm_layers": 1,
            "generator_frame_widths": [64], "generator_lstm_hidden": 64, "generator_head_widths": [64],
            "encoder_frame_widths": [32], "encoder_lstm_hidden": 32, "encoder_head_widths": [32]}


@dataclass(frozen=True)
class Data:
    root: Path
    expressions: Path
    paired: Path
    distances: Path
    metric: Path
    manifest: pd.DataFrame


def _write_distances(out: Path, table: pd.DataFrame, manifest: pd.DataFrame) -> None:
    """``windows.parquet`` and ``<emotion>.npy`` as ``scmcl scmc dists`` writes them, with the
    MFCC stand-in for the audio embedding."""
    frames = table.groupby(CLIP_KEY).size().rename("frames").reset_index()
    clips = frames.merge(manifest.drop(columns="frames"), on=CLIP_KEY)
    waves = [read_audio(path, SAMPLE_RATE) for path in clips.audio]
    clips = clips.assign(audio_samples=[len(w) for w in waves])
    windows = enumerate_windows(clips, SAMPLE_RATE, SEQ_LEN, 1)
    features = [mfcc_per_frame(w, SAMPLE_RATE, float(c.fps), int(c.frames)) for w, c in zip(waves, clips.itertuples())]
    vectors = np.stack([np.concatenate([features[i][last - 1], features[i][last]])
                        for i, last in zip(windows.clip_index, windows["last"])])
    vectors = (vectors - vectors.mean(0)) / vectors.std(0).clip(1e-6) / np.sqrt(vectors.shape[1])
    out.mkdir(parents=True)
    neutral = vectors[(windows.emotion == "neutral").to_numpy()]
    for emotion in EMOTIONS[1:]:
        other = vectors[(windows.emotion == emotion).to_numpy()]
        np.save(out / f"{emotion}.npy", np.linalg.norm(neutral[:, None] - other[None], axis=2).astype(np.float32))
    write_parquet(windows[["emotion", "level", "clip", "start", "last", "row"]], out / "windows.parquet")


def build_data(root: Path, head_files) -> Data:
    settings = synth_settings(resolution=64)
    corpus = root / "corpus"
    synth_actor(*head_files, corpus, ACTOR, EMOTIONS, [3], 3, settings)
    manifest = scan_mead(corpus, actors=[ACTOR], emotions=EMOTIONS, levels=[3])
    table = truth_expression_table(corpus, manifest)
    write_parquet(table, root / "expressions.parquet")
    generator, paired = Generator(*head_files, ACTOR, settings), []
    for emotion in EMOTIONS[1:]:
        key = generator.write_paired(root / "paired", ClipKey("neutral", 1, TEST_CLIPS[0]), emotion, 3)
        paired.append(truth_expressions(pd.read_parquet(groundtruth_path(root / "paired", ACTOR, key)), ACTOR, key))
    write_parquet(pd.concat(paired, ignore_index=True), root / "paired.parquet")
    _write_distances(root / "dists" / ACTOR, table, manifest)
    seed_everything(0)
    metric = JointModels("expression")
    publish_weights(root / "metric.pt", finetune_contents("expression"), "test", {"nframe": 2, "models": metric.state_dict(), "image_size": None, "image_crop": None})
    return Data(root, root / "expressions.parquet", root / "paired.parquet", root / "dists", root / "metric.pt", manifest)


@pytest.fixture(scope="module")
def data(tmp_path_factory, head_files) -> Data:
    return build_data(tmp_path_factory.mktemp("manipulator"), head_files)


def network_flags() -> list[str]:
    """The options that give a ``scmcl manipulator``/``manipulate`` command these networks, as a rule passes them."""
    return shlex.split(settings_flags(validate_config({"manipulator": {"networks": NETWORKS}}), "manipulator.networks"))


def sizes() -> NetworkSizes:
    return NetworkSizes.from_config(validate_config({"manipulator": {"networks": NETWORKS}}))


def common(**overrides) -> TrainerSettings:
    section = validate_config({"manipulator": {"train": {"batch_size": 32, **overrides}}})["manipulator"]["train"]
    return TrainerSettings(**section)


def variant(name: str, **overrides) -> VariantSettings:
    section = validate_config({"manipulator": {name: overrides}})["manipulator"][name]
    return VariantSettings(**{key: section.get(key) for key in VariantSettings.__dataclass_fields__})


def inputs(data: Data, init: Path | None = None) -> Inputs:
    return Inputs(expressions=(str(data.expressions),), emotions=tuple(EMOTIONS), test_clips=TEST_CLIPS, seq_len=SEQ_LEN,
                  init=str(init) if init else None, metric=str(data.metric),
                  distances={ACTOR: str(data.distances / ACTOR)})


def _clip(path: Path, emotion: str, clip: str) -> np.ndarray:
    rows = pd.read_parquet(path)
    return expression_view51(rows[(rows.emotion == emotion) & (rows["clip"] == clip)].sort_values("frame"))


def test_no_window_of_a_test_clip_reaches_training(data):
    """Sources, references and pseudo-targets are drawn from the WindowSet, so checking it and
    the pseudo-target indices covers every batch either variant can draw."""
    sequences = training_sequences([data.expressions], EMOTIONS, TEST_CLIPS)
    assert sequences and all(key[3] not in TEST_CLIPS for key in sequences)
    ned = every_window(sequences, EMOTIONS, SEQ_LEN)
    scmcl = matrix_windows(sequences, {ACTOR: data.distances / ACTOR / "windows.parquet"}, EMOTIONS, SEQ_LEN)
    for windows in (ned, scmcl):
        assert not windows.table["clip"].isin(TEST_CLIPS).any()
        assert set(windows.table["clip"]) == {"001", "002"}
    pseudo = build_pseudo_targets(scmcl, {ACTOR: data.distances / ACTOR}, dist_thresh=10.0, topk=10)
    drawn = np.concatenate([pseudo.candidates.ravel(), pseudo.inter.ravel()])
    assert ((drawn == NONE) | ((drawn >= 0) & (drawn < len(scmcl)))).all()
    all_windows = pd.read_parquet(data.distances / ACTOR / "windows.parquet")
    assert all_windows["clip"].isin(TEST_CLIPS).any()  # the matrices do hold test windows: they are masked


def test_pseudo_targets_follow_the_retrieval_rules(data):
    sequences = training_sequences([data.expressions], EMOTIONS, TEST_CLIPS)
    windows = matrix_windows(sequences, {ACTOR: data.distances / ACTOR / "windows.parquet"}, EMOTIONS, SEQ_LEN)
    thresh = float(np.quantile(np.load(data.distances / ACTOR / "happy.npy"), 0.2))
    pseudo = build_pseudo_targets(windows, {ACTOR: data.distances / ACTOR}, thresh, topk=4)
    labels = windows.labels.numpy()
    index = np.arange(len(windows))
    assert (pseudo.candidates[index, labels, 0] == index).all() and (pseudo.distances[index, labels, 0] == 0).all()
    happy, neutral, sad = EMOTIONS.index("happy"), EMOTIONS.index("neutral"), EMOTIONS.index("sad")
    found = pseudo.candidates[labels == neutral, happy]
    valid = found[found != NONE]
    assert len(valid) and (labels[valid] == happy).all()
    distances = pseudo.distances[labels == neutral, happy]
    assert (np.diff(np.where(np.isfinite(distances), distances, 1e30), axis=1)[np.isfinite(distances[:, 1:])] >= 0).all()  # nearest first
    assert (distances[np.isfinite(distances)] <= thresh).all()
    cross = labels == happy
    has = pseudo.candidates[cross, sad, 0] != NONE
    assert has.any() and (labels[pseudo.inter[cross, sad][has]] == neutral).all()
    assert (labels[pseudo.candidates[cross, sad, 0][has]] == sad).all()


def test_linear_decay_matches_ned():
    factor = linear_decay(10, 0.5)
    assert [factor(s) for s in range(10)] == [1.0] * 5 + [1.0, 0.8, 0.6, 0.4, 0.2]
    assert [linear_decay(5, 1.0)(s) for s in range(5)] == [1.0, 0.8, 0.6, 0.4, 0.2]  # SCMCL's 5 epochs


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """ned, then scmcl fine-tuned from it, both briefly, and the classifier that judges them."""
    out = tmp_path_factory.mktemp("trained")
    with torch_threads(2):
        fast = {"lr": 1e-3, "mapping_lr": 1e-3}  # a few hundred steps instead of NED's epochs
        figures = train_manipulator("ned", sizes(), common(), variant("ned", steps=400, **fast), inputs(data), "cpu",
                                    out / "ned_run", out / "ned.pth", out / "ned.tsv")
        # the zero padding after the built-in head's 25 components, and blendshapes these truth tables never move
        assert figures["padded_columns"] >= FRAME_SIZE - 1 - len(EXPRESSION_NAMES)
        train_manipulator("scmcl", sizes(), common(), variant("scmcl", steps=150, dist_thresh=0.5, lr=3e-4, mapping_lr=3e-4),
                          inputs(data, out / "ned.pth"),
                          "cpu", out / "scmcl_run", out / "scmcl.pth", out / "scmcl.tsv")
        classifier_settings = ClassifierSettings.from_config(validate_config({"manipulator": {"classifier": {"steps": 300, "hidden_widths": [64]}}}))
        model, _ = train_classifier([data.expressions], EMOTIONS, TEST_CLIPS, classifier_settings, "cpu")
    return out, model


@pytest.mark.parametrize("name", ["ned", "scmcl"])
def test_edits_of_the_test_clip_reach_the_paired_truth_and_keep_the_speech(data, trained, name):
    out, classifier = trained
    nets = load_networks(out / f"{name}.pth", ManipulatorNets(sizes(), len(EMOTIONS)))
    source = _clip(data.expressions, "neutral", TEST_CLIPS[0])
    for emotion in EMOTIONS[1:]:
        style = label_style(nets, EMOTIONS.index(emotion), seed=0)
        edit = edit_sequence(nets.generator, source, style, SEQ_LEN, batch=64)
        figures = score_edit(edit, source, _clip(data.paired, emotion, TEST_CLIPS[0]), emotion, classifier)
        assert figures["dist_edit"] < figures["dist_source"], (name, emotion, figures)
        assert figures["jaw_corr"] >= 0.9, (name, emotion, figures)
        assert figures["target_rate"] > 0.5 and figures["source_neutral_rate"] > 0.5, (name, emotion, figures)
        assert figures["meets_all"] == 1, (name, emotion, figures)
        assert figures["intensity0_max_abs"] == 0 and 0.45 < figures["intensity05_position"] < 0.55


def test_training_writes_per_step_metrics(trained):
    out, _ = trained
    ned, scmcl = pd.read_csv(out / "ned.tsv", sep="\t"), pd.read_csv(out / "scmcl.tsv", sep="\t")
    assert len(ned) == 400 and len(scmcl) == 150
    assert {"d_latent", "g_reference", "mouth_latent"} <= set(ned.columns)
    # A discriminator that cannot tell real from fake does best with 0.5 everywhere: LSGAN loss 0.5.
    assert ned.d_latent.tail(50).mean() < 0.5 and ned.d_reference.tail(50).mean() < 0.5
    assert (scmcl.pseudo_fraction > 0).all() and (scmcl.paired_latent > 0).any() and (scmcl.sim_reference > 0).any()
    assert ned.lr.iloc[0] == pytest.approx(1e-3) and ned.lr.iloc[-1] < ned.lr.iloc[0]


def _train_command(data: Data, out: Path, name: str, steps: int) -> list[str]:
    command = ["scmcl", "manipulator", "train", name, *network_flags(), "--emotions", *EMOTIONS, "--expressions", str(data.expressions),
               "--steps", str(steps), "--checkpoint-every", "5", "--batch-size", "16", "--run-dir", str(out / "run"),
               "--out", str(out / "nets.pth"), "--metrics", str(out / "metrics.tsv"), "--threads", "1"]
    if name == "scmcl":
        command += ["--init", str(out.parent / "init.pth"), "--metric", str(data.metric),
                    "--distances", str(data.distances / ACTOR), "--dist-thresh", "0.5"]
    return command


@pytest.mark.parametrize("name", ["ned", "scmcl"])
def test_a_killed_training_resumes_to_the_uninterrupted_weights(data, tmp_path, name):
    save_networks(tmp_path / "init.pth", ManipulatorNets(sizes(), len(EMOTIONS)))
    steps = 20  # the kill comes at the first checkpoint (step 5): 15 steps run after the resume
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # The uninterrupted run goes on beside the killed one, each on one thread of the two cores.
    uninterrupted = subprocess.Popen(_train_command(data, straight, name, steps), cwd=tmp_path, env=command_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    process = subprocess.Popen(_train_command(data, killed, name, steps), cwd=tmp_path, env=command_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = killed / "run" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    assert not (killed / "nets.pth").exists()
    run_cmd(_train_command(data, killed, name, steps), cwd=tmp_path).check_returncode()
    _, errors = uninterrupted.communicate(timeout=300)  # reads its stderr as it runs: a full pipe would stall it
    assert uninterrupted.returncode == 0, errors[-2000:]
    a = torch.load(straight / "nets.pth", weights_only=True)
    b = torch.load(killed / "nets.pth", weights_only=True)
    assert a.keys() == b.keys() and a["generator_residual"] == b["generator_residual"]
    for network in NETWORK_KEYS:
        for key in a[network]:
            assert torch.equal(a[network][key], b[network][key]), (network, key)
    metrics = pd.read_csv(killed / "metrics.tsv", sep="\t")
    assert list(metrics.step) == list(range(steps))


def test_a_released_checkpoint_is_validated_and_copied(data, tmp_path):
    nets = ManipulatorNets(sizes(), len(EMOTIONS))
    released = tmp_path / "05_nets_finetuned.pth"
    save_networks(released, nets)
    ok = run_cmd(["scmcl", "manipulator", "import", "scmcl", str(released), *network_flags(), "--emotions", *EMOTIONS,
                  "--out", str(tmp_path / "scmcl.pth")])
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "scmcl.pth").read_bytes() == released.read_bytes()
    wrong = run_cmd(["scmcl", "manipulator", "import", "scmcl", str(released), "--emotions", *EMOTIONS,
                     "--out", str(tmp_path / "other.pth")])  # NED's default sizes: does not fit
    assert wrong.returncode != 0 and not (tmp_path / "other.pth").exists()
    assert str(released) in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1


def _edit_command(data: Data, weights: Path, out: Path, *extra: str) -> list[str]:
    manifest = out.parent / "manifest.parquet"
    if not manifest.exists():
        write_parquet(data.manifest, manifest)
    return ["scmcl", "manipulate", "--weights", str(weights), *network_flags(), "--emotions", *EMOTIONS,
            "--expressions", str(data.expressions), "--manifest", str(manifest), "--actor", ACTOR,
            "--source-emotion", "neutral", "--level", "1", "--clip", TEST_CLIPS[0], "--out", str(out), "--record", str(out.with_suffix(".json")), *extra]


def test_manipulate_writes_label_reference_and_keyframed_edits(data, trained, tmp_path):
    out, _ = trained
    source = _clip(data.expressions, "neutral", TEST_CLIPS[0])
    sad_clips = sorted(set(pd.read_parquet(data.expressions).query("emotion == 'sad'")["clip"]))
    edit = lambda name, *flags: _edit_command(data, out / "scmcl.pth", tmp_path / f"{name}.parquet", *flags)  # noqa: E731
    zero, ramp, full, reference, held, missing = run_cmds(
        edit("zero", "--emotion", "happy", "--intensity", "0"),
        edit("ramp", "--emotion", "happy", "--keyframes", "[[0, 0], [1.0, 1]]"),
        edit("full", "--emotion", "happy"),
        edit("ref", "--emotion", "sad", "--reference-expressions", str(data.expressions), "--reference-actor", ACTOR),
        edit("held", "--emotion", "sad", "--test-clips", *sad_clips, "--reference-expressions", str(data.expressions),
             "--reference-actor", ACTOR),
        edit("x", "--emotion", "happy", "--clip", "009"))
    assert zero.returncode == 0, zero.stderr
    table = pd.read_parquet(tmp_path / "zero.parquet")
    assert set(table.emotion) == {"happy"} and list(table.source_frame) == list(range(len(source)))
    np.testing.assert_array_equal(expression_view51(table), source)
    assert ramp.returncode == 0 and full.returncode == 0, ramp.stderr + full.stderr
    ramped, edited = expression_view51(pd.read_parquet(tmp_path / "ramp.parquet")), expression_view51(pd.read_parquet(tmp_path / "full.parquet"))
    away = np.linalg.norm(ramped - source, axis=1) / np.linalg.norm(edited - source, axis=1).clip(1e-9)
    fps = float(data.manifest.fps.iloc[0])
    np.testing.assert_allclose(away[: int(fps) + 1], np.arange(int(fps) + 1) / fps, atol=1e-4)  # 0 → 1 over 1 s
    np.testing.assert_allclose(away[int(fps):], 1.0, atol=1e-4)
    assert reference.returncode == 0, reference.stderr
    assert "reference" in (tmp_path / "ref.json").read_text()
    assert held.returncode != 0 and "outside test_clips" in held.stderr  # held-out clips never style an edit
    assert missing.returncode != 0 and "009" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.parquet").exists()


def test_the_scmc_metric_stays_frozen_in_eval_mode(data):
    """Defect 16: the original's metric ran in train mode, so its BN statistics drifted."""
    metric = ExpressionMetric(data.metric, torch.device("cpu"))
    before = {key: value.clone() for key, value in metric.state_dict().items()}
    metric.train()
    assert not any(module.training for module in metric.modules())
    fake = torch.randn(4, SEQ_LEN, 51, requires_grad=True)
    metric.distance(fake, torch.randn(4, SEQ_LEN, 51)).sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0  # the loss reaches the generator's output
    assert all(torch.equal(before[key], value) for key, value in metric.state_dict().items())
    assert not any(p.requires_grad for p in metric.parameters())

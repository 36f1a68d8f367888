"""The SCMC metric on a small built-in corpus: DTW pairs match what is said, the trained audio
encoder retrieves the aligned frame, joint fine-tuning makes the 3DMM and audio distances agree,
the offline distances follow the window enumeration, and a killed trainer resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from scmcl.corpus.layout import ClipKey, groundtruth_path
from scmcl.corpus.manifest import scan_mead
from scmcl.corpus.synth import synth_actor
from scmcl.io.atomic import write_parquet
from scmcl.scmc.data import BatchSampler, Pairs
from scmcl.scmc.dists import actor_clips, actor_distances, write_distance_matrix
from scmcl.scmc.pairs import Pairing, align_pairs, clip_pairs
from scmcl.scmc.train import DataFiles, JointModels, Settings, finetune, fingerprint, train_encoder
from scmcl.train.loop import load_published
from tests.conftest import BIN, REPO, run_cmd, synth_settings

pytestmark = pytest.mark.training

ACTOR = "SYN02"
EMOTIONS = ["neutral", "happy", "sad"]
SENTENCES = 3


@pytest.fixture(scope="module")
def scmc_corpus(tmp_path_factory, head_files):
    """Three sentences per emotion (two train pairs, one held out), small frames: SCMC reads audio."""
    root = tmp_path_factory.mktemp("scmc_corpus")
    synth_actor(*head_files, root, ACTOR, EMOTIONS, [3], SENTENCES, synth_settings(resolution=64))
    return root, scan_mead(root, actors=[ACTOR], emotions=EMOTIONS, levels=[3])


@pytest.fixture(scope="module")
def files(scmc_corpus, tmp_path_factory):
    """Aligned pairs, and the expression table built from the corpus's true expressions (the
    preprocessing's own table is tested in test_preprocess; here the metric is under test)."""
    root, manifest = scmc_corpus
    out = tmp_path_factory.mktemp("scmc")
    write_parquet(manifest, out / "manifest.parquet")
    write_parquet(align_pairs(manifest, Pairing(count=SENTENCES, offsets=(), test_clips=("003",)), sample_rate=16000), out / "pairs.parquet")
    parts = []
    for row in manifest.itertuples(index=False):
        truth = pd.read_parquet(groundtruth_path(root, ACTOR, ClipKey(row.emotion, int(row.level), row.clip)))
        data = {"actor": ACTOR, "emotion": row.emotion, "level": int(row.level), "clip": row.clip, "frame": truth.frame}
        data |= {f"jaw_pose_{j}": truth[f"pose_{3 + j:02d}"].astype(np.float32) for j in range(3)}
        data |= {f"exp_{j:02d}": truth.get(f"exp_{j:02d}", 0.0 * truth.frame).astype(np.float32) for j in range(50)}
        parts.append(pd.DataFrame(data))
    write_parquet(pd.concat(parts, ignore_index=True), out / "expressions.parquet")
    return out, DataFiles(manifest=str(out / "manifest.parquet"), pairs=str(out / "pairs.parquet"),
                          expressions=(str(out / "expressions.parquet"),), sample_rate=16000, image_crop=35 / 256)


def test_pairing_follows_config():
    pairing = Pairing(count=3, offsets=(("disgusted", 27),), test_clips=("003",))
    assert pairing.partner("disgusted", "001", {"028", "029", "030"}) == "028"
    assert pairing.partner("disgusted", "001", {"001", "002"}) == "001"  # no 028: same id
    assert pairing.partner("happy", "002", {"001", "002"}) == "002"
    assert pairing.partner("happy", "003", {"001"}) is None


def test_dtw_pairs_match_the_spoken_visemes(scmc_corpus, files):
    root, _ = scmc_corpus
    pairs = pd.read_parquet(files[0] / "pairs.parquet")
    assert set(pairs.split) == {"train", "val"} and set(pairs[pairs.split == "val"].pair) == {SENTENCES - 1}
    agree, shuffled = [], []
    rng = np.random.default_rng(0)
    for (emotion, src_clip, dst_clip), rows in pairs.groupby(["emotion", "neutral_clip", "clip"]):
        src = pd.read_parquet(groundtruth_path(root, ACTOR, ClipKey("neutral", 1, src_clip))).viseme.to_numpy()
        dst = pd.read_parquet(groundtruth_path(root, ACTOR, ClipKey(emotion, 3, dst_clip))).viseme.to_numpy()
        assert rows.step.is_monotonic_increasing and rows.neutral_frame.iloc[-1] == len(src) - 1
        assert rows.emotion_frame.iloc[-1] == len(dst) - 1  # one MFCC frame per video frame
        agree.append(np.mean(src[rows.neutral_frame] == dst[rows.emotion_frame]))
        shuffled.append(np.mean(src[rows.neutral_frame] == dst[rng.permutation(rows.emotion_frame.to_numpy())]))
    # Emotional prosody changes the timing; DTW on MFCCs recovers which sound matches which.
    assert np.mean(agree) > 0.5 and np.mean(agree) > 2 * np.mean(shuffled)


def test_batches_come_from_one_actor_and_emotion(files):
    pairs = Pairs.load(pd.read_parquet(files[1].pairs), pd.read_parquet(files[1].manifest), "train")
    sampler = BatchSampler(pairs, batch_size=16, tau=3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        batch = sampler(rng)
        assert len(set(batch)) == 16 and len(set(pairs.group[batch])) == 1
        same_pair = pairs.pair[batch[1:]] == pairs.pair[batch[0]]
        assert not np.any(same_pair & (np.abs(pairs.step[batch[1:]] - pairs.step[batch[0]]) <= 3))


@pytest.fixture(scope="module")
def audio_model(files):
    out, data = files
    settings = trainer_settings()
    figures = train_encoder("audio", data, settings, out / "run_audio", out / "audio.pt", out / "audio.tsv", out / "audio.json")
    return figures


def test_audio_encoder_retrieves_the_aligned_frame(files, audio_model):
    out, _ = files
    # Held-out sentence: top-5 among 32 same-speaker, same-emotion frames (chance 5/32).
    assert audio_model["chance_top5"] == pytest.approx(5 / 32)
    assert audio_model["top5"] > audio_model["chance_top5"] + 0.4
    assert json.loads((out / "audio.json").read_text())["top5"] == audio_model["top5"]
    metrics = pd.read_csv(out / "audio.tsv", sep="\t")
    assert list(metrics.step) == list(range(trainer_settings().steps)) and {"loss", "d_pos", "d_neg", "top1"} <= set(metrics.columns)
    assert metrics.loss.tail(20).mean() < metrics.loss.head(20).mean()
    assert load_published(out / "audio.pt")["modality"] == "audio"


@pytest.fixture(scope="module")
def finetuned(files, audio_model):
    out, data = files
    settings = trainer_settings()
    train_encoder("expression", data, settings, out / "run_expr", out / "expression.pt", out / "expr.tsv", out / "expr.json")
    tune = trainer_settings(warmup=30)
    figures = finetune("expression", data, tune, out / "audio.pt", out / "expression.pt", out / "run_ft",
                       out / "finetune_expression.pt", out / "ft.tsv", out / "ft.json")
    return out / "finetune_expression.pt", figures


def test_joint_finetuning_makes_distances_agree(finetuned, files):
    _, figures = finetuned
    before, after = figures["before"], figures["after"]
    assert after["correlation"] > before["correlation"] + 0.1
    assert after["relative_l1"] < before["relative_l1"]
    metrics = pd.read_csv(files[0] / "ft.tsv", sep="\t")
    assert (metrics.loss_consistency[metrics.step < 30] == 0).all() and (metrics.loss_consistency[metrics.step >= 30] > 0).all()
    assert metrics.scale_w.iloc[-1] != 1.0  # the scale layer is trained once the consistency term is on


def test_distances_follow_the_window_enumeration(finetuned, files, tmp_path):
    weights, _ = finetuned
    out, data = files
    models = JointModels.load(weights)
    clips = actor_clips(pd.read_parquet(data.manifest), pd.read_parquet(data.expressions[0]), ACTOR)
    windows = actor_distances(models, clips, tmp_path, 16000, seq_len=10, hop=1, batch=64, chunk=7, device=torch.device("cpu"))
    assert list(windows.emotion.unique()) == ["neutral", "happy", "sad"]
    for clip in clips.itertuples():
        starts = windows[(windows.emotion == clip.emotion) & (windows["clip"] == clip.clip)].start
        assert list(starts) == list(range(len(starts))) and len(starts) >= clip.frames - 10 - 1
    stored = pd.read_parquet(tmp_path / "windows.parquet")
    n_neutral = (stored.emotion == "neutral").sum()
    happy = np.load(tmp_path / "happy.npy", mmap_mode="r")
    assert happy.dtype == np.float32 and happy.shape == (n_neutral, (stored.emotion == "happy").sum())
    assert not (tmp_path / "neutral.npy").exists()
    assert 0 <= happy.min() and happy.max() <= 2 * np.sqrt(128)  # tanh-bounded embeddings


def test_chunked_distance_matrix_equals_cdist(tmp_path):
    rows, cols = torch.randn(23, 128), torch.randn(11, 128)
    write_distance_matrix(tmp_path / "d.npy", rows, cols, chunk=5)
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), torch.cdist(rows, cols).numpy(), rtol=1e-4, atol=1e-4)


def test_killed_training_resumes_from_its_checkpoint(files, tmp_path):
    out, data = files
    args = [str(BIN / "scmcl"), "scmc", "train", "audio", "--manifest", data.manifest, "--pairs", data.pairs,
            "--steps", "40", "--batch-size", "8", "--checkpoint-every", "5", "--eval-batches", "2",
            "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "audio.pt"),
            "--metrics", str(tmp_path / "m.tsv"), "--eval", str(tmp_path / "e.json")]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if checkpoint.is_file() and torch.load(checkpoint, weights_only=True)["step"] >= 10:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = torch.load(checkpoint, weights_only=True)["step"]
    assert 10 <= saved < 40 and not (tmp_path / "audio.pt").exists()
    rerun = run_cmd(args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming scmc_audio from step {saved}" in rerun.stderr
    assert list(pd.read_csv(tmp_path / "m.tsv", sep="\t").step) == list(range(40))
    assert load_published(tmp_path / "audio.pt")["encoder"]


def test_bench_dists_prints_throughput_and_memory():
    result = run_cmd([sys.executable, "-m", "scmcl", "bench", "dists", "--rows", "3000", "--cols", "2000", "--chunk", "512"])
    assert result.returncode == 0, result.stderr
    assert "M distances/s" in result.stdout and "peak RSS" in result.stdout


def trainer_settings(**overrides) -> Settings:
    """Every setting spelled out, small enough for a test (at 100 steps, over seeds 0-2: top-5
    retrieval 0.63 to 0.66 above chance, fine-tuning's correlation +0.16 to +0.19)."""
    values = dict(steps=100, lr=1e-4, batch_size=32, tau=0, image_size=64, warmup=0, consistency_weight=1.0,
                  pretrained="", seed=0, eval_batches=10, checkpoint_every=50, device="cpu")
    return Settings(**{**values, **overrides})


def test_fingerprint_covers_only_the_scmc_actors_rows(files, tmp_path):
    _, data = files
    manifest = pd.read_parquet(data.manifest)
    other = manifest.assign(actor="M003", video=manifest.video.str.replace(ACTOR, "M003"),
                            audio=manifest.audio.str.replace(ACTOR, "M003"))
    variants = {"more_actors": pd.concat([other, manifest.sample(frac=1.0, random_state=0)], ignore_index=True),
                "changed_row": manifest.assign(fps=manifest.fps.where(manifest.index != 1, manifest.fps + 1.0))}
    for name, table in variants.items():
        write_parquet(table, tmp_path / f"{name}.parquet")
    settings = trainer_settings()
    reference = fingerprint(settings, data)
    assert fingerprint(replace(settings, device="cuda", checkpoint_every=7), data) == reference
    assert fingerprint(settings, replace(data, manifest=str(tmp_path / "more_actors.parquet"))) == reference
    assert fingerprint(settings, replace(data, manifest=str(tmp_path / "changed_row.parquet"))) != reference
    assert fingerprint(replace(settings, lr=2e-4), data) != reference


def test_swapped_weights_fail_before_training(finetuned, files, tmp_path):
    out, data = files
    audio, expression = out / "audio.pt", out / "expression.pt"
    run = dict(run_dir=tmp_path / "run", out=tmp_path / "ft.pt", metrics_out=tmp_path / "ft.tsv", eval_out=tmp_path / "ft.json")
    with pytest.raises(ValueError) as err:
        finetune("expression", data, trainer_settings(), expression, audio, **run)
    assert str(err.value) == f"{expression} holds the scmc expression encoder, expected the scmc audio encoder: check --audio-weights"
    with pytest.raises(ValueError) as err:
        finetune("expression", data, trainer_settings(), audio, audio, **run)
    assert str(err.value) == f"{audio} holds the scmc audio encoder, expected the scmc expression encoder: check --visual-weights"
    assert not list(tmp_path.iterdir())  # no run directory, no checkpoint

    with pytest.raises(ValueError) as err:
        JointModels.load(expression)
    assert str(err.value) == (f"{expression} holds the scmc expression encoder, expected the scmc finetune: "
                              "use an output of finetune_scmc_<visual>")
    weights, _ = finetuned
    header = load_published(weights)
    assert (header["stage"], header["kind"], header["modality"]) == ("scmc", "finetune", "expression")
    assert header["fingerprint"] != load_published(expression)["fingerprint"]


def test_no_test_clip_is_in_a_training_pair(files):
    """Every SCMC trainer draws its batches from the train split of the aligned pairs."""
    pairs = pd.read_parquet(files[0] / "pairs.parquet")
    train = pairs[pairs.split == "train"]
    assert len(train) and not train.neutral_clip.isin(["003"]).any() and not train["clip"].isin(["003"]).any()
    assert set(pairs[pairs.split == "val"].neutral_clip) == {"003"}


def test_a_pair_with_a_test_clip_on_either_side_is_held_out():
    manifest = pd.DataFrame({"actor": "A", "emotion": ["neutral"] * 3 + ["disgusted"] * 3, "level": [1] * 3 + [3] * 3,
                             "clip": ["001", "002", "003", "028", "029", "030"]})
    pairing = Pairing(count=3, offsets=(("disgusted", 27),), test_clips=("029",))
    splits = {(src.clip, dst.clip): split for src, dst, _, split in clip_pairs(manifest, pairing)}
    assert splits == {("001", "028"): "train", ("002", "029"): "val", ("003", "030"): "train"}

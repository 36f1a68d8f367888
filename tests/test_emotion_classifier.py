"""The emotion classifier, the manipulator's judge: trained on the training clips of a small
built-in corpus, it names the emotion of the real held-out clips, its file reloads to the same
predictions, and a wrong file is one clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scmcl.config import validate_config
from scmcl.corpus.manifest import scan_mead
from scmcl.corpus.synth import synth_actor
from scmcl.io.atomic import write_parquet
from scmcl.io.clip_data import expression_view51, read_expressions
from scmcl.manipulator.classifier import ClassifierSettings, load_classifier, predict, save_classifier, train_classifier
from scmcl.train.loop import WeightFileError
from tests.conftest import synth_settings
from tests.helpers import truth_expression_table

pytestmark = pytest.mark.training

ACTOR = "SYN04"
EMOTIONS = ["neutral", "angry", "happy", "sad"]
HELD_OUT = ["003"]


@pytest.fixture(scope="module")
def expressions(tmp_path_factory, head_files):
    """Four emotions, three sentences (clip 003 held out), small frames: only the tables are read."""
    root = tmp_path_factory.mktemp("classifier_corpus")
    synth_actor(*head_files, root, ACTOR, EMOTIONS, [3], 3, synth_settings(resolution=64))
    path = root / "expressions.parquet"
    write_parquet(truth_expression_table(root, scan_mead(root, actors=[ACTOR], emotions=EMOTIONS, levels=[3])), path)
    return path


def settings(**overrides) -> ClassifierSettings:
    """The schema's classifier settings, with a short run for the test."""
    config = validate_config({"manipulator": {"classifier": {"steps": 300, "hidden_widths": [64], **overrides}}})
    return ClassifierSettings.from_config(config)


@pytest.fixture(scope="module")
def trained(expressions):
    return train_classifier([expressions], EMOTIONS, HELD_OUT, settings(), "cpu")


def test_held_out_accuracy_is_well_above_chance(trained):
    _, report = trained
    assert json.loads(json.dumps(report)) == report  # a rule writes it as JSON as it is
    assert report["test_clips"] == HELD_OUT and report["train_clips"] == 8  # 001, 002 of each emotion
    assert report["chance"] == pytest.approx(1 / len(EMOTIONS))
    assert report["accuracy"] > 2 * report["chance"]
    assert set(report["per_emotion"]) == set(EMOTIONS)
    for emotion, entry in report["per_emotion"].items():
        assert entry["frames"] > 0 and entry["accuracy"] > 2 * report["chance"], emotion
    confusion = np.array(report["confusion"])
    assert confusion.shape == (4, 4) and confusion.sum() == report["frames"]
    assert [row.sum() for row in confusion] == [report["per_emotion"][e]["frames"] for e in EMOTIONS]
    assert {clip["clip"].split("/")[-1] for clip in report["clips"]} == set(HELD_OUT)


def test_predict_labels_every_frame_of_a_held_out_clip(trained, expressions):
    model, _ = trained
    table = read_expressions(expressions)
    rows = table[(table["emotion"] == "sad") & (table["clip"] == "003")].sort_values("frame")
    frames = expression_view51(rows)
    labels, probs = predict(model, frames)
    assert len(labels) == len(frames) and probs.shape == (len(frames), len(EMOTIONS))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.mean(np.array(labels) == "sad") > 0.5
    short_labels, short_probs = predict(model, frames[:4])  # shorter than a window
    assert len(short_labels) == 4 and short_probs.shape == (4, len(EMOTIONS))


def test_training_is_seeded(expressions, trained):
    model, report = trained
    again, report_again = train_classifier([expressions], EMOTIONS, HELD_OUT, settings(), "cpu")
    assert report_again["confusion"] == report["confusion"]
    frames = np.random.default_rng(0).normal(size=(30, 51)).astype(np.float32)
    np.testing.assert_allclose(predict(again, frames)[1], predict(model, frames)[1], atol=1e-5)


def test_save_load_round_trip_predicts_the_same(trained, expressions, tmp_path):
    model, report = trained
    save_classifier(tmp_path / "classifier.pt", model, report)
    loaded, loaded_report = load_classifier(tmp_path / "classifier.pt")
    assert loaded_report == report and loaded.emotions == EMOTIONS
    frames = expression_view51(read_expressions(expressions).sort_values(["emotion", "clip", "frame"]))
    labels, probs = predict(model, frames)
    loaded_labels, loaded_probs = predict(loaded, frames)
    assert loaded_labels == labels
    np.testing.assert_array_equal(loaded_probs, probs)


def test_a_wrong_file_is_one_line_naming_it(tmp_path):
    other = tmp_path / "audio.pt"
    torch.save({"stage": "scmc", "kind": "encoder", "modality": "audio", "fingerprint": "x"}, other)
    with pytest.raises(WeightFileError) as err:
        load_classifier(other)
    assert str(other) in str(err.value) and "expected the manipulator classifier" in str(err.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightFileError) as err:
        load_classifier(garbage)
    assert str(garbage) in str(err.value) and "\n" not in str(err.value)


def test_a_split_without_held_out_clips_is_refused(expressions):
    with pytest.raises(ValueError, match="no clip has a held-out id \\(009\\)"):
        train_classifier([expressions], EMOTIONS, ["009"], settings(steps=1), "cpu")
    with pytest.raises(ValueError, match="no training clip of neutral, angry, happy, sad"):
        train_classifier([expressions], EMOTIONS, ["001", "002", "003"], settings(steps=1), "cpu")

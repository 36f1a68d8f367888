"""The built-in corpus as a user checks it: MEAD's layout, synchronised audio, visemes, a
mouth that moves with the speech, and the paired ground truth."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from scmcl.corpus.layout import ClipKey, audio_path, clip_keys, groundtruth_path, video_path
from scmcl.corpus.synth import Generator
from scmcl.corpus.visemes import viseme_sequence
from scmcl.io.media import probe, read_frames
from tests.conftest import ACTOR, EMOTIONS, SETTINGS

@pytest.fixture(scope="session")
def generator(head_files):
    return Generator(*head_files, ACTOR, SETTINGS)


MEAD_FILE = re.compile(
    r"^(?P<actor>\w+)/(?:video/front|audio|groundtruth)/(?P<emotion>[a-z]+)/level_(?P<level>[123])/\d{3}\.(mp4|m4a|parquet)$"
)


def test_layout_is_meads(corpus):
    files = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file())
    assert files, "no files written"
    for name in files:
        match = MEAD_FILE.match(name)
        assert match, f"not MEAD's layout: {name}"
        assert (match["emotion"] == "neutral") == (match["level"] == "1"), name
    expected = clip_keys(EMOTIONS, [3], 1)
    for key in expected:
        for path_of in (video_path, audio_path, groundtruth_path):
            assert path_of(corpus, ACTOR, key).is_file()
    assert len(files) == 3 * len(expected), "stray files in the corpus tree"


def test_video_and_audio_durations_agree(corpus):
    for key in clip_keys(EMOTIONS, [3], 1):
        video = probe(video_path(corpus, ACTOR, key))
        track = probe(audio_path(corpus, ACTOR, key))
        frame = 1.0 / SETTINGS.fps
        assert video.fps == pytest.approx(SETTINGS.fps)
        assert abs(video.video_duration - video.audio_duration) <= frame
        assert abs(video.video_duration - track.audio_duration) <= frame
        assert track.sample_rate == SETTINGS.sample_rate
        table = pd.read_parquet(groundtruth_path(corpus, ACTOR, key))
        assert len(table) == video.frames


def test_same_sentence_same_visemes_different_timing(generator):
    neutral = generator.speech(ClipKey("neutral", 1, "001"))
    sad = generator.speech(ClipKey("sad", 3, "001"))
    assert viseme_sequence(neutral.phones) == viseme_sequence(sad.phones)
    assert len(viseme_sequence(neutral.phones)) > 10
    starts_a = np.array([p.start for p in neutral.phones])
    starts_b = np.array([p.start for p in sad.phones])
    assert len(starts_a) == len(starts_b) and not np.allclose(starts_a, starts_b, atol=0.02)


def test_groundtruth_table_holds_every_parameter(corpus):
    table = pd.read_parquet(groundtruth_path(corpus, ACTOR, ClipKey("happy", 3, "001")))
    for prefix, count in [("exp_", 25), ("pose_", 6), ("neck_pose_", 3), ("eye_pose_", 6), ("cam_", 3),
                          ("lmk_x_", 68), ("lmk_y_", 68)]:
        assert sum(c.startswith(prefix) for c in table.columns) == count, prefix
    assert set(table["emotion"]) == {"happy"} and set(table["level"]) == {3}
    assert table["viseme"].nunique() > 3
    np.testing.assert_allclose(table["jaw_open"], table["pose_03"], rtol=1e-6)


def test_mouth_opens_and_closes_with_speech(corpus):
    key = ClipKey("neutral", 1, "001")
    table = pd.read_parquet(groundtruth_path(corpus, ACTOR, key))
    frames = read_frames(video_path(corpus, ACTOR, key)).astype(np.float32).mean(axis=-1)
    jaw = table["jaw_open"].to_numpy()
    assert jaw.max() > 0.15 and jaw.min() < 0.03, "the jaw should both open and close"
    gap = table["lmk_y_66"] - table["lmk_y_62"]
    assert np.corrcoef(jaw, gap)[0, 1] > 0.9, "inner lips follow the jaw"
    # Pixels between the inner lips are darker when the mouth is open (the cavity shows).
    darkness = []
    for t in range(len(table)):
        x = int(round((table.at[t, "lmk_x_62"] + table.at[t, "lmk_x_66"]) / 2))
        y = int(round((table.at[t, "lmk_y_62"] + table.at[t, "lmk_y_66"]) / 2))
        darkness.append(-frames[t, y - 1 : y + 2, x - 1 : x + 2].mean())
    order = np.argsort(jaw)
    k = max(3, len(jaw) // 8)
    assert np.mean(np.array(darkness)[order[-k:]]) > np.mean(np.array(darkness)[order[:k]]) + 20


def test_paired_ground_truth_keeps_timing_changes_emotion(generator, corpus, tmp_path):
    key = ClipKey("neutral", 1, "001")
    target = generator.write_paired(tmp_path, key, "happy", 3)
    assert target == ClipKey("happy", 3, "001")
    source = pd.read_parquet(groundtruth_path(corpus, ACTOR, key))
    paired = pd.read_parquet(groundtruth_path(tmp_path, ACTOR, target))  # MEAD's layout, like the corpus
    assert len(paired) == len(source) == probe(video_path(tmp_path, ACTOR, target)).frames
    assert probe(audio_path(tmp_path, ACTOR, target)).sample_rate == SETTINGS.sample_rate
    np.testing.assert_array_equal(paired["viseme"], source["viseme"])
    np.testing.assert_allclose(paired[["pose_00", "pose_01", "pose_02"]], source[["pose_00", "pose_01", "pose_02"]])
    smile = paired["exp_06"] - source["exp_06"]  # mouth_corner_up_left
    assert smile.mean() > 0.3
    assert set(paired["emotion"]) == {"happy"}


def test_paired_ground_truth_never_replaces_a_corpus_clip(generator, corpus):
    """In the corpus's own root the paired clip would take the name of the corpus's happy clip 001."""
    before = video_path(corpus, ACTOR, ClipKey("happy", 3, "001")).stat().st_mtime_ns
    with pytest.raises(ValueError, match="a tree of its own"):
        generator.write_paired(corpus, ClipKey("neutral", 1, "001"), "happy", 3)
    with pytest.raises(ValueError, match="is the clip itself"):
        generator.write_paired(corpus, ClipKey("happy", 3, "001"), "happy", 3)
    assert video_path(corpus, ACTOR, ClipKey("happy", 3, "001")).stat().st_mtime_ns == before

"""SCMC training data on hand-made tables: the frame sources return the frames the aligned
pairs name, and every index a source cannot serve is an error when the data is set up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scmcl.io import clip_data as cd
from scmcl.io.stacks import write_stack
from scmcl.scmc.data import ExpressionFrames, ImageFrames, Pairs
from scmcl.scmc.dists import actor_clips

NEUTRAL, HAPPY = ("SYN01", "neutral", 1, "001"), ("SYN01", "happy", 3, "001")
LENGTHS = {NEUTRAL: 10, HAPPY: 12}
# A DTW path: the neutral clip's last frame is held while the happy clip finishes.
SRC = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9])
DST = np.arange(12)


def _manifest(frames: dict | None = None) -> pd.DataFrame:
    lengths = {**LENGTHS, **(frames or {})}
    rows = [dict(zip(cd.CLIP_KEY, key), audio=f"{key[1]}.m4a", fps=25.0, frames=lengths[key]) for key in (NEUTRAL, HAPPY)]
    return pd.DataFrame(rows)


def _aligned() -> pd.DataFrame:
    return pd.DataFrame({"actor": "SYN01", "emotion": "happy", "level": 3, "neutral_clip": "001", "clip": "001", "pair": 0,
                         "split": "train", "step": np.arange(len(SRC)), "neutral_frame": SRC, "emotion_frame": DST})


def _expressions(path, happy_frames: int = 12):
    """Expression rows whose exp_00 is 100·clip + frame, so a looked-up row tells where it came from."""
    parts = []
    for code, (key, n) in enumerate(((NEUTRAL, 10), (HAPPY, happy_frames))):
        exp = np.zeros((n, 50))
        exp[:, 0] = 100 * code + np.arange(n)
        parts.append(cd.expression_rows(key, np.arange(n), np.zeros((n, 3)), exp))
    pd.concat(parts, ignore_index=True).to_parquet(path)
    return path


def test_pairs_leave_out_steps_whose_next_frame_passes_the_clip_end():
    every = Pairs.load(_aligned(), _manifest(), "train")
    assert len(every) == 12 and every.clips.last_frame.tolist() == [11, 9]  # clips sorted: happy, neutral
    fused = Pairs.load(_aligned(), _manifest(), "train", context=1)
    assert fused.step.tolist() == list(range(9))  # frame 9 of the neutral clip has no frame 10
    assert fused.clips.last_frame.tolist() == [9, 9]


def test_pairs_past_the_manifest_fail_when_loaded():
    with pytest.raises(ValueError, match=r"^the aligned pairs use frame 11 of clip SYN01/happy/level_3/001, which has 11 frames "
                                         r"in the manifest: rerun align_audio \(scmcl scmc align\)$"):
        Pairs.load(_aligned(), _manifest({HAPPY: 11}), "train")


def test_expression_frames_are_the_rows_the_pairs_name(tmp_path):
    pairs = Pairs.load(_aligned(), _manifest(), "train")
    source = ExpressionFrames(pairs.clips, [_expressions(tmp_path / "expressions.parquet")])
    x = source(pairs.dst_clip, pairs.dst_frame)
    assert x.shape == (12, 1, 51)
    np.testing.assert_array_equal(x[:, 0, 1].numpy(), 100 + DST)
    np.testing.assert_array_equal(source(pairs.src_clip, pairs.src_frame)[:, 0, 1].numpy(), SRC)


def test_a_short_expression_table_fails_when_set_up(tmp_path):
    path = _expressions(tmp_path / "expressions.parquet", happy_frames=8)
    pairs = Pairs.load(_aligned(), _manifest(), "train")
    with pytest.raises(ValueError, match=rf"^{path}: clip SYN01/happy/level_3/001 has 8 frames but the aligned pairs use frame 11: "
                                         r"rerun expression_table for SYN01 \(scmcl preprocess expressions\)$"):
        ExpressionFrames(pairs.clips, [path])
    with pytest.raises(cd.MissingInput, match=r"nope\.parquet is missing: rerun expression_table"):
        ExpressionFrames(pairs.clips, [tmp_path / "nope.parquet"])


def test_a_short_image_stack_fails_when_set_up(tmp_path):
    shards = []
    for key in (NEUTRAL, HAPPY):
        directory = tmp_path / key[1]
        write_stack(cd.stack_path(directory, cd.FACES_ALIGNED), np.zeros((10, 8, 8, 3), np.uint8))  # happy needs 12
        shards.append(dict(zip(cd.CLIP_KEY, key), directory=str(directory)))
    pd.DataFrame(shards).to_parquet(tmp_path / "shards.parquet")
    pairs = Pairs.load(_aligned(), _manifest(), "train")
    stack = cd.stack_path(tmp_path / "happy", cd.FACES_ALIGNED)
    with pytest.raises(ValueError, match=rf"^{stack}: clip SYN01/happy/level_3/001 has 10 frames but the aligned pairs use frame 11: "
                                         r"rerun preprocess_shard for SYN01/happy \(scmcl preprocess shard\)$"):
        ImageFrames(pairs.clips, [tmp_path / "shards.parquet"], 8, 0.0)
    fused = Pairs.load(_aligned(), _manifest(), "train", context=1)  # reads up to frame 9 of both
    assert ImageFrames(fused.clips, [tmp_path / "shards.parquet"], 8, 0.0)(fused.dst_clip, fused.dst_frame).shape == (9, 3, 8, 8)


def test_dists_of_an_unknown_actor_name_the_known_ones(tmp_path):
    path = _expressions(tmp_path / "expressions.parquet")
    with pytest.raises(ValueError, match=r"^actor SYN09 is not in the expression table, which has SYN01: check --actor"):
        actor_clips(_manifest(), pd.read_parquet(path), "SYN09")
    with pytest.raises(ValueError, match=rf"^actor SYN09 is not in {path}, which has SYN01"):
        actor_clips(_manifest(), path, "SYN09")
    clips = actor_clips(_manifest(), path, "SYN01")
    assert clips.frames.tolist() == [12, 10] and clips.audio.tolist() == ["happy.m4a", "neutral.m4a"]

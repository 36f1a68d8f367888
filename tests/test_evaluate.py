"""The evaluation's parts on known answers: landmark figures, the loudness envelope, the naive
baseline edit, faces cut from a video exactly as preprocessing cut them, the face classifier
(learns, reports, reloads strictly), the table's averages, and the report's sheets and page."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from scmcl.edit.video import edited51_of
from scmcl.evaluate.face_classifier import (
    FaceClassifierSettings,
    judge,
    load_face_classifier,
    save_face_classifier,
    train_face_classifier,
)
from scmcl.evaluate.faces import clip_faces
from scmcl.evaluate.motion import MOUTH, correlation, jitter, loudness, mouth_distance, mouth_opening
from scmcl.evaluate.naive import emotion_offset, naive_edit
from scmcl.evaluate.report import contact_sheet, videos_page
from scmcl.evaluate.score import FIGURES
from scmcl.evaluate.table import evaluation_table
from scmcl.io.atomic import write_parquet
from scmcl.io.clip_data import FACES_ALIGNED, EXPRESSION_COLUMNS, expression_rows, read_clip_stack
from scmcl.io.media import read_frames, write_video
from scmcl.io.stacks import write_stack
from scmcl.train.loop import WeightFileError


def _face_points(frames: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(20, 100, size=(frames, 68, 2))


def test_mouth_distance_is_the_mean_mouth_point_offset_on_frames_both_tracked():
    points = _face_points(10, np.random.default_rng(0))
    moved = points.copy()
    moved[:, MOUTH] += [3.0, 4.0]  # 5 px at every mouth point
    moved[:, :48] += 50.0  # the rest of the face does not count
    moved[2] = np.nan  # an untracked frame is left out
    assert mouth_distance(points, points) == 0
    assert mouth_distance(points, moved) == pytest.approx(5.0)
    assert np.isnan(mouth_distance(points, np.full_like(points, np.nan)))


def test_jitter_is_zero_for_steady_motion_and_the_second_difference_otherwise():
    t = np.arange(12, dtype=float)[:, None, None]
    steady = np.broadcast_to(t * [1.0, 2.0], (12, 68, 2)).copy()
    assert jitter(steady) == pytest.approx(0.0, abs=1e-12)
    shaking = steady.copy()
    shaking[::2, :, 0] += 1.0  # x alternates by 1 px: second difference of norm 2
    assert jitter(shaking) == pytest.approx(2.0)


def test_mouth_opening_follows_the_inner_lips_over_the_eye_distance():
    points = np.zeros((2, 68, 2))
    points[:, 36], points[:, 45] = [0.0, 0.0], [40.0, 0.0]
    points[1, [67, 66, 65], 1] = 10.0  # lower inner lip 10 px below the upper one
    assert mouth_opening(points) == pytest.approx([0.0, 0.25])


def test_loudness_is_high_where_the_audio_is_loud_and_correlation_skips_gaps():
    sr, fps = 16000, 25
    samples = np.zeros(sr * 2, np.float32)
    samples[sr:] = 0.5 * np.sin(np.arange(sr) * 2 * np.pi * 220 / sr)
    envelope = loudness(samples, sr, fps, 50)
    assert envelope.shape == (50,) and envelope[:20].max() < 1e-6 and envelope[30:].min() > 0.3
    a = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    assert correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert np.isnan(correlation(a, np.ones(5)))


def _expression_table(actor="SYN01") -> pd.DataFrame:
    """Neutral and happy clips 001/002 (training) and 003 (test) with known expressions: happy
    adds 1.0 to expression 0 in training clips, the held-out happy clip adds 9.0."""
    rows = []
    for emotion, level in (("neutral", 1), ("happy", 3)):
        for clip, shift in (("001", 1.0), ("002", 1.0), ("003", 9.0)):
            exp = np.zeros((5, 50), np.float32)
            exp[:, 1] = np.arange(5)
            if emotion == "happy":
                exp[:, 0] += shift
            jaw = np.tile(np.linspace(0, 0.2, 5, dtype=np.float32)[:, None], (1, 3))
            rows.append(expression_rows((actor, emotion, level, clip), np.arange(5), jaw, exp))
    return pd.concat(rows, ignore_index=True)[EXPRESSION_COLUMNS]


def test_naive_offset_is_the_training_clips_emotion_mean_minus_neutral_without_the_jaw(tmp_path):
    table = _expression_table()
    offset = emotion_offset(table, "SYN01", "happy", ["003"], "table")
    expected = np.zeros(51)
    expected[1] = 1.0  # expression 0 (the test clip's 9.0 is held out); the jaw is index 0
    np.testing.assert_allclose(offset, expected, atol=1e-6)

    write_parquet(table, tmp_path / "expressions.parquet")
    record = naive_edit(tmp_path / "expressions.parquet", "SYN01", ("neutral", 1, "003"), "happy", ["003"],
                        tmp_path / "edit.parquet", tmp_path / "edit.json")
    edited = edited51_of(tmp_path / "edit.parquet", 5, "source")  # the video path reads it as any edit
    source = table[(table.emotion == "neutral") & (table["clip"] == "003")]
    np.testing.assert_allclose(edited[:, 0], source.jaw_pose_0, atol=1e-6)  # the speech is kept
    np.testing.assert_allclose(edited[:, 1], 1.0, atol=1e-6)
    assert record["offset_norm"] == pytest.approx(1.0) and json.loads((tmp_path / "edit.json").read_text())["source"]
    with pytest.raises(ValueError, match="no sad training clip of SYN01"):
        emotion_offset(table, "SYN01", "sad", ["003"], "table")


def test_a_clips_own_video_cuts_to_its_preprocessed_faces_exactly(preprocessed, corpus):
    table = pd.read_parquet(preprocessed[0])
    clip_dir = table.directory.iloc[0]
    video = corpus / "SYN01/video/front" / table.emotion.iloc[0] / f"level_{table.level.iloc[0]}" / f"{table['clip'].iloc[0]}.mp4"
    faces, masks = clip_faces(read_frames(video), clip_dir)
    stored = read_clip_stack(clip_dir, FACES_ALIGNED)
    assert faces.shape == stored.shape and masks.any()
    assert np.abs(faces.astype(int) - stored).max() <= 1
    with pytest.raises(ValueError, match="frames but its preprocessed clip"):
        clip_faces(read_frames(video)[:-1], clip_dir)


def _face_clips(root, rng) -> list[str]:
    """Shard tables of two actors × three emotions × clips 001-003 whose faces are noise, an
    actor's tint and an emotion's texture (none, horizontal or vertical lines)."""
    shards = []
    for a, actor in enumerate(["A1", "A2"]):
        for e, emotion in enumerate(["neutral", "happy", "sad"]):
            rows = []
            for clip in ["001", "002", "003"]:
                faces = rng.integers(0, 40, size=(12, 32, 32, 3)).astype(np.uint8)
                faces[..., a] += 100
                if e == 1:
                    faces[:, ::4] += 80
                elif e == 2:
                    faces[:, :, ::4] += 80
                directory = root / actor / emotion / clip
                directory.mkdir(parents=True)
                write_stack(directory / f"{FACES_ALIGNED}.npy", faces)
                rows.append({"actor": actor, "emotion": emotion, "level": 1, "clip": clip, "directory": str(directory)})
            write_parquet(pd.DataFrame(rows), root / f"{actor}_{emotion}.parquet")
            shards.append(str(root / f"{actor}_{emotion}.parquet"))
    return shards


def test_the_face_classifier_learns_emotion_and_actor_and_reloads_strictly(tmp_path):
    shards = _face_clips(tmp_path, np.random.default_rng(0))
    settings = FaceClassifierSettings(size=32, widths=(8, 16), steps=150, batch_size=32, lr=3e-3, seed=0)
    model, report = train_face_classifier(shards, ["neutral", "happy", "sad"], ["003"], settings, "cpu")
    assert report["emotion_accuracy"] > 0.9 and report["actor_accuracy"] > 0.9  # on the held-out 003 clips
    assert report["frames"] == 2 * 3 * 12 and report["identity_similarity"] > 0.5

    save_face_classifier(tmp_path / "faces.pt", model, report)
    loaded, again = load_face_classifier(tmp_path / "faces.pt")
    faces = read_clip_stack(tmp_path / "A2/sad/003", FACES_ALIGNED)
    first, second = judge(model, faces, "A2"), judge(loaded, faces, "A2")
    np.testing.assert_array_equal(first.emotion, second.emotion)
    np.testing.assert_allclose(first.identity, second.identity, rtol=1e-5)
    assert again == report and (first.emotion == 2).mean() > 0.9
    with pytest.raises(ValueError, match="not A9"):
        judge(model, faces, "A9")
    torch.save({"not": "a classifier"}, tmp_path / "wrong.pt")
    with pytest.raises(WeightFileError, match="wrong.pt"):
        load_face_classifier(tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="no clip has a held-out id"):
        train_face_classifier(shards, ["neutral", "happy", "sad"], ["009"], settings, "cpu")


def test_the_table_averages_each_row_per_emotion_and_over_emotions_in_row_order(tmp_path):
    paths = []
    for row, base in (("scmcl", 2.0), ("source", 1.0)):  # written out of order
        lines = [{"row": row, "actor": actor, "clip": "003", "emotion": emotion,
                  **{f: base + i + (10 if actor == "SYN02" else 0) for f in FIGURES}}
                 for actor in ("SYN01", "SYN02") for i, emotion in enumerate(["happy", "sad"])]
        paths.append(tmp_path / f"{row}.tsv")
        pd.DataFrame(lines).to_csv(paths[-1], sep="\t", index=False)
    table = evaluation_table(paths, tmp_path / "evaluation.tsv")
    assert list(zip(table.row, table.emotion)) == [("source", "happy"), ("source", "sad"), ("source", "mean"),
                                                   ("scmcl", "happy"), ("scmcl", "sad"), ("scmcl", "mean")]
    assert table.m_lmd.tolist() == pytest.approx([6.0, 7.0, 6.5, 7.0, 8.0, 7.5])  # (base + i + base + i + 10) / 2
    assert table.videos.tolist() == [2, 2, 4, 2, 2, 4]
    assert pd.read_csv(tmp_path / "evaluation.tsv", sep="\t").shape == table.shape


def test_contact_sheet_and_video_page(tmp_path):
    rng = np.random.default_rng(0)
    videos = []
    for name in ("a", "b"):
        write_video(tmp_path / f"{name}.mp4", rng.integers(0, 255, size=(10, 32, 48, 3)).astype(np.uint8), 25)
        videos.append(str(tmp_path / f"{name}.mp4"))
    contact_sheet([("source", videos[0]), ("edit", videos[1])], 3, tmp_path / "sheet.png")
    import cv2

    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet.shape == (18 + 3 * 32, 2 * 48, 3)  # a label bar over three frames, per column

    videos_page([("SYN01 happy", [("source", videos[0]), ("edit", videos[1])])], "Edited videos", tmp_path / "page")
    page = (tmp_path / "page/index.html").read_text()
    assert page.count("<video") == 2 and "SYN01 happy" in page
    for name in ("00_0_a.mp4", "00_1_b.mp4"):
        assert f'src="{name}"' in page and (tmp_path / "page" / name).stat().st_size > 0
    assert not (tmp_path / "page.partial").exists()

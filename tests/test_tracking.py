"""Face tracking: the three backends, the shared post-processing and the ``track`` command."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage import data

from scmcl.io.clip_data import BLOCKS, ClipDataError, MissingInput, frames_table, read_block
from scmcl.preprocess.track_cli import read_media, register
from scmcl.preprocess.tracking import (
    FAN_URL,
    FAN_WEIGHTS,
    Detections,
    TrackingError,
    crop_frames,
    invert_matrices,
    make_tracker,
    smooth_boxes,
    square_boxes,
    track_clip,
    transform_points,
)

try:
    import dlib  # noqa: F401

    HAVE_DLIB = True
except ImportError:
    HAVE_DLIB = False

needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason="dlib is not installed: pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg binary is not on PATH")

ASTRONAUT_BOX = np.array([179, 83, 266, 170])  # dlib's HOG box on skimage's astronaut (stack.md §4)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()[None]


@pytest.fixture(scope="module")
def dlib_tracker():
    return make_tracker("dlib")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scmcl")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run_track(*argv: str) -> int:
    args = _parser().parse_args(["track", *argv])
    return args.func(args)


# --- dlib ---------------------------------------------------------------------------------------

@needs_dlib
def test_dlib_finds_astronaut_landmarks(dlib_tracker, astronaut):
    det = dlib_tracker.detect(astronaut)
    assert det.found.tolist() == [True]
    assert det.landmarks.shape == (1, 68, 2) and np.isfinite(det.landmarks).all()
    np.testing.assert_allclose(det.boxes[0], ASTRONAUT_BOX, atol=6)
    pts = det.landmarks[0]
    lo, hi = ASTRONAUT_BOX[:2] - 12, ASTRONAUT_BOX[2:] + 12
    assert ((pts >= lo) & (pts <= hi)).all()
    eyes, mouth = pts[36:48], pts[48:68]
    assert eyes[:, 1].max() < mouth[:, 1].min()  # eyes above the mouth (y grows down)
    assert pts[27:31, 1].mean() < pts[48:68, 1].mean()  # nose bridge above the mouth
    # Image left is the subject's right: jaw 0, right-eye corner 36 and mouth corner 48 lie left.
    assert pts[0, 0] < pts[16, 0] and pts[36, 0] < pts[45, 0] and pts[48, 0] < pts[54, 0]
    assert pts[36:42, 0].mean() < pts[42:48, 0].mean()
    assert np.argmax(pts[:17, 1]) in (7, 8, 9)  # the chin is the jaw's lowest point


@needs_dlib
def test_dlib_frame_without_face(dlib_tracker, astronaut):
    frames = np.concatenate([np.zeros_like(astronaut), astronaut])
    det = dlib_tracker.detect(frames)
    assert det.found.tolist() == [False, True]
    assert np.isnan(det.boxes[0]).all() and np.isnan(det.landmarks[0]).all()


def test_dlib_missing_package_names_both(monkeypatch):
    import importlib.util
    import sys

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(TrackingError, match=r"dlib-bin.*face-recognition-models.*pip install"):
        make_tracker("dlib")


@needs_dlib
def test_track_command_on_png(tmp_path, dlib_tracker, astronaut):
    png = tmp_path / "astronaut.png"
    cv2.imwrite(str(png), cv2.cvtColor(astronaut[0], cv2.COLOR_RGB2BGR))
    out = tmp_path / "track.parquet"
    assert _run_track(str(png), "--backend", "dlib", "--out", str(out)) == 0
    table = pd.read_parquet(out)
    # The naming of a preprocessed clip's frames.parquet: box_00..03, lmk_x_00..67, lmk_y_00..67.
    assert list(table.columns) == ["frame", "found", *BLOCKS["box"].columns(), *BLOCKS["landmarks"].columns()]
    assert len(table) == 1 and bool(table.found[0])
    np.testing.assert_array_equal(read_media(png), astronaut)  # decoded as RGB, not cv2's BGR
    direct = dlib_tracker.detect(astronaut)
    np.testing.assert_allclose(read_block(table, "landmarks"), direct.landmarks, atol=1e-3)
    np.testing.assert_allclose(read_block(table, "box"), direct.boxes)


@needs_dlib
@needs_ffmpeg
def test_track_command_on_video(tmp_path, astronaut):
    from scmcl.io.media import write_video

    video = tmp_path / "clip.mp4"
    write_video(video, np.concatenate([astronaut] * 3), fps=25.0)
    out = tmp_path / "track.parquet"
    assert _run_track(str(video), "--backend", "dlib", "--out", str(out)) == 0
    table = pd.read_parquet(out)
    assert table.frame.tolist() == [0, 1, 2] and table.found.all()


def test_track_command_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        _run_track(str(tmp_path / "nope.png"), "--backend", "dlib", "--out", str(tmp_path / "x.parquet"))


# --- fan ----------------------------------------------------------------------------------------

def test_fan_missing_weights_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    with pytest.raises(TrackingError) as err:
        make_tracker("fan")
    message = str(err.value)
    assert all(name in message for name in FAN_WEIGHTS) and str(folder) in message and FAN_URL in message
    folder.mkdir(parents=True)
    (folder / FAN_WEIGHTS[0]).write_bytes(b"")  # one of the two is not enough
    with pytest.raises(TrackingError, match=f"missing: {FAN_WEIGHTS[1]}"):
        make_tracker("fan")


def test_fan_corrupt_weights_name_the_file_to_delete(tmp_path, monkeypatch):
    """A truncated or garbage download in the hub cache is named, with what to do about it."""
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), folder / FAN_WEIGHTS[0])
    (folder / FAN_WEIGHTS[1]).write_bytes(b"<html>502 Bad Gateway</html>")
    with pytest.raises(TrackingError) as err:
        make_tracker("fan")
    assert str(err.value).startswith(f"{folder / FAN_WEIGHTS[1]} is not a readable PyTorch checkpoint")
    assert "delete it and download it again" in str(err.value) and f"{FAN_URL}{FAN_WEIGHTS[1]}" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def fan_tracker(tmp_path_factory):
    """FAN with random weights saved under the official names, as face-alignment 1.5.0 loads
    them: plain state_dicts for both (S3FD via torch.hub, 2DFAN4 via torch.load)."""
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), folder / FAN_WEIGHTS[0])
    torch.save(FAN(4).state_dict(), folder / FAN_WEIGHTS[1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        return make_tracker("fan", device="cpu", batch_size=2)


def test_fan_offline_shapes_and_batched_points(fan_tracker):
    frames = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    det = fan_tracker.detect(frames)  # random S3FD: meaningless but well-formed boxes
    assert det.boxes.shape == (2, 4) and det.landmarks.shape == (2, 68, 2) and det.found.shape == (2,)
    boxes = np.array([[24.0, 20.0, 104.0, 108.0], [10.0, 12.0, 90.0, 100.0]])
    det = fan_tracker.detect(frames, boxes=boxes)
    assert det.found.all() and np.isfinite(det.landmarks).all()
    # The batched path equals face-alignment's own per-image API (plus the 0.5 pixel-centre shift);
    # frame 1 is the second item of its batch.
    ref = fan_tracker.fa.get_landmarks_from_image(frames[1], detected_faces=[boxes[1]])[0]
    np.testing.assert_allclose(det.landmarks[1], ref + 0.5, atol=0.3)


def test_make_tracker_rejects_unknown_names_and_options(tmp_path):
    with pytest.raises(ValueError, match="dlib, fan, synthetic"):
        make_tracker("mtcnn")
    with pytest.raises(ValueError, match="synthetic"):
        make_tracker("synthetic", groundtruth=tmp_path / "gt.parquet", sigma=1.0)


# --- synthetic ----------------------------------------------------------------------------------

def _groundtruth(path: Path, landmarks: np.ndarray) -> Path:
    frames_table({"landmarks": landmarks}, viseme=np.zeros(len(landmarks), np.int16)).to_parquet(path)
    return path


def _face_points(frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(40, 100, (frames, 68, 2)) + rng.uniform(-5, 5, (frames, 1, 2))).astype(np.float32).astype(np.float64)


def test_synthetic_returns_groundtruth(tmp_path):
    points = _face_points(3)
    tracker = make_tracker("synthetic", groundtruth=_groundtruth(tmp_path / "gt.parquet", points))
    det = tracker.detect(np.zeros((3, 16, 16, 3), np.uint8))
    np.testing.assert_array_equal(det.landmarks, points)
    np.testing.assert_array_equal(det.boxes[:, :2], points.min(axis=1))
    np.testing.assert_array_equal(det.boxes[:, 2:], points.max(axis=1))
    assert det.found.all()


def test_synthetic_noise_has_the_requested_scale(tmp_path):
    points = _face_points(300)
    gt = _groundtruth(tmp_path / "gt.parquet", points)
    frames = np.zeros((300, 8, 8, 3), np.uint8)
    noisy = make_tracker("synthetic", groundtruth=gt, noise_px=2.0, seed=1).detect(frames)
    residual = noisy.landmarks - points
    assert abs(residual.std() - 2.0) < 0.06 and abs(residual.mean()) < 0.05
    again = make_tracker("synthetic", groundtruth=gt, noise_px=2.0, seed=1).detect(frames)
    other = make_tracker("synthetic", groundtruth=gt, noise_px=2.0, seed=2).detect(frames)
    np.testing.assert_array_equal(again.landmarks, noisy.landmarks)
    assert not np.allclose(other.landmarks, noisy.landmarks)


def test_synthetic_rejects_mismatched_table(tmp_path):
    gt = _groundtruth(tmp_path / "gt.parquet", _face_points(3))
    with pytest.raises(TrackingError, match=r"gt\.parquet has 3 frames but the clip has 4"):
        make_tracker("synthetic", groundtruth=gt).detect(np.zeros((4, 8, 8, 3), np.uint8))
    pd.read_parquet(gt).drop(columns="lmk_y_05").to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ClipDataError, match=r"bad\.parquet has no column lmk_y_05: rerun synth_corpus \(scmcl corpus synth\)$"):
        make_tracker("synthetic", groundtruth=tmp_path / "bad.parquet")


def test_synthetic_missing_groundtruth_says_what_writes_it(tmp_path):
    with pytest.raises(MissingInput, match=r"nope\.parquet is missing: rerun synth_corpus \(scmcl corpus synth\)$"):
        make_tracker("synthetic", groundtruth=tmp_path / "nope.parquet")


# --- post-processing ----------------------------------------------------------------------------

def test_smooth_boxes_fills_gap_and_removes_outlier():
    box = np.array([30.0, 40.0, 90.0, 110.0])
    boxes = np.tile(box, (60, 1))
    found = np.ones(60, bool)
    boxes[20:25], found[20:25] = np.nan, False  # a gap
    boxes[40] += [80, -60, 80, -60]  # a one-frame jump to somewhere else
    smoothed, filled = smooth_boxes(boxes, found, window=49)
    np.testing.assert_allclose(smoothed, np.tile(box, (60, 1)))
    assert np.flatnonzero(filled).tolist() == [20, 21, 22, 23, 24]


def test_smooth_boxes_interpolates_between_neighbours_and_holds_ends():
    ramp = np.tile(np.arange(10.0)[:, None], (1, 4)) * [1, 2, 3, 4]
    found = np.ones(10, bool)
    found[[0, 4, 5, 9]] = False
    smoothed, filled = smooth_boxes(np.where(found[:, None], ramp, np.nan), found, window=1)
    np.testing.assert_allclose(smoothed[1:9], ramp[1:9])  # the gap 4-5 lies on the line 3 → 6
    np.testing.assert_allclose(smoothed[0], ramp[1])
    np.testing.assert_allclose(smoothed[9], ramp[8])
    assert filled.tolist() == (~found).tolist()


def test_smooth_boxes_short_clip_uses_an_odd_window():
    boxes = np.tile([10.0, 10.0, 50.0, 50.0], (4, 1))
    boxes[2] = [60, 60, 90, 90]  # T=4 → window 3, which still removes a one-frame outlier
    smoothed, _ = smooth_boxes(boxes, np.ones(4, bool), window=49)
    np.testing.assert_allclose(smoothed, np.tile([10.0, 10.0, 50.0, 50.0], (4, 1)))


def test_square_boxes_keep_centre():
    boxes = np.array([[30.0, 40.0, 70.0, 100.0], [0.0, 0.0, 50.0, 20.0]])
    out = square_boxes(boxes, margin=0.5)
    np.testing.assert_allclose(out[:, 2] - out[:, 0], [90.0, 75.0])
    np.testing.assert_allclose(out[:, 3] - out[:, 1], [90.0, 75.0])
    np.testing.assert_allclose((out[:, :2] + out[:, 2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2)


@pytest.mark.parametrize("side", [32.0, 128.0])  # upscaled ×2 and area-downscaled ×2
def test_crop_frames_maps_a_known_point(side):
    frame = np.zeros((1, 200, 240, 3), np.uint8)
    frame[0, 62:66, 74:78] = 255  # a 4x4 dot, centre (76, 64) in screen space
    box = np.array([[60.0, 50.0, 60.0 + side, 50.0 + side]])
    crops, matrices = crop_frames(frame, box, 64)
    assert crops.shape == (1, 64, 64, 3)
    weight = crops[0, :, :, 0].astype(float)
    ys, xs = np.mgrid[0:64, 0:64] + 0.5
    centroid = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
    expected = transform_points(np.array([[[76.0, 64.0]]]), matrices)[0, 0]
    np.testing.assert_allclose(centroid, expected, atol=0.05)
    np.testing.assert_allclose(expected, (np.array([76.0, 64.0]) - [60, 50]) * 64 / side)
    back = transform_points(expected[None, None], invert_matrices(matrices))[0, 0]
    np.testing.assert_allclose(back, [76.0, 64.0])


def test_crop_frames_pads_black_outside_the_image():
    frame = np.full((1, 50, 50, 3), 200, np.uint8)
    crops, _ = crop_frames(frame, np.array([[-25.0, 0.0, 25.0, 50.0]]), 50)
    assert (crops[0, :, :25] == 0).all() and (crops[0, :, 25:] == 200).all()


class _NoFace:
    def detect(self, frames: np.ndarray) -> Detections:
        return Detections.empty(len(frames))


def test_track_clip_without_any_face_names_the_clip():
    with pytest.raises(TrackingError, match="M003/angry/level_1/001: no face found in any of its 5 frames"):
        track_clip(np.zeros((5, 32, 32, 3), np.uint8), _NoFace(), 16, 0.3, 49, name="M003/angry/level_1/001")


class _MissEvery:
    """Finds the ground truth except in the frames listed."""

    def __init__(self, points: np.ndarray, missed: list[int]):
        self.points, self.missed = points, missed

    def detect(self, frames: np.ndarray) -> Detections:
        landmarks = self.points.copy()
        landmarks[self.missed] = np.nan
        boxes = np.concatenate([landmarks.min(axis=1), landmarks.max(axis=1)], axis=1)
        return Detections(boxes, landmarks, np.isfinite(landmarks).all(axis=(1, 2)))


def test_track_clip_logs_frames_filled_from_neighbours(caplog):
    points = _face_points(12) + 20
    tracker = _MissEvery(points, [0, 5, 6])
    with caplog.at_level(logging.WARNING, logger="scmcl.preprocess.tracking"):
        clip = track_clip(np.zeros((12, 128, 128, 3), np.uint8), tracker, 32, 0.2, 49, name="SYN01/happy/level_3/001")
    assert np.flatnonzero(clip.filled).tolist() == [0, 5, 6]
    assert [r.getMessage() for r in caplog.records] == ["SYN01/happy/level_3/001: no face in 3 of 12 frames, filled from neighbours"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scmcl.preprocess.tracking"):
        track_clip(np.zeros((12, 128, 128, 3), np.uint8), _MissEvery(points, []), 32, 0.2, 49, name="clip")
    assert caplog.records == []  # every face found: nothing to warn about


def test_track_clip_crops_follow_the_landmarks(tmp_path):
    points = _face_points(6) * 1.5 + 20  # inside a 200x200 frame
    frames = np.zeros((6, 200, 200, 3), np.uint8)
    for t, pts in enumerate(points):
        for x, y in pts.astype(int):
            frames[t, y - 1:y + 2, x - 1:x + 2] = 255
    tracker = make_tracker("synthetic", groundtruth=_groundtruth(tmp_path / "gt.parquet", points))
    clip = track_clip(frames, tracker, crop_size=96, margin=0.2, window=49, name="synthetic clip")
    assert clip.crops.shape == (6, 96, 96, 3) and clip.matrices.shape == (6, 2, 3)
    assert clip.found.all() and not clip.filled.any()
    np.testing.assert_allclose(clip.boxes[:, 2] - clip.boxes[:, 0], clip.boxes[:, 3] - clip.boxes[:, 1])
    np.testing.assert_allclose(clip.landmarks_crop, transform_points(clip.landmarks, clip.matrices))
    assert ((clip.landmarks_crop > 0) & (clip.landmarks_crop < 96)).all()
    cols, rows = np.floor(clip.landmarks_crop).astype(int).transpose(2, 0, 1)
    lit = clip.crops[np.arange(6)[:, None], rows, cols, 0]
    assert (lit > 0).mean() > 0.95  # every drawn point lands where its crop coordinate says

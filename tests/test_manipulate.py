"""Editing a clip with the manipulator (method.md §4.4): style codes from labels and references,
the Gaussian overlap-add of window outputs, intensity curves and blends, and the edited clip as
expression-table rows; on small random networks."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from scmcl.cli import main
from scmcl.config import validate_config
from scmcl.io.atomic import write_parquet
from scmcl.io.clip_data import EXPRESSION_COLUMNS, expression_rows, expression_view51, read_expressions
from scmcl.manipulator.edit import (apply_intensity, edit_sequence, edit_table, gaussian_window, geometric_median,
                                    intensity_curve, label_style, overlap_add, reference_style)
from scmcl.manipulator.checkpoint import save_networks
from scmcl.manipulator.networks import FRAME_SIZE, ManipulatorNets, NetworkSizes
from scmcl.options import settings_flags
from tests.helpers import assert_float32_close

SEQ_LEN = 10
SMALL = NetworkSizes(generator_residual=True, style_size=6, latent_size=4, mapping_hidden=8, lstm_layers=1,
                     generator_frame_widths=(16,), generator_lstm_hidden=8, generator_head_widths=(16,),
                     encoder_frame_widths=(16,), encoder_lstm_hidden=8, encoder_head_widths=(8,))
N_EMOTIONS = 3


@pytest.fixture(scope="module")
def nets() -> ManipulatorNets:
    torch.manual_seed(0)
    return ManipulatorNets(SMALL, N_EMOTIONS).eval()


def _clip(n_frames: int, seed: int) -> np.ndarray:
    """A smooth random (T,51) expression clip."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0, 0.1, (n_frames, FRAME_SIZE)), axis=0).astype(np.float32)


def _cut(sequence: torch.Tensor, length: int) -> torch.Tensor:
    """The hop-1 windows of a (T,C) sequence, (T-length+1, length, C)."""
    return sequence.unfold(0, length, 1).permute(0, 2, 1)


# --- overlap-add --------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [1, 3, 5, 7, 11, 13, 21])
def test_gaussian_window_is_opencvs_kernel(length):
    np.testing.assert_allclose(gaussian_window(length), cv2.getGaussianKernel(length, -1).ravel(), rtol=1e-12)


def test_gaussian_window_of_neds_length():
    weights = gaussian_window(SEQ_LEN)
    x = np.arange(SEQ_LEN) - 4.5
    np.testing.assert_allclose(weights, np.exp(-x ** 2 / (2 * 1.85 ** 2)) / np.exp(-x ** 2 / (2 * 1.85 ** 2)).sum())
    assert weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("n_frames", [3, SEQ_LEN, SEQ_LEN + 4, 2 * SEQ_LEN - 1, 2 * SEQ_LEN, 57])
def test_overlap_add_of_constant_frames_is_that_constant(n_frames):
    per_frame = torch.linspace(-2, 3, FRAME_SIZE)
    windows = per_frame.expand(max(n_frames - SEQ_LEN + 1, 1), SEQ_LEN, FRAME_SIZE)
    out = overlap_add(windows, n_frames)
    assert out.shape == (n_frames, FRAME_SIZE)
    torch.testing.assert_close(out, per_frame.expand(n_frames, -1), rtol=0, atol=0)


@pytest.mark.parametrize("n_frames", [SEQ_LEN, SEQ_LEN + 1, 2 * SEQ_LEN - 1, 40])
def test_overlap_add_of_cut_windows_gives_the_sequence_back(n_frames):
    sequence = torch.from_numpy(_clip(n_frames, seed=n_frames))
    assert_float32_close(overlap_add(_cut(sequence, SEQ_LEN), n_frames), sequence)


def test_overlap_add_matches_neds_loop():
    torch.manual_seed(1)
    n_frames = 30
    windows = torch.randn(n_frames - SEQ_LEN + 1, SEQ_LEN, FRAME_SIZE)
    gaussian = torch.from_numpy(gaussian_window(SEQ_LEN)[:, None])
    expected = torch.zeros(n_frames, FRAME_SIZE, dtype=torch.float64)
    for i, window in enumerate(windows):  # manipulator/test.py
        expected[i:i + SEQ_LEN] += window.double() * gaussian
    expected[:SEQ_LEN - 1] = windows[0, :-1].double()
    expected[-SEQ_LEN + 1:] = windows[-1, 1:].double()
    assert_float32_close(overlap_add(windows, n_frames), expected.float())


def test_overlap_add_short_clip_and_wrong_window_count():
    window = torch.randn(1, SEQ_LEN, FRAME_SIZE)
    torch.testing.assert_close(overlap_add(window, 4), window[0, :4])
    with pytest.raises(ValueError, match="20 frames have 11 hop-1 windows of 10 frames, got 10"):
        overlap_add(torch.zeros(10, SEQ_LEN, FRAME_SIZE), 20)


# --- style codes --------------------------------------------------------------------------------

def test_label_style_is_deterministic_per_seed(nets):
    code = label_style(nets, 1, seed=7)
    assert code.shape == (SMALL.style_size,)
    torch.testing.assert_close(label_style(nets, 1, seed=7), code, rtol=0, atol=0)
    assert not torch.allclose(label_style(nets, 2, seed=7), code)
    assert not torch.allclose(label_style(nets, 1, seed=8), code)
    with pytest.raises(ValueError, match="label 3 is not one of the mapping network's 0..2"):
        label_style(nets, N_EMOTIONS, seed=7)


def test_label_style_leaves_the_global_rng_alone(nets):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    label_style(nets, 0, seed=1)
    torch.testing.assert_close(torch.rand(3), expected)


def test_geometric_median_of_identical_points_is_the_point():
    point = torch.tensor([0.5, -1.25, 3.0])
    torch.testing.assert_close(geometric_median(point.expand(6, -1)), point, rtol=0, atol=0)
    torch.testing.assert_close(geometric_median(point[None]), point, rtol=0, atol=0)


def test_geometric_median_ignores_an_outlier():
    rng = np.random.default_rng(2)
    cluster = rng.normal(1.0, 0.05, (20, 4))
    points = torch.from_numpy(np.vstack([cluster, np.full((1, 4), 1000.0)]))
    median = geometric_median(points)
    assert torch.linalg.vector_norm(median - 1.0) < 0.1
    assert torch.linalg.vector_norm(points.mean(0) - 1.0) > 50
    # it is the minimiser of the summed distances: no nearby point does better
    cost = lambda y: torch.linalg.vector_norm(points - y, dim=1).sum()  # noqa: E731
    for direction in torch.eye(4, dtype=torch.float64):
        assert cost(median) <= cost(median + 1e-3 * direction) and cost(median) <= cost(median - 1e-3 * direction)


def test_geometric_median_when_the_estimate_starts_on_a_point():
    # the mean of these points is the first one: Weiszfeld's plain step would divide by zero
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    median = geometric_median(points)
    assert torch.isfinite(median).all()
    torch.testing.assert_close(median, torch.zeros(2), rtol=0, atol=1e-6)


def test_geometric_median_needs_points():
    with pytest.raises(ValueError, match="N >= 1"):
        geometric_median(torch.zeros(0, 3))


def test_reference_style_of_one_window_is_its_code(nets):
    clip = _clip(SEQ_LEN, seed=3)
    expected = nets.style_encoder(torch.from_numpy(clip)[None])[0]
    assert_float32_close(reference_style(nets, [clip], SEQ_LEN, batch=4), expected.detach())


def test_reference_style_is_invariant_to_clip_order_and_batch(nets):
    clips = [_clip(23, seed=4), _clip(15, seed=5), _clip(31, seed=6)]
    code = reference_style(nets, clips, SEQ_LEN, batch=8)
    assert code.shape == (SMALL.style_size,)
    assert_float32_close(reference_style(nets, clips[::-1], SEQ_LEN, batch=8), code, rtol=1e-4)
    assert_float32_close(reference_style(nets, clips, SEQ_LEN, batch=3), code, rtol=1e-4)


def test_reference_style_short_clips(nets):
    long, short = _clip(20, seed=7), _clip(4, seed=8)
    assert_float32_close(reference_style(nets, [short, long], SEQ_LEN, 8), reference_style(nets, [long], SEQ_LEN, 8))
    padded = np.concatenate([short, np.repeat(short[-1:], SEQ_LEN - len(short), axis=0)])
    assert_float32_close(reference_style(nets, [short], SEQ_LEN, 8), reference_style(nets, [padded], SEQ_LEN, 8))
    with pytest.raises(ValueError, match="at least one reference frame"):
        reference_style(nets, [np.zeros((0, FRAME_SIZE), np.float32)], SEQ_LEN, 8)
    with pytest.raises(ValueError, match="at least one reference frame"):
        reference_style(nets, [], SEQ_LEN, 8)


# --- editing a clip -----------------------------------------------------------------------------

def test_edit_sequence_is_the_overlap_add_of_its_windows(nets):
    clip = _clip(45, seed=9)
    style = label_style(nets, 1, seed=0)
    edited = edit_sequence(nets.generator, clip, style, SEQ_LEN, batch=7)
    assert edited.shape == clip.shape and edited.dtype == np.float32
    windows = _cut(torch.from_numpy(clip), SEQ_LEN)
    expected = overlap_add(nets.generator(windows, style.expand(len(windows), -1)).detach(), len(clip))
    assert_float32_close(edited, expected, rtol=1e-4)
    assert_float32_close(edit_sequence(nets.generator, clip, style, SEQ_LEN, batch=1), edited, rtol=1e-4)
    assert not nets.generator.training


def test_edit_sequence_of_a_short_clip(nets):
    clip = _clip(4, seed=10)
    style = label_style(nets, 0, seed=0)
    edited = edit_sequence(nets.generator, clip, style, SEQ_LEN, batch=8)
    assert edited.shape == (4, FRAME_SIZE)
    padded = np.concatenate([clip, np.repeat(clip[-1:], SEQ_LEN - 4, axis=0)])
    expected = nets.generator(torch.from_numpy(padded)[None], style[None])[0, :4].detach()
    assert_float32_close(edited, expected, rtol=1e-4)


def test_edit_sequence_passes_the_generators_padding_through():
    """A generator trained on a 25-component face model passes exp_25..49 through (its file
    says so, ``checkpoint.PADDING_KEY``): the edit keeps the clip's zeros there and edits the rest."""
    torch.manual_seed(0)
    padded = ManipulatorNets(SMALL, N_EMOTIONS).eval()
    padded.generator.set_padding(torch.arange(FRAME_SIZE) >= 26)
    clip = _clip(30, seed=12)
    clip[:, 26:] = 0
    edited = edit_sequence(padded.generator, clip, label_style(padded, 1, seed=0), SEQ_LEN, batch=8)
    assert np.array_equal(edited[:, 26:], clip[:, 26:]) and np.abs(edited[:, 1:26] - clip[:, 1:26]).min() > 0


def test_edit_sequence_restores_training_mode(nets):
    nets.generator.train()
    try:
        edit_sequence(nets.generator, _clip(12, seed=11), label_style(nets, 0, seed=0), SEQ_LEN, 4)
        assert nets.generator.training
    finally:
        nets.generator.eval()


# --- intensity ----------------------------------------------------------------------------------

def test_intensity_blend_endpoints_midpoint_and_monotone():
    source, edited = _clip(12, seed=12), _clip(12, seed=13)
    ones = np.ones(len(source))
    np.testing.assert_array_equal(apply_intensity(source, edited, 0 * ones), source)
    np.testing.assert_array_equal(apply_intensity(source, edited, ones), edited)
    assert_float32_close(apply_intensity(source, edited, 0.5 * ones), (source + edited) / 2)
    distances = [np.linalg.norm(apply_intensity(source, edited, c * ones) - edited, axis=1)
                 for c in np.linspace(0, 1, 11)]
    assert np.all(np.diff(distances, axis=0) <= 1e-6)
    assert np.all(distances[0] > distances[-1])


def test_intensity_per_frame_curve():
    source, edited = _clip(3, seed=14), _clip(3, seed=15)
    blended = apply_intensity(source, edited, np.array([0.0, 0.25, 1.0]))
    np.testing.assert_array_equal(blended[0], source[0])
    assert_float32_close(blended[1], 0.75 * source[1] + 0.25 * edited[1])
    np.testing.assert_array_equal(blended[2], edited[2])
    with pytest.raises(ValueError, match="same T"):
        apply_intensity(source, edited, np.ones(4))


def test_intensity_curve_constant_and_keyframes():
    np.testing.assert_array_equal(intensity_curve(0.3, 5, fps=25), np.full(5, 0.3))
    np.testing.assert_array_equal(intensity_curve(1, 2, fps=25), [1.0, 1.0])
    curve = intensity_curve([[0, 0], [1, 1]], 21, fps=10)
    assert curve[5] == pytest.approx(0.5)
    np.testing.assert_allclose(curve[:11], np.linspace(0, 1, 11))
    np.testing.assert_array_equal(curve[10:], 1.0)
    held = intensity_curve([[0.5, 0.2], [1.0, 0.8], [1.5, 0.4]], 20, fps=10)
    np.testing.assert_array_equal(held[:6], 0.2)
    assert held[10] == pytest.approx(0.8) and held[12] == pytest.approx(0.64)
    np.testing.assert_array_equal(held[15:], 0.4)


@pytest.mark.parametrize("intensity, message", [
    (1.5, "intensity 1.5 is not in [0, 1]"),
    (-0.1, "intensity -0.1 is not in [0, 1]"),
    ([], "neither a number nor a non-empty list of keyframes"),
    ("high", "neither a number nor a non-empty list of keyframes"),
    ([[0, 0], [1, 2]], "keyframe 2 has value 2.0, not in [0, 1]"),
    ([[0, 0], [0, 1]], "keyframe 2 has time 0.0, not after 0.0"),
    ([[1, 0], [0.5, 1]], "keyframe 2 has time 0.5, not after 1.0"),
    ([[0, 0, 1]], "keyframe 1 is [0, 0, 1], not a pair of finite numbers"),
    ([[0, "a"]], "keyframe 1 is [0, 'a'], not a pair of finite numbers"),
    ([[0, float("nan")]], "not a pair of finite numbers"),
])
def test_bad_intensity_is_one_clear_line(intensity, message):
    with pytest.raises(ValueError) as info:
        intensity_curve(intensity, 10, fps=25)
    text = str(info.value)
    assert message in text and "[[t_seconds, value], ...]" in text and "\n" not in text


# --- expression-table rows ----------------------------------------------------------------------

def test_edit_table_round_trips_through_read_expressions(tmp_path):
    n = 14
    rng = np.random.default_rng(16)
    frames = np.arange(3, 3 + n)
    source = expression_rows(("SYN01", "neutral", 1, "002"), frames, rng.normal(0, 0.1, (n, 3)),
                             rng.normal(0, 1, (n, 50)))
    edited = _clip(n, seed=17)
    table = edit_table(source, edited, "happy")
    assert list(table.columns) == [*EXPRESSION_COLUMNS, "source_frame"]
    write_parquet(table, tmp_path / "expressions.parquet")
    back = read_expressions(tmp_path / "expressions.parquet")
    assert set(back.actor) == {"SYN01"} and set(back.emotion) == {"happy"}
    assert set(back.level) == {1} and set(back["clip"]) == {"002"}
    np.testing.assert_array_equal(back.frame, np.arange(n))
    np.testing.assert_array_equal(back.source_frame, frames)
    np.testing.assert_array_equal(expression_view51(back), edited)
    np.testing.assert_array_equal(back[["jaw_pose_1", "jaw_pose_2"]], source[["jaw_pose_1", "jaw_pose_2"]])


def test_edit_table_checks_its_rows():
    n = 5
    source = expression_rows(("SYN01", "neutral", 1, "002"), np.arange(n), np.zeros((n, 3)), np.zeros((n, 50)))
    with pytest.raises(ValueError, match="SYN01/neutral/level_1/002 has 5 rows but 4 edited frames"):
        edit_table(source, np.zeros((4, FRAME_SIZE)), "happy")
    with pytest.raises(ValueError, match="not sorted by frame"):
        edit_table(source.iloc[::-1], np.zeros((n, FRAME_SIZE)), "happy")
    two = pd.concat([source, source.assign(clip="003")])
    with pytest.raises(ValueError, match="one clip, got 2 clips"):
        edit_table(two, np.zeros((2 * n, FRAME_SIZE)), "happy")


# --- the command: bad inputs are one line naming what to fix -----------------------------------

FRAMES, FPS = 20, 25


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, nets) -> Path:
    """The small networks, a 20-frame source clip SYN01/neutral/level_1/002 and its manifest row."""
    root = tmp_path_factory.mktemp("manipulate")
    save_networks(root / "nets.pth", nets)
    broken = ManipulatorNets(SMALL, N_EMOTIONS)
    next(broken.generator.parameters()).data.fill_(float("nan"))
    save_networks(root / "nan_nets.pth", broken)
    rng = np.random.default_rng(18)
    rows = expression_rows(("SYN01", "neutral", 1, "002"), np.arange(FRAMES), rng.normal(0, 0.1, (FRAMES, 3)),
                           rng.normal(0, 1, (FRAMES, 50)))
    write_parquet(rows, root / "expressions.parquet")
    write_parquet(rows.assign(exp_03=rows.exp_03.where(~rows.frame.isin([4, 5, 6, 9]), np.nan),
                              exp_07=rows.exp_07.where(rows.frame != 12, np.inf)), root / "nan.parquet")
    (root / "garbage.parquet").write_bytes(b"PAR1 but cut short")
    manifest = pd.DataFrame({"actor": ["SYN01"], "emotion": ["neutral"], "level": [1], "clip": ["002"], "fps": [float(FPS)]})
    write_parquet(manifest, root / "manifest.parquet")
    return root


def _manipulate(inputs: Path, out: Path, capsys, *extra: str, expressions: str = "expressions.parquet",
                weights: str = "nets.pth") -> tuple[int, str]:
    """``scmcl manipulate`` of the clip to happy: (exit status, stderr)."""
    sizes = {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(SMALL).items()}
    flags = shlex.split(settings_flags(validate_config({"manipulator": {"networks": sizes}}), "manipulator.networks"))
    argv = ["manipulate", "--weights", str(inputs / weights), *flags, "--emotions", "neutral", "happy", "sad",
            "--seq-len", str(SEQ_LEN), "--batch", "4", "--device", "cpu", "--threads", "1",
            "--expressions", str(inputs / expressions), "--manifest", str(inputs / "manifest.parquet"), "--actor", "SYN01",
            "--source-emotion", "neutral", "--level", "1", "--clip", "002", "--emotion", "happy", "--out", str(out / "edit.parquet"), "--record", str(out / "edit.json"), *extra]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's errors
        code = exit.code
    return code, capsys.readouterr().err


def test_manipulate_writes_an_edit_of_the_test_inputs(inputs, tmp_path, capsys):
    status, err = _manipulate(inputs, tmp_path, capsys, "--keyframes", "[[0, 0], [0.4, 1]]")
    assert status == 0, err
    assert len(pd.read_parquet(tmp_path / "edit.parquet")) == FRAMES


@pytest.mark.parametrize("extra, files, code, message", [
    ((), {"expressions": "nan.parquet"}, 1,
     "{inputs}/nan.parquet (SYN01/neutral/level_1/002): column exp_03 is not finite at frames 4-6, 9: "
     "rerun expression_table (scmcl preprocess expressions)"),
    ((), {"weights": "nan_nets.pth"}, 1,
     "the manipulator's edit of SYN01/neutral/level_1/002 with {inputs}/nan_nets.pth: column jaw_pose_0 is not finite at "
     "frames 0-19: these networks give NaN or inf: retrain them or import a released checkpoint"),
    ((), {"expressions": "garbage.parquet"}, 1,
     "{inputs}/garbage.parquet is not a readable Parquet table (Parquet magic bytes not found in footer. Either the file "
     "is corrupted or this is not a parquet file): it is truncated or another format; rerun expression_table "
     "(scmcl preprocess expressions)"),
    (("--keyframes", "[[1, 0], [2, 1]]"), {}, 1,
     "intensity keyframes start at 1 s, after the clip's last frame: it has 20 frames at 25 fps (0 to 0.76 s); "
     "give keyframe times within it"),
    (("--intensity", "0.5", "--keyframes", "[[0, 1]]"), {}, 2, "argument --keyframes: not allowed with argument --intensity"),
    (("--keyframes", "[[0, 1]"), {}, 2,
     "argument --keyframes: '[[0, 1]' is not a JSON list: expected [[t_seconds, value], ...], e.g. '[[0, 0], [1.5, 1]]'"),
], ids=["nan-in-table", "nan-from-network", "not-parquet", "keyframes-after-clip", "intensity-and-keyframes",
        "keyframes-not-json"])
def test_manipulate_refuses_what_would_be_a_silent_wrong_edit(inputs, tmp_path, capsys, extra, files, code, message):
    status, err = _manipulate(inputs, tmp_path, capsys, *extra, **files)
    assert status == code and err.splitlines()[-1] == f"scmcl manipulate: error: {message.format(inputs=inputs)}"
    assert not (tmp_path / "edit.parquet").exists() and not (tmp_path / "edit.json").exists()

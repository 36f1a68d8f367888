"""Audio features on the video clock and DTW alignment for the SCMC metric.

The MFCCs were checked once against python_speech_features (not a dependency) at 16 kHz and
25 fps, where both frame conventions coincide; here we assert the properties that matter.
"""

from __future__ import annotations

import numpy as np
import pytest

from scmcl.scmc.dtw import dtw_path
from scmcl.scmc.mfcc import mfcc_per_frame

RATES = [(16000, 25.0), (16000, 30.0), (16000, 30000 / 1001), (48000, 25.0), (48000, 30.0), (48000, 30000 / 1001)]


def _start(k: int, sample_rate: int, fps: float) -> int:
    return int(round(k * sample_rate / fps))


def _tone(freq: float, sample_rate: int = 16000, seconds: float = 1.0) -> np.ndarray:
    return 10000.0 * np.sin(2 * np.pi * freq * np.arange(int(sample_rate * seconds)) / sample_rate)


@pytest.mark.parametrize("sample_rate, fps", RATES)
def test_one_float32_row_per_video_frame(sample_rate, fps):
    rng = np.random.default_rng(0)
    n_frames = 75
    wave = rng.standard_normal(int(n_frames / fps * sample_rate) - 50)  # audio a few ms short of the video
    feats = mfcc_per_frame(wave, sample_rate, fps, n_frames)
    assert feats.shape == (n_frames, 13) and feats.dtype == np.float32
    assert np.isfinite(feats).all()


@pytest.mark.parametrize("sample_rate, fps", RATES)
def test_frame_k_reads_the_samples_of_video_frame_k(sample_rate, fps):
    """Frame starts follow round(k*sr/fps) exactly, late in a long clip where a rounded hop would drift."""
    n_frames, window = 900, int(0.025 * sample_rate)
    rng = np.random.default_rng(1)
    for k in (0, 1, 451, n_frames - 1):
        wave = np.zeros(_start(n_frames, sample_rate, fps))
        start = _start(k, sample_rate, fps)
        wave[start:start + window] = 1000.0 * rng.standard_normal(window)
        energy = mfcc_per_frame(wave, sample_rate, fps, n_frames)[:, 0]
        assert energy[k] > np.delete(energy, k).max() + 20.0


def test_tone_pitch_changes_the_cepstrum():
    low, high = (mfcc_per_frame(_tone(f), 16000, 25.0, 25) for f in (300.0, 2500.0))
    assert np.abs(low[:, 1:] - high[:, 1:]).mean() > 5.0  # spectral shape, not just energy (column 0)


def test_silence_is_finite():
    feats = mfcc_per_frame(np.zeros(16000, np.int16), 16000, 30.0, 30)
    assert np.isfinite(feats).all()
    assert np.allclose(feats, feats[0])


@pytest.mark.parametrize("args", [(np.zeros(0), 16000, 30.0, 10), (np.ones(100), 16000, 0.0, 10), (np.ones(100), 16000, 30.0, 0)])
def test_invalid_inputs(args):
    with pytest.raises(ValueError):
        mfcc_per_frame(*args)


def _reference_path(a: np.ndarray, b: np.ndarray) -> tuple[list[int], list[int]]:
    """The dtw package's algorithm (dist=L1, warp=1, s=1.0), as plain Python loops."""
    n, m = len(a), len(b)
    inf = float("inf")
    acc = [[0.0] + [inf] * m] + [[inf] + [0.0] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            cost = float(sum(abs(x - y) for x, y in zip(a[i], b[j])))
            acc[i + 1][j + 1] = cost + min(acc[i][j], acc[i][j + 1], acc[i + 1][j])
    i, j = n - 1, m - 1
    rows, cols = [i], [j]
    while i > 0 or j > 0:
        options = [acc[i][j], acc[i][j + 1], acc[i + 1][j]]
        step = options.index(min(options))
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
        rows.insert(0, i)
        cols.insert(0, j)
    return rows, cols


def _assert_valid(rows: np.ndarray, cols: np.ndarray, n: int, m: int) -> None:
    assert rows.dtype == np.int64 and cols.dtype == np.int64 and rows.shape == cols.shape
    assert (rows[0], cols[0]) == (0, 0) and (rows[-1], cols[-1]) == (n - 1, m - 1)
    di, dj = np.diff(rows), np.diff(cols)
    assert np.isin(di, (0, 1)).all() and np.isin(dj, (0, 1)).all() and ((di + dj) > 0).all()


@pytest.mark.parametrize("integer", [False, True], ids=["float", "integer-with-ties"])
def test_path_equals_reference(integer):
    rng = np.random.default_rng(2)
    shapes = [(1, 1), (1, 17), (23, 1), (2, 30), (30, 30)] + [tuple(rng.integers(1, 31, 2)) for _ in range(25)]
    for n, m in shapes:
        d = int(rng.integers(1, 5))
        a, b = (rng.integers(0, 3, (k, d)).astype(float) if integer else rng.standard_normal((k, d)) for k in (n, m))
        rows, cols = dtw_path(a, b)
        _assert_valid(rows, cols, n, m)
        ref_rows, ref_cols = _reference_path(a, b)
        assert rows.tolist() == ref_rows and cols.tolist() == ref_cols, (n, m)


def test_recovers_known_warping():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 13))
    source = np.sort(np.concatenate([np.arange(40), rng.choice(40, 25)]))  # every a frame, some repeated
    rows, cols = dtw_path(a, a[source])
    np.testing.assert_array_equal(rows, source)
    np.testing.assert_array_equal(cols, np.arange(len(source)))
    cols_t, rows_t = dtw_path(a[source], a)  # and the other way round
    np.testing.assert_array_equal(rows_t, source)
    np.testing.assert_array_equal(cols_t, np.arange(len(source)))


def test_long_sequences():
    rng = np.random.default_rng(4)
    rows, cols = dtw_path(rng.standard_normal((600, 13)), rng.standard_normal((700, 13)))
    _assert_valid(rows, cols, 600, 700)


def test_rejects_mismatched_dimensions():
    with pytest.raises(ValueError):
        dtw_path(np.zeros((3, 2)), np.zeros((4, 3)))

"""MFCCs with exactly one frame per video frame, for aligning a clip's audio to its frames.

Numerically the features of ``python_speech_features.mfcc`` as the SCMCL paper's code calls it
(25 ms rectangular window, 13 cepstra, 26 mel filters, pre-emphasis 0.97, lifter 22, c0 replaced
by the log frame energy), reimplemented so the project does not depend on that package and so
frames follow the video's own clock (see :func:`mfcc_per_frame`).
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dct

__all__ = ["mfcc_per_frame"]

_EPS = np.finfo(float).eps


def _hz2mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel2hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _mel_filterbank(n_filters: int, nfft: int, sample_rate: int) -> np.ndarray:
    """(n_filters, nfft//2+1) triangles on FFT bins, built as python_speech_features does (floored bin edges)."""
    mels = np.linspace(0.0, _hz2mel(sample_rate / 2), n_filters + 2)
    edges = np.floor((nfft + 1) * _mel2hz(mels) / sample_rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    k = np.arange(nfft // 2 + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # zero-width sides select no bins
        rising = np.where((k >= lo) & (k < mid), (k - lo) / (mid - lo), 0.0)
        falling = np.where((k >= mid) & (k < hi), (hi - k) / (hi - mid), 0.0)
    return rising + falling


def mfcc_per_frame(
    wave: np.ndarray,
    sample_rate: int,
    fps: float,
    n_frames: int,
    *,
    window_s: float = 0.025,
    n_cep: int = 13,
    n_filters: int = 26,
    preemph: float = 0.97,
    lifter: int = 22,
) -> np.ndarray:
    """float32 (n_frames, n_cep) MFCCs of a mono ``wave``, row k for video frame k of a clip at ``fps``.

    Equal to ``python_speech_features.mfcc(wave, sample_rate, winlen=window_s, winstep=1/fps,
    numcep=n_cep, nfilt=n_filters, nfft=512, preemph=preemph, ceplifter=lifter,
    appendEnergy=True, winfunc=ones)`` except, deliberately:

    * frame k starts at sample ``round(k * sample_rate / fps)``; python_speech_features steps by
      a rounded hop (533 samples instead of 533.33 at 16 kHz and 30 fps), drifting from the video;
    * the FFT size is the smallest power of two holding the window, at least 512; with a fixed
      512 python_speech_features silently truncates longer windows (22.05 kHz and above).

    Frames running past the end of the wave are zero-padded, so a clip whose audio is a few ms
    shorter than its video still gets ``n_frames`` rows.  Like the reference, the wave is used
    at its own scale (int16-range samples reproduce the paper's features).
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError("wave must be a non-empty 1-D array")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")

    window = int(np.floor(window_s * sample_rate + 0.5))  # python_speech_features rounds half up
    nfft = max(512, 1 << (window - 1).bit_length())
    starts = np.rint(np.arange(n_frames) * (sample_rate / fps)).astype(np.int64)

    emphasised = np.append(wave[0], wave[1:] - preemph * wave[:-1])
    padded = np.zeros(max(emphasised.size, starts[-1] + window))
    padded[: emphasised.size] = emphasised
    frames = padded[starts[:, None] + np.arange(window)]

    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(axis=1)
    mel = power @ _mel_filterbank(n_filters, nfft, sample_rate).T
    cep = dct(np.log(np.where(mel == 0, _EPS, mel)), type=2, axis=1, norm="ortho")[:, :n_cep]
    cep *= 1.0 + (lifter / 2.0) * np.sin(np.pi * np.arange(n_cep) / lifter)
    cep[:, 0] = np.log(np.where(energy == 0, _EPS, energy))
    return cep.astype(np.float32)

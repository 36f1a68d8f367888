"""LSE-D and LSE-C (lip-sync error distance and confidence, Prajwal et al. 2020) as the SPFEM
papers' metric code computes them (``metrics/lse_inter_id.py`` and ``lse_cross_id.py`` of
jianmanlincjx/CDRL, on ``SyncNetInstance.evaluate`` and ``calc_pdist`` of joonson/syncnet_python),
with the released SyncNet (``syncnet_v2.model``, a bare state dict) loaded strictly, so the
numbers are comparable with the papers' tables.

What the scripts do, and so what :func:`lse` does:

- faces: the aligned faces (NED's 256 px crops) lose ``--margin 70 // 2 = 35`` px on each side,
  and are resized to 224×224 with cv2's bilinear resize (uint8 out); faces of another side S lose
  the same fraction, ``round(35 · S / 256)`` px, on each side (:data:`MARGIN_FRACTION`);
- the lip tower gets cv2's BGR channel order (``cv2.imread``) as raw 0..255 floats, no
  normalisation, in (B, 3, 5, 224, 224) windows of frames j..j+4;
- audio: 16 kHz mono floats at librosa's scale (``librosa.load``, so [-1, 1]; resampled here as
  librosa's ``soxr_hq`` does, with soxr itself), 13 MFCCs of ``python_speech_features.mfcc``
  with a step of a quarter video frame; the scripts hard-code 30 fps, here the clip's own fps is
  used; the audio window of video window j is MFCC steps 4j..4j+19 (20 steps: (B, 1, 13, 20));
- windows: ``min(T − 5, N // 4 − 5)`` of them for T frames and N MFCC steps (one fewer than
  would fit, as both scripts do); ``--skip_frame`` defaults to 0 in the scripts (it would cut
  the audio only), so nothing is skipped;
- for each offset s in −vshift..vshift (vshift 10) the mean over video windows i of the
  Euclidean distance (``pairwise_distance``, eps 1e-6) from video embedding i to audio embedding
  i + s, the audio embeddings zero-padded by vshift rows at both ends as ``calc_pdist`` does
  (an offset running off the clip compares with zero vectors); LSE-D is the minimum of these 21
  means, LSE-C the median minus the minimum, and the offset ``vshift − argmin`` as in
  syncnet_python: offset k means video window i matches audio window i − k best, i.e. the sound
  comes k frames before the lips (the audio leads by k frames; negative: it lags).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from scmcl.io.state_dicts import read_strict_state
from scmcl.scmc.mfcc import mfcc_per_frame

__all__ = ["SyncNetWeightsError", "SyncNet", "load_syncnet", "sync_offsets", "lse", "lip_frames", "audio_windows",
           "window_count"]

WHAT = "SyncNet of joonson/syncnet_python (syncnet_v2.model)"
#: The scripts' audio rate, frames per window, MFCC steps per video frame and per window, and lip input side.
SAMPLE_RATE = 16000
FRAMES = 5
STEPS_PER_FRAME = 4
STEPS = FRAMES * STEPS_PER_FRAME
LIP_SIZE = 224
#: ``--margin 70``: 35 px cut on each side of NED's 256 px aligned faces, as a fraction of the side.
MARGIN_FRACTION = 35 / 256
VSHIFT = 10
#: python_speech_features' default window (25 ms) in samples at 16 kHz.
_MFCC_WINDOW = int(np.floor(0.025 * SAMPLE_RATE + 0.5))


class SyncNetWeightsError(ValueError):
    """A file that is not the released SyncNet's state dict."""


class SyncNet(nn.Module):
    """joonson/syncnet_python's ``S``, layer for layer, so its state dict keys are the release's:
    a Conv2d audio tower on (B, 1, 13, 20) MFCCs and a Conv3d lip tower on (B, 3, 5, 224, 224)
    frames, each with a fully connected head to a 1024-d embedding."""

    def __init__(self, embedding: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, (3, 3), stride=(1, 1), padding=(1, 1)), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d((1, 1), stride=(1, 1)),
            nn.Conv2d(64, 192, (3, 3), stride=(1, 1), padding=(1, 1)), nn.BatchNorm2d(192), nn.ReLU(inplace=True),
            nn.MaxPool2d((3, 3), stride=(1, 2)),
            nn.Conv2d(192, 384, (3, 3), padding=(1, 1)), nn.BatchNorm2d(384), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, (3, 3), padding=(1, 1)), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, (3, 3), padding=(1, 1)), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.MaxPool2d((3, 3), stride=(2, 2)),
            nn.Conv2d(256, 512, (5, 4), padding=(0, 0)), nn.BatchNorm2d(512), nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2), padding=0), nn.BatchNorm3d(96), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(256, 512, (1, 6, 6), padding=0), nn.BatchNorm3d(512), nn.ReLU(inplace=True),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC windows → (B, 1024) audio embeddings."""
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) BGR 0..255 frame windows → (B, 1024) video embeddings."""
        return self.netfclip(self.netcnnlip(x).flatten(1))


def load_syncnet(path: str | Path, device: str | torch.device) -> SyncNet:
    """The released SyncNet from ``path``, strictly (only BatchNorm's ``num_batches_tracked`` may
    be absent, as both official loaders allow), frozen and in eval mode on ``device``."""
    model = SyncNet()
    state = read_strict_state(Path(path), model.state_dict(), WHAT, SyncNetWeightsError, may_lack=("num_batches_tracked",))
    model.load_state_dict(state, strict=True)
    return model.requires_grad_(False).eval().to(device)


def sync_offsets(video: torch.Tensor | np.ndarray, audio: torch.Tensor | np.ndarray,
                 vshift: int = VSHIFT) -> tuple[float, float, int]:
    """(LSE-D, LSE-C, offset) of (W, D) video-window and (W, D) audio-window embeddings, as
    syncnet_python's ``calc_pdist`` and ``evaluate``: the mean distance per offset with the
    audio zero-padded, its minimum, median − minimum, and ``vshift − argmin`` (offset k: video
    window i matches audio window i − k; the audio leads by k frames)."""
    video, audio = (torch.as_tensor(x).detach().float().cpu() for x in (video, audio))
    if video.ndim != 2 or video.shape != audio.shape or len(video) == 0:
        raise ValueError(f"video and audio embeddings must both be (W, D) with W >= 1, got {tuple(video.shape)} "
                         f"and {tuple(audio.shape)}")
    if vshift < 0:
        raise ValueError(f"vshift must be non-negative, got {vshift}")
    padded = F.pad(audio, (0, 0, vshift, vshift))
    windows = len(video)
    means = torch.stack([F.pairwise_distance(video, padded[s:s + windows]).mean() for s in range(2 * vshift + 1)])
    minimum, argmin = torch.min(means, 0)
    return float(minimum), float(torch.median(means) - minimum), int(vshift - int(argmin))


def lip_frames(faces: np.ndarray) -> torch.Tensor:
    """(T, 3, 224, 224) uint8 BGR lip-tower frames of (T, H, W, 3) uint8 RGB aligned faces: the
    scripts' 35 px margin of a 256 px face (the same fraction of other sides) cut on each side,
    then cv2's bilinear resize to 224×224."""
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8:
        raise ValueError(f"faces must be (T, H, W, 3) uint8 RGB, got {faces.shape} {faces.dtype}")
    height, width = faces.shape[1:3]
    mh, mw = round(MARGIN_FRACTION * height), round(MARGIN_FRACTION * width)
    if height - 2 * mh < 1 or width - 2 * mw < 1:
        raise ValueError(f"faces of {height}x{width} px are too small to cut the margin from")
    out = np.empty((len(faces), LIP_SIZE, LIP_SIZE, 3), np.uint8)
    for k, face in enumerate(faces):
        bgr = np.ascontiguousarray(face[mh:height - mh, mw:width - mw, ::-1])
        out[k] = cv2.resize(bgr, (LIP_SIZE, LIP_SIZE), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _to_16k(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz, at librosa.load's scale (integer samples divided by 2^(bits−1))."""
    wave = np.asarray(wave)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError("wave must be a non-empty 1-D array")
    if np.issubdtype(wave.dtype, np.integer):
        wave = wave / float(np.iinfo(wave.dtype).max + 1)
    wave = wave.astype(np.float32)
    if sample_rate != SAMPLE_RATE:
        import soxr

        # librosa.resample's soxr_hq: soxr at high quality, the length fixed to ceil(N · ratio).
        size = int(np.ceil(len(wave) * SAMPLE_RATE / sample_rate))
        wave = soxr.resample(wave, sample_rate, SAMPLE_RATE, quality="HQ")
        wave = np.pad(wave, (0, max(0, size - len(wave))))[:size].astype(np.float32)
    return wave


def window_count(n_frames: int, n_steps: int) -> int:
    """The scripts' number of 5-frame windows: ``min(T − 5, N // 4 − 5)``."""
    return min(n_frames - FRAMES, n_steps // STEPS_PER_FRAME - FRAMES)


def audio_windows(wave: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> torch.Tensor:
    """(W, 1, 13, 20) float32 MFCC windows of a mono ``wave`` for a video of ``n_frames`` at
    ``fps``: python_speech_features' MFCCs at a quarter-frame step (on the exact clock), as many as it
    gives, window j covering steps 4j..4j+19; W is :func:`window_count`."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    wave = _to_16k(wave, sample_rate)
    step = SAMPLE_RATE / (STEPS_PER_FRAME * fps)
    n_steps = 1 if wave.size <= _MFCC_WINDOW else 1 + math.ceil((wave.size - _MFCC_WINDOW) / step)
    count = window_count(n_frames, n_steps)
    if count < 1:
        raise ValueError(f"{n_frames} frames and {wave.size / SAMPLE_RATE:.3f} s of audio give no {FRAMES}-frame window")
    mfcc = torch.from_numpy(mfcc_per_frame(wave, SAMPLE_RATE, STEPS_PER_FRAME * fps, n_steps).T.copy())  # (13, N)
    starts = torch.arange(count) * STEPS_PER_FRAME
    return mfcc[:, starts[:, None] + torch.arange(STEPS)].permute(1, 0, 2).unsqueeze(1).contiguous()


@torch.no_grad()
def lse(model: SyncNet, faces: np.ndarray, wave: np.ndarray, sample_rate: int, fps: float, device: str | torch.device,
        batch_size: int = 20) -> tuple[float, float, int]:
    """(LSE-D, LSE-C, offset) of one video: ``faces`` (T, S, S, 3) uint8 RGB aligned faces,
    ``wave`` its mono audio at ``sample_rate`` (floats in [-1, 1]), ``fps`` the video's rate."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    frames = lip_frames(faces)
    windows = audio_windows(wave, sample_rate, fps, len(frames))
    model.eval()
    video, audio = [], []
    for start in range(0, len(windows), batch_size):
        stop = min(start + batch_size, len(windows))
        clips = torch.stack([frames[j:j + FRAMES] for j in range(start, stop)])  # (B, 5, 3, 224, 224)
        video.append(model.forward_lip(clips.permute(0, 2, 1, 3, 4).to(device, torch.float32)).float().cpu())
        audio.append(model.forward_aud(windows[start:stop].to(device)).float().cpu())
    return sync_offsets(torch.cat(video), torch.cat(audio))

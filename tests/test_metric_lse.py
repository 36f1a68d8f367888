"""LSE-D / LSE-C: the released SyncNet's layout loads strictly, wrong files are one clear error,
the offset arithmetic gives known answers, and the whole metric runs on a small random video."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from scmcl.evaluate.lse import (MARGIN_FRACTION, SyncNet, SyncNetWeightsError, audio_windows, lip_frames, load_syncnet, lse,
                                sync_offsets, window_count)

#: Keys and shapes read off joonson/syncnet_python's SyncNetModel.py (class S): a renamed or
#: resized layer no longer loads the released syncnet_v2.model.
OFFICIAL = {
    "netcnnaud.0.weight": (64, 1, 3, 3),
    "netcnnaud.1.running_var": (64,),
    "netcnnaud.4.weight": (192, 64, 3, 3),
    "netcnnaud.18.weight": (512, 256, 5, 4),
    "netcnnaud.19.running_mean": (512,),
    "netfcaud.0.weight": (512, 512),
    "netfcaud.3.weight": (1024, 512),
    "netcnnlip.0.weight": (96, 3, 5, 7, 7),
    "netcnnlip.4.weight": (256, 96, 1, 5, 5),
    "netcnnlip.18.weight": (512, 256, 1, 6, 6),
    "netcnnlip.19.bias": (512,),
    "netfclip.0.weight": (512, 512),
    "netfclip.1.running_mean": (512,),
    "netfclip.3.weight": (1024, 512),
    "netfclip.3.bias": (1024,),
}


def _random_syncnet(seed: int) -> SyncNet:
    torch.manual_seed(seed)
    model = SyncNet()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[SyncNet, Path]:
    """A random SyncNet and its bare state dict saved as the 2017 release is: no num_batches_tracked."""
    model = _random_syncnet(0)
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save({k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    return model, path


def test_the_official_layout_loads_strictly(release) -> None:
    original, path = release
    state = original.state_dict()
    assert len(state) == 102 and sum(k.endswith("num_batches_tracked") for k in state) == 14
    for key, shape in OFFICIAL.items():
        assert tuple(state[key].shape) == shape, key
    loaded = load_syncnet(path, "cpu")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    generator = torch.Generator().manual_seed(1)
    lips = torch.rand(2, 3, 5, 224, 224, generator=generator) * 255
    mfcc = torch.randn(2, 1, 13, 20, generator=generator) * 10
    with torch.no_grad():
        for forward in ("forward_lip", "forward_aud"):
            x = lips if forward == "forward_lip" else mfcc
            want, got = getattr(original, forward)(x), getattr(loaded, forward)(x)
            assert got.shape == (2, 1024)
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max())), forward


def test_a_wrong_syncnet_file_is_one_clear_error(release, tmp_path: Path) -> None:
    state = torch.load(release[1], weights_only=True)
    missing, misshaped = tmp_path / "missing.model", tmp_path / "misshaped.model"
    torch.save({k: v for k, v in state.items() if not k.startswith("netfclip.3.")}, missing)
    torch.save({**state, "netcnnlip.0.weight": torch.zeros(96, 3, 3, 7, 7)}, misshaped)
    for path, says in ((missing, "netfclip.3"), (misshaped, "netcnnlip.0.weight")):
        with pytest.raises(SyncNetWeightsError) as info:
            load_syncnet(path, "cpu")
        message = str(info.value)
        assert str(path) in message and says in message and "\n" not in message
    with pytest.raises(FileNotFoundError):
        load_syncnet(tmp_path / "absent.model", "cpu")


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    z = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))
    return z / z.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("k", [3, -2, 0])
def test_sync_offsets_finds_a_known_shift(k: int) -> None:
    windows, dim = 60, 256
    z = _unit(windows + abs(k), dim, seed=10 + k)
    lo = max(0, -k)
    video = z[lo:lo + windows]
    audio = z[lo + k:lo + k + windows]  # audio[t] = video[t + k]: the sound comes k frames before the lips
    lse_d, lse_c, offset = sync_offsets(video, audio)
    assert offset == k
    # At the true offset |k| video windows run off the audio and meet the zero padding (distance 1).
    assert lse_d == pytest.approx(abs(k) / windows, abs=1e-4)
    assert lse_c > 1.0
    assert sync_offsets(video.numpy(), audio.numpy()) == pytest.approx((lse_d, lse_c, offset), abs=1e-5)


def test_sync_offsets_of_unrelated_embeddings_has_little_confidence() -> None:
    lse_d, lse_c, offset = sync_offsets(_unit(60, 256, seed=1), _unit(60, 256, seed=2))
    assert 1.2 < lse_d < 1.5 and 0 <= lse_c < 0.1 and -10 <= offset <= 10


def test_sync_offsets_equals_a_direct_sum() -> None:
    generator = torch.Generator().manual_seed(3)
    video, audio = torch.randn(15, 8, generator=generator), torch.randn(15, 8, generator=generator)
    vshift = 4
    means = []
    for shift in range(-vshift, vshift + 1):  # audio index i + shift, zero where it runs off
        total = 0.0
        for i in range(15):
            other = audio[i + shift] if 0 <= i + shift < 15 else torch.zeros(8)
            total += float(torch.linalg.vector_norm(video[i] - other + 1e-6))
        means.append(total / 15)
    means = np.array(means)
    lse_d, lse_c, offset = sync_offsets(video, audio, vshift=vshift)
    assert lse_d == pytest.approx(means.min(), rel=1e-5)
    assert lse_c == pytest.approx(np.median(means) - means.min(), rel=1e-4, abs=1e-5)
    assert offset == -(int(np.argmin(means)) - vshift)
    with pytest.raises(ValueError):
        sync_offsets(video, audio[:-1])


def test_lip_frames_cut_the_margin_and_give_bgr() -> None:
    faces = np.zeros((2, 64, 64, 3), np.uint8)
    cut = round(MARGIN_FRACTION * 64)
    assert cut == 9  # 35 px of a 256 px face
    faces[:, cut:64 - cut, cut:64 - cut] = (200, 100, 50)  # RGB inside the margin, black border
    frames = lip_frames(faces)
    assert frames.shape == (2, 3, 224, 224) and frames.dtype == torch.uint8
    assert (frames[:, 0] == 50).all() and (frames[:, 1] == 100).all() and (frames[:, 2] == 200).all()
    with pytest.raises(ValueError):
        lip_frames(faces.astype(np.float32))


def test_audio_windows_are_quarter_frame_mfcc_windows() -> None:
    fps, frames = 25.0, 40
    wave = (np.random.default_rng(4).standard_normal(frames * 640) * 0.1).astype(np.float32)
    windows = audio_windows(wave, 16000, fps, frames)
    steps = 1 + math.ceil((wave.size - 400) / 160)  # python_speech_features' frame count at 100 steps/s
    assert windows.shape == (window_count(frames, steps), 1, 13, 20) == (34, 1, 13, 20)
    assert windows.dtype == torch.float32 and torch.isfinite(windows).all()
    assert torch.equal(windows[1, 0, :, :16], windows[0, 0, :, 4:])  # window j starts at step 4j
    twice = audio_windows(np.repeat(wave, 2), 32000, fps, frames)  # resampled to 16 kHz inside
    assert twice.shape == windows.shape


def test_lse_runs_end_to_end_on_a_random_syncnet() -> None:
    model = _random_syncnet(5)
    rng = np.random.default_rng(6)
    fps, frames = 25.0, 40
    faces = rng.integers(0, 256, size=(frames, 64, 64, 3), dtype=np.uint8)
    wave = (rng.standard_normal(frames * 640) * 0.1).astype(np.float32)
    lse_d, lse_c, offset = lse(model, faces, wave, 16000, fps, "cpu", batch_size=8)
    assert math.isfinite(lse_d) and math.isfinite(lse_c) and lse_d >= 0 and lse_c >= 0
    assert isinstance(offset, int) and -10 <= offset <= 10
    with pytest.raises(ValueError):
        lse(model, faces[:5], wave, 16000, fps, "cpu")

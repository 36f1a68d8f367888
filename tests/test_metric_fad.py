"""FAD: the ArcFace ResNet-18 from a file of the released layout (strictly), the reference
script's preprocessing, and the Fréchet distance against closed forms."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torchvision

from scmcl.evaluate import fad
from scmcl.evaluate.fad import ArcFaceWeightsError, ResNetFace, arcface_features, arcface_input, frechet_distance, load_arcface

#: Read from ronghuaiyang/arcface-pytorch models/resnet.py: ResNetFace(IRBlock, [2, 2, 2, 2], use_se=False) in an
#: nn.DataParallel (test.py), so every key has the ``module.`` prefix. IRBlock: bn0, conv1 (in→in), bn1, one PReLU(),
#: conv2 (in→out, strided), bn2; a downsample (1×1 conv, BN) where the width or stride changes (not in layer1).
OFFICIAL = {
    "module.conv1.weight": (64, 1, 3, 3),
    "module.bn1.running_var": (64,),
    "module.prelu.weight": (1,),
    "module.layer1.0.bn0.weight": (64,),
    "module.layer1.0.conv1.weight": (64, 64, 3, 3),
    "module.layer1.0.prelu.weight": (1,),
    "module.layer1.1.conv2.weight": (64, 64, 3, 3),
    "module.layer2.0.conv1.weight": (64, 64, 3, 3),
    "module.layer2.0.conv2.weight": (128, 64, 3, 3),
    "module.layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "module.layer2.0.downsample.1.running_mean": (128,),
    "module.layer3.0.bn0.running_var": (128,),
    "module.layer4.0.conv2.weight": (512, 256, 3, 3),
    "module.layer4.1.bn2.bias": (512,),
    "module.bn4.weight": (512,),
    "module.fc5.weight": (512, 512 * 8 * 8),
    "module.fc5.bias": (512,),
    "module.bn5.weight": (512,),
    "module.bn5.running_mean": (512,),
}
ABSENT = ("module.layer1.0.downsample.0.weight", "module.layer1.0.se.fc.0.weight")
#: 7 stem + 8 blocks × 18 + 3 downsamples × 6 + 12 head (bn4, fc5, bn5) entries, BatchNorm's buffers included.
KEYS = 7 + 8 * 18 + 3 * 6 + 12


def _official_model(seed: int) -> ResNetFace:
    torch.manual_seed(seed)
    model = ResNetFace()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.num_batches_tracked.fill_(110)
            elif isinstance(module, torch.nn.PReLU):
                module.weight.uniform_(0.1, 0.4)
    return model.eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, ResNetFace]:
    """A resnet18_110.pth of the released layout (DataParallel keys) and the model it came from."""
    model = _official_model(0)
    path = tmp_path_factory.mktemp("arcface") / "resnet18_110.pth"
    torch.save({f"module.{key}": value for key, value in model.state_dict().items()}, path)
    return path, model


@pytest.fixture(scope="module")
def arcface(weights) -> ResNetFace:
    return load_arcface(weights[0], "cpu")


def _faces(seed: int, count: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_a_file_of_the_official_layout_loads_strictly(weights, arcface) -> None:
    path, reference = weights
    saved = torch.load(path, weights_only=True)
    for key, shape in OFFICIAL.items():
        assert key in saved and tuple(saved[key].shape) == shape, key
    assert not any(key in saved for key in ABSENT)
    assert not any(".se." in key for key in saved) and len(saved) == KEYS
    assert not arcface.training and not any(p.requires_grad for p in arcface.parameters())
    assert torch.equal(arcface.fc5.weight, saved["module.fc5.weight"])
    assert torch.equal(arcface.layer2[0].downsample[1].running_var, saved["module.layer2.0.downsample.1.running_var"])
    x = torch.randn(3, 1, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), arcface(x)
    assert got.shape == (3, 512) and torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert expected.std() > 1e-3 and not torch.allclose(expected[0], expected[1])


def test_a_file_without_num_batches_tracked_loads(weights, tmp_path: Path) -> None:
    path, reference = weights
    old = tmp_path / "resnet18_110.pth"
    torch.save({k: v for k, v in torch.load(path, weights_only=True).items() if not k.endswith("num_batches_tracked")}, old)
    x = torch.randn(2, 1, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(load_arcface(old, "cpu")(x), reference(x), rtol=1e-5, atol=1e-6)


def _raises(path: Path, fragment: str) -> None:
    with pytest.raises(ArcFaceWeightsError) as info:
        load_arcface(path, "cpu")
    message = str(info.value)
    assert message.startswith(f"{path} is not {fad.WHAT}") and "\n" not in message and fragment in message, message


def test_a_wrong_file_is_one_clear_error(weights, tmp_path: Path) -> None:
    resnet = tmp_path / "resnet18-f37072fd.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    _raises(resnet, "missing")
    wrong = tmp_path / "wrong.pth"
    state = torch.load(weights[0], weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "module.bn5.weight"}, wrong)
    _raises(wrong, "missing 1 (bn5.weight)")
    torch.save({**state, "module.layer1.0.se.fc.0.weight": torch.zeros(4, 64)}, wrong)  # resnet_face18(use_se=True)
    _raises(wrong, "unexpected 1 (layer1.0.se.fc.0.weight)")
    torch.save({**state, "module.prelu.weight": torch.zeros(64)}, wrong)  # a per-channel PReLU
    _raises(wrong, "prelu.weight is (64,) in the file but (1,) here")
    wrong.write_bytes(b"not a torch file")
    with pytest.raises(ArcFaceWeightsError, match=re.escape(str(wrong))):
        load_arcface(wrong, "cpu")
    absent = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(absent))):
        load_arcface(absent, "cpu")


def _with_moments(rng: np.random.Generator, count: int, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Samples whose sample mean and (ddof = 1) covariance are exactly ``mean`` and ``cov``."""
    z = rng.standard_normal((count, len(mean)))
    z -= z.mean(axis=0)
    z = np.linalg.solve(np.linalg.cholesky(np.cov(z, rowvar=False)), z.T).T
    return z @ np.linalg.cholesky(cov).T + mean


def test_frechet_distance_has_the_closed_forms() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 8)) @ rng.standard_normal((8, 8)) + 5
    scale = np.trace(np.cov(x, rowvar=False))
    assert abs(frechet_distance(x, x)) < 1e-9 * scale
    shift = rng.standard_normal(8)
    assert frechet_distance(x, x + shift) == pytest.approx(shift @ shift, rel=1e-8, abs=1e-9 * scale)
    # Diagonal covariances: ||Δμ||² + Σ (√a − √b)².
    mean_r, mean_g = rng.standard_normal(6), rng.standard_normal(6)
    var_r, var_g = rng.uniform(0.5, 3, 6), rng.uniform(0.5, 3, 6)
    real, generated = _with_moments(rng, 300, mean_r, np.diag(var_r)), _with_moments(rng, 500, mean_g, np.diag(var_g))
    expected = np.sum((mean_r - mean_g) ** 2) + np.sum((np.sqrt(var_r) - np.sqrt(var_g)) ** 2)
    assert frechet_distance(real, generated) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(generated, real) == pytest.approx(expected, rel=1e-8)
    # Σ_g = 4 Σ_r, any Σ_r: (Σ_r Σ_g)^½ = 2 Σ_r, so FD = ||Δμ||² + Tr Σ_r.
    root = rng.standard_normal((5, 5))
    cov = root @ root.T + 0.1 * np.eye(5)
    real, generated = _with_moments(rng, 200, np.zeros(5), cov), _with_moments(rng, 250, np.ones(5), 4 * cov)
    assert frechet_distance(real, generated) == pytest.approx(5 + np.trace(cov), rel=1e-8)
    one = rng.standard_normal((50, 1))
    assert frechet_distance(one, 2 * one + 1) == pytest.approx((one.mean() + 1) ** 2 + one.var(ddof=1), rel=1e-8)


def test_frechet_distance_with_fewer_frames_than_features() -> None:
    x = np.random.default_rng(4).standard_normal((10, 32))  # singular covariances, as a short clip's
    value = frechet_distance(x, x)
    assert np.isfinite(value) and abs(value) < 1e-3 * np.trace(np.cov(x, rowvar=False))


def test_frechet_distance_guards_the_square_root(monkeypatch) -> None:
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((100, 4)), rng.standard_normal((120, 4)) + 1
    exact = frechet_distance(x, y)
    sqrtm, calls = scipy.linalg.sqrtm, []

    def not_finite_first(matrix: np.ndarray) -> np.ndarray:
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else sqrtm(matrix)

    monkeypatch.setattr(fad.linalg, "sqrtm", not_finite_first)
    assert frechet_distance(x, y) == pytest.approx(exact, abs=1e-4) and len(calls) == 2
    sigma_x, sigma_y, offset = np.cov(x, rowvar=False), np.cov(y, rowvar=False), fad.EPS * np.eye(4)
    assert np.allclose(calls[0], sigma_x @ sigma_y, rtol=1e-12, atol=0)
    assert np.allclose(calls[1], (sigma_x + offset) @ (sigma_y + offset), rtol=1e-12, atol=0)
    assert not np.allclose(calls[1], calls[0], rtol=1e-12, atol=0)  # the offset is on both covariances
    monkeypatch.setattr(fad.linalg, "sqrtm", lambda matrix: sqrtm(matrix) + 1e-9j)
    assert frechet_distance(x, y) == pytest.approx(exact, rel=1e-8)
    monkeypatch.setattr(fad.linalg, "sqrtm", lambda matrix: sqrtm(matrix) + 0.1j * np.eye(len(matrix)))
    with pytest.raises(ValueError, match="imaginary component"):
        frechet_distance(x, y)


def test_frechet_distance_rejects_unusable_features() -> None:
    x = np.zeros((5, 3))
    for real, generated in ((x[:1], x), (x, np.zeros((5, 4))), (x[0], x), (x, np.full((5, 3), np.nan))):
        with pytest.raises(ValueError):
            frechet_distance(real, generated)


def _luma(faces: np.ndarray) -> np.ndarray:
    """PIL's convert('L'): ITU-R 601-2 weights in 16-bit fixed point, rounded."""
    rgb = faces.astype(np.int64)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def _normalised(grey: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(grey).float().div(255).sub(0.5).div(0.5)


def test_arcface_input_is_the_reference_preprocessing() -> None:
    for size in (64, 256):
        grey = np.full((2, size, size, 3), 77, np.uint8)
        batch = arcface_input(grey)
        assert batch.shape == (2, 1, 128, 128) and batch.dtype == torch.float32
        assert torch.allclose(batch, torch.full_like(batch, (77 / 255 - 0.5) / 0.5), atol=1e-6)
    colours = np.zeros((3, 64, 64, 3), np.uint8)
    for channel in range(3):
        colours[channel, ..., channel] = 255
    levels = arcface_input(colours)[:, 0, 0, 0]  # PIL's luma of pure red, green, blue
    assert torch.allclose(levels, _normalised(np.array([76, 150, 29], np.uint8)), atol=1e-6)
    # At 164 px only the centred crop acts: rows and columns 18 … 145 of the luma.
    faces = _faces(6, 2, 164)
    assert torch.equal(arcface_input(faces)[:, 0], _normalised(_luma(faces)[:, 18:146, 18:146]))
    # The short side goes to 164 (bilinear) before the crop: a ramp keeps its slope 256/164 at 256 px.
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, None, :, None], (1, 256, 256, 3)).copy()
    got = (arcface_input(ramp)[0, 0, 64].numpy() * 0.5 + 0.5) * 255
    expected = (np.arange(128) + 18 + 0.5) * 256 / 164 - 0.5
    assert np.abs(got - expected).max() <= 1.0
    assert arcface_input(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 1, 128, 128)
    for wrong in (np.zeros((2, 64, 64, 3), np.float32), np.zeros((64, 64, 3), np.uint8), np.zeros((1, 64, 64), np.uint8)):
        with pytest.raises(ValueError):
            arcface_input(wrong)


def test_arcface_features_of_faces_of_any_size(arcface) -> None:
    every = []
    for seed, size, batch_size in ((7, 64, 64), (8, 256, 1)):  # one batch, then one frame at a time
        faces = _faces(seed, 2, size)
        features = arcface_features(arcface, faces, "cpu", batch_size=batch_size)
        assert features.shape == (2, 512) and features.dtype == np.float64 and np.isfinite(features).all()
        with torch.no_grad():
            direct = arcface(arcface_input(faces)).double().numpy()
        assert np.allclose(features, direct, rtol=1e-5, atol=1e-5)
        every.append(features)
    assert arcface_features(arcface, np.zeros((0, 64, 64, 3), np.uint8), "cpu").shape == (0, 512)
    features = np.concatenate(every)
    assert not np.allclose(features[0], features[1])
    value = frechet_distance(features, features)  # identical frame sets
    assert np.isfinite(value) and abs(value) < 1e-2 * max(np.trace(np.cov(features, rowvar=False)), 1.0)

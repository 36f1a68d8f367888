"""The SPFEM papers' expression CSIM: EfficientFace in the official layout, loaded strictly, and
the metric's preprocessing, arithmetic and sampling as CDRL's ``metrics/csim.py`` has them."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from scmcl.evaluate.csim import (MEAN, STD, EfficientFace, EfficientFaceWeightsError, actor_csim, efficientface_input,
                                 emotion_csim, emotion_features, load_efficientface)

#: Names and shapes in the released file, read off zengqunzhao/EfficientFace's models/EfficientFace.py
#: (efficient_face(): stages_repeats [4, 8, 4], stages_out_channels [29, 116, 232, 464, 1024], 7 classes)
#: and models/modulator.py (Channel, Spatial: reduction 16, so 116 // 16 = 7 hidden channels).
OFFICIAL = {
    "module.conv1.0.weight": (29, 3, 3, 3),
    "module.conv1.1.running_var": (29,),
    "module.stage2.0.branch1.0.weight": (29, 1, 3, 3),
    "module.stage2.0.branch1.2.weight": (58, 29, 1, 1),
    "module.stage2.0.branch2.0.weight": (58, 29, 1, 1),
    "module.stage2.3.branch2.0.weight": (58, 58, 1, 1),
    "module.stage3.0.branch1.0.weight": (116, 1, 3, 3),
    "module.stage3.7.branch2.3.weight": (116, 1, 3, 3),
    "module.stage4.3.branch2.5.weight": (232, 232, 1, 1),
    "module.stage4.3.branch2.6.num_batches_tracked": (),
    "module.local.conv1_1.weight": (116, 1, 3, 3),
    "module.local.conv4_2.weight": (116, 1, 3, 3),
    "module.local.bn4_2.running_mean": (116,),
    "module.modulator.channel_att.gate_c.gate_c_fc_0.weight": (7, 116),
    "module.modulator.channel_att.gate_c.gate_c_bn_1.running_var": (7,),
    "module.modulator.channel_att.gate_c.gate_c_fc_final.weight": (116, 7),
    "module.modulator.spatial_att.gate_s.gate_s_conv_reduce0.weight": (7, 116, 1, 1),
    "module.modulator.spatial_att.gate_s.gate_s_bn_di_1.weight": (7,),
    "module.modulator.spatial_att.gate_s.gate_s_conv_di_1.weight": (7, 7, 3, 3),
    "module.modulator.spatial_att.gate_s.gate_s_conv_final.bias": (1,),
    "module.conv5.0.weight": (1024, 464, 1, 1),
    "module.conv5.1.running_mean": (1024,),
    "module.fc.weight": (7, 1024),
    "module.fc.bias": (7,),
}
ABSENT = ("module.stage2.1.branch1.0.weight", "module.stage2.4.branch2.0.weight", "module.stage3.8.branch2.0.weight",
          "module.stage4.4.branch2.0.weight", "module.local.conv5_1.weight", "module.conv5.0.bias")
#: Entries of the official state dict (a BatchNorm is 5, a bias-free convolution 1): conv1 6; stage2 30 + 3·18,
#: stage3 30 + 7·18, stage4 30 + 3·18 (strided block 30, unit one 18); local 4·12; modulator 9 + 23; conv5 6; fc 2.
OFFICIAL_ENTRIES = 6 + 84 + 156 + 84 + 48 + 32 + 6 + 2


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> tuple[EfficientFace, Path]:
    """A seeded EfficientFace with random BatchNorm statistics, saved as the release is."""
    torch.manual_seed(0)
    net = EfficientFace()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
                module.num_batches_tracked.fill_(7)
    net.eval()
    path = tmp_path_factory.mktemp("efficientface") / "EfficientFace_Trained_on_AffectNet7.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3, "best_acc": 0.5}, path)
    return net, path


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([[x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) for y in b] for x in a]))


def _constant(vector: np.ndarray, n: int) -> np.ndarray:
    return np.tile(np.asarray(vector, dtype=np.float64), (n, 1))


def test_a_file_of_the_official_layout_loads_strictly(released) -> None:
    net, path = released
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert len(saved) == OFFICIAL_ENTRIES
    for key, shape in OFFICIAL.items():
        assert tuple(saved[key].shape) == shape, key
    assert not any(key in saved for key in ABSENT)
    model = load_efficientface(path, "cpu")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, features = model(x), model.features(x)
        assert torch.allclose(logits, net(x), rtol=1e-5, atol=1e-6)
        assert features.shape == (1, 1024)
        assert torch.allclose(model.fc(features), logits, rtol=1e-5, atol=1e-6)


def test_a_wrong_file_is_one_error_naming_it(released, tmp_path: Path) -> None:
    _, path = released
    state = torch.load(path, weights_only=True)["state_dict"]
    bare, lacking, eight = tmp_path / "bare.pth", tmp_path / "lacking.pth.tar", tmp_path / "eight.pth.tar"
    torch.save(state, bare)
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith("module.local.")}}, lacking)
    torch.save({"state_dict": {**state, "module.fc.weight": torch.zeros(8, 1024), "module.fc.bias": torch.zeros(8)}}, eight)
    for wrong, words in ((bare, "no 'state_dict' entry"), (lacking, "missing 48 (local.conv1_1.weight"),
                         (eight, "fc.weight is (8, 1024) in the file")):
        with pytest.raises(EfficientFaceWeightsError) as info:
            load_efficientface(wrong, "cpu")
        message = str(info.value)
        assert str(wrong) in message and words in message and "AffectNet-7" in message and "\n" not in message
    with pytest.raises(FileNotFoundError):
        load_efficientface(tmp_path / "absent.pth.tar", "cpu")


def test_csim_of_sets_with_known_answers() -> None:
    rng = np.random.default_rng(0)
    v = rng.random(1024) + 0.1
    e0, e1 = np.eye(1024)[:2]
    assert actor_csim(_constant(v, 150), _constant(v, 120)) == pytest.approx(1, abs=1e-6)
    assert actor_csim(_constant(v, 30), _constant(-v, 130)) == pytest.approx(-1, abs=1e-6)
    assert actor_csim(_constant(e0, 200), _constant(3 * e1, 50)) == pytest.approx(0, abs=1e-12)
    a, b = rng.random((40, 16)), rng.random((60, 16))
    assert actor_csim(a, b) == pytest.approx(_mean_cosine(a, b), abs=1e-12)  # 100 or fewer a side: every frame
    assert actor_csim(a, b) == pytest.approx(actor_csim(5 * a, 0.5 * b), abs=1e-12)
    with pytest.raises(ValueError):
        actor_csim(a[:0], b)
    with pytest.raises(ValueError):
        emotion_csim({})


def test_sampling_is_the_scripts_random_sample_with_seed_1() -> None:
    rng = np.random.default_rng(1)
    real, generated = rng.random((150, 8)), rng.random((130, 8))
    real_files, generated_files = [f"{i:06d}.png" for i in range(150)], [f"{i:06d}.png" for i in range(130)]
    draw = random.Random(1)  # random.seed(1); random.sample(files, 100) for the real side, then the generated one
    rows = [real_files.index(name) for name in draw.sample(real_files, 100)]
    columns = [generated_files.index(name) for name in draw.sample(generated_files, 100)]
    expected = _mean_cosine(real[rows], generated[columns])
    assert actor_csim(real, generated) == pytest.approx(expected, abs=1e-12)
    assert actor_csim(real, generated) == actor_csim(real, generated)
    assert actor_csim(real, generated, seed=2) != pytest.approx(expected, abs=1e-12)
    assert actor_csim(real, generated, samples=1000) == pytest.approx(_mean_cosine(real, generated), abs=1e-12)


def test_emotion_csim_averages_actors_drawn_from_one_random_stream() -> None:
    v, (e0, e1) = np.full(16, 0.5), np.eye(16)[:2]
    assert emotion_csim({"M003": (_constant(v, 5), _constant(v, 7)), "W029": (_constant(e0, 5), _constant(e1, 5))}) \
        == pytest.approx(0.5, abs=1e-6)
    rng = np.random.default_rng(2)
    first = rng.random((150, 8)), rng.random((120, 8))
    second = rng.random((140, 8)), rng.random((110, 8))
    few = rng.random((20, 8)), rng.random((100, 8))  # no draw: 100 or fewer a side
    draw = random.Random(1)  # seeded once, drawn from actor after actor, real then generated
    expected_first = _mean_cosine(first[0][draw.sample(range(150), 100)], first[1][draw.sample(range(120), 100)])
    expected_second = _mean_cosine(second[0][draw.sample(range(140), 100)], second[1][draw.sample(range(110), 100)])
    assert emotion_csim({"M003": first, "M009": second}) == pytest.approx((expected_first + expected_second) / 2, abs=1e-12)
    assert actor_csim(*second) != pytest.approx(expected_second, abs=1e-12)  # not reseeded per actor
    assert emotion_csim({"W015": few, "M009": second}) == pytest.approx((actor_csim(*few) + actor_csim(*second)) / 2, abs=1e-12)


def test_emotion_features_of_faces_of_any_size(released) -> None:
    net, _ = released
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    large = rng.integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    batched = emotion_features(net, small, torch.device("cpu"), batch_size=1)
    for faces, features in ((small, batched), (large, emotion_features(net, large, "cpu"))):
        assert features.shape == (len(faces), 1024) and features.dtype == np.float64 and np.isfinite(features).all()
    with torch.no_grad():
        direct = net.features(efficientface_input(small)).double().numpy()
    assert np.allclose(batched, direct, rtol=1e-5, atol=1e-6)  # one frame at a time or all at once
    assert emotion_features(net, small[:0], "cpu").shape == (0, 1024)
    with pytest.raises(ValueError):
        emotion_features(net, small.astype(np.float32), "cpu")


def test_preprocessing_is_the_scripts_resize_crop_and_normalisation() -> None:
    colour = np.array([200, 100, 50], dtype=np.uint8)
    x = efficientface_input(np.broadcast_to(colour, (2, 64, 64, 3)).copy())
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    expected = (colour / 255 - np.array(MEAN)) / np.array(STD)
    assert np.allclose(x.numpy(), expected[None, :, None, None], rtol=0, atol=1e-6)
    rows, columns = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    ramp = np.stack([rows, columns, np.zeros_like(rows)], axis=-1).astype(np.uint8)[None]
    x = efficientface_input(ramp).numpy()[0]  # 256 is not resized; the centre crop starts at (16, 16)
    assert np.allclose(x[0, :, 0], (np.arange(16, 240) / 255 - MEAN[0]) / STD[0], rtol=0, atol=1e-6)
    assert np.allclose(x[1, 0, :], (np.arange(16, 240) / 255 - MEAN[1]) / STD[1], rtol=0, atol=1e-6)
    assert efficientface_input(np.zeros((1, 64, 96, 3), dtype=np.uint8)).shape == (1, 3, 224, 224)

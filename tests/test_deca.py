"""DECA networks: the official checkpoint layout, the loader's checks and the inference API.

The real ``deca_model.tar`` cannot be fetched here, so a randomly initialised model is written in
its layout; the expected key names and shapes below are derived independently from DECA's
``decalib/models/{resnet,encoders,decoders}.py`` rather than from our modules.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from scmcl.face3d.deca import DecaEncoder, DecaWeightsError, load_deca
from tests.helpers import assert_float32_close, save_deca_like

OFFICIAL_SHAPES = {
    "E_flame": {
        "encoder.conv1.weight": (64, 3, 7, 7),
        "encoder.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "encoder.layer3.5.conv2.weight": (256, 256, 3, 3),
        "encoder.layer4.2.bn3.running_var": (2048,),
        "layers.0.weight": (1024, 2048),
        "layers.2.weight": (236, 1024),
        "layers.2.bias": (236,),
    },
    "E_detail": {"encoder.conv1.weight": (64, 3, 7, 7), "layers.2.weight": (128, 1024)},
    "D_detail": {
        "l1.0.weight": (8192, 181),
        "conv_blocks.0.running_mean": (128,),
        "conv_blocks.2.weight": (128, 128, 3, 3),
        "conv_blocks.18.weight": (16, 32, 3, 3),
        "conv_blocks.19.weight": (16,),
        "conv_blocks.21.weight": (1, 16, 3, 3),
        "conv_blocks.21.bias": (1,),
    },
}
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix: str) -> set[str]:
    return {f"{prefix}.{k}" for k in BN_KEYS}


def _deca_resnet50_keys() -> set[str]:
    """DECA's ResNet(Bottleneck, [3, 4, 6, 3]) without fc; downsample on each stage's first block."""
    keys = {"conv1.weight"} | _bn("bn1")
    for stage, blocks in enumerate((3, 4, 6, 3), start=1):
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            for i in (1, 2, 3):
                keys |= {f"{prefix}.conv{i}.weight"} | _bn(f"{prefix}.bn{i}")
            if block == 0:
                keys |= {f"{prefix}.downsample.0.weight"} | _bn(f"{prefix}.downsample.1")
    return keys


@pytest.fixture(scope="module")
def encoder() -> DecaEncoder:
    """A seeded model with non-trivial BatchNorm statistics, so a lost buffer would show."""
    torch.manual_seed(0)
    model = DecaEncoder()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def deca_file(encoder: DecaEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deca") / "deca_model.tar"
    save_deca_like(path, encoder)
    return path


@pytest.fixture(scope="module")
def checkpoint(deca_file: Path) -> dict:
    return torch.load(deca_file, weights_only=True)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def raw_flame(encoder: DecaEncoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Filled by ``codes``: E_flame's undivided 236 outputs for ``images`` (saves a forward pass)."""
    return {}


@pytest.fixture(scope="module")
def codes(encoder: DecaEncoder, images: torch.Tensor, raw_flame: dict) -> dict[str, torch.Tensor]:
    hook = encoder.E_flame.register_forward_hook(lambda _m, _i, out: raw_flame.update(out=out))
    try:
        return encoder.encode(images)
    finally:
        hook.remove()


def _save_variant(checkpoint: dict, network: str, state: dict, path: Path) -> Path:
    torch.save({**checkpoint, network: state}, path)
    return path


def test_file_has_the_official_layout(checkpoint: dict) -> None:
    assert list(checkpoint) == ["E_flame", "E_detail", "D_detail"]
    for network, shapes in OFFICIAL_SHAPES.items():
        for key, shape in shapes.items():
            assert tuple(checkpoint[network][key].shape) == shape, f"{network}.{key}"
    assert not any(k.startswith("encoder.fc") for k in checkpoint["E_flame"])


def test_encoder_keys_match_deca_resnet(checkpoint: dict) -> None:
    head = {f"layers.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    expected = {f"encoder.{k}" for k in _deca_resnet50_keys()} | head
    assert set(checkpoint["E_flame"]) == expected
    assert set(checkpoint["E_detail"]) == expected


def test_detail_decoder_keys_and_batchnorm_eps(encoder: DecaEncoder, checkpoint: dict) -> None:
    convs, norms = (2, 6, 10, 14, 18, 21), (0, 3, 7, 11, 15, 19)
    expected = {"l1.0.weight", "l1.0.bias"}
    expected |= {f"conv_blocks.{i}.{p}" for i in convs for p in ("weight", "bias")}
    expected |= {k for i in norms for k in _bn(f"conv_blocks.{i}")}
    assert set(checkpoint["D_detail"]) == expected
    assert [encoder.D_detail.conv_blocks[i].eps for i in norms] == [1e-5] + [0.8] * 5


def test_parameter_counts(encoder: DecaEncoder) -> None:
    def count(net: nn.Module) -> int:
        return sum(p.numel() for p in net.parameters())

    resnet50_trunk = 23_508_032  # torchvision's 25,557,032 minus fc (2048*1000 + 1000)
    hidden = 2048 * 1024 + 1024
    assert count(encoder.E_flame) == resnet50_trunk + hidden + 1024 * 236 + 236 == 25_848_108
    assert count(encoder.E_detail) == resnet50_trunk + hidden + 1024 * 128 + 128 == 25_737_408
    assert count(encoder.D_detail) == 1_773_345


def test_encode_shapes_and_deca_split(codes: dict, raw_flame: dict) -> None:
    expected = {"shape": (2, 100), "tex": (2, 50), "exp": (2, 50), "pose": (2, 6), "cam": (2, 3)}
    expected |= {"light": (2, 9, 3), "detail": (2, 128)}
    assert {k: tuple(v.shape) for k, v in codes.items()} == expected
    assert all(torch.isfinite(v).all() for v in codes.values())
    raw = raw_flame["out"]
    assert raw.shape == (2, 236)
    order = ("shape", "tex", "exp", "pose", "cam", "light")
    assert torch.equal(torch.cat([codes[k].reshape(2, -1) for k in order], dim=1), raw)
    assert torch.equal(codes["light"][:, 1], raw[:, 209 + 3 : 209 + 6])


def test_encode_rejects_other_sizes(encoder: DecaEncoder) -> None:
    with pytest.raises(ValueError, match="224"):
        encoder.encode(torch.rand(1, 3, 256, 256))


def test_decode_detail(encoder: DecaEncoder, codes: dict) -> None:
    uv_z = encoder.decode_detail(codes["detail"], codes["pose"][:, 3:], codes["exp"])
    assert uv_z.shape == (2, 1, 256, 256)
    assert 0 < uv_z.abs().max() <= 0.01
    with torch.no_grad():  # DECA's decode: D_detail(cat([pose[:, 3:], exp, detail]))
        direct = encoder.D_detail(torch.cat([codes["pose"][:, 3:], codes["exp"], codes["detail"]], dim=1))
    assert_float32_close(uv_z, direct)
    with pytest.raises(ValueError, match="jaw_pose"):
        encoder.decode_detail(codes["detail"], codes["pose"], codes["exp"])


def test_round_trip_reproduces_outputs(
    deca_file: Path, images: torch.Tensor, codes: dict, encoder: DecaEncoder
) -> None:
    loaded = load_deca(deca_file, "cpu")
    assert not loaded.training
    again = loaded.encode(images)
    assert again.keys() == codes.keys()
    for key, value in codes.items():
        assert_float32_close(again[key], value)
    args = (codes["detail"], codes["pose"][:, 3:], codes["exp"])
    assert_float32_close(loaded.decode_detail(*args), encoder.decode_detail(*args))


@pytest.mark.parametrize(
    ("network", "key", "change", "reported"),
    [
        ("E_flame", "layers.2.bias", "drop", "missing 1: E_flame.layers.2.bias"),
        ("D_detail", "l1.0.weight", "reshape", "D_detail.l1.0.weight (8192, 180) != (8192, 181)"),
        ("E_detail", "encoder.fc.weight", "add", "unexpected 1: E_detail.encoder.fc.weight"),
    ],
)
def test_incompatible_file_is_rejected(
    checkpoint: dict, tmp_path: Path, network: str, key: str, change: str, reported: str
) -> None:
    state = dict(checkpoint[network])
    if change == "drop":
        del state[key]
    elif change == "reshape":
        state[key] = state[key][:, :180]
    else:
        state[key] = torch.zeros(1000, 2048)
    path = _save_variant(checkpoint, network, state, tmp_path / "bad.tar")
    with pytest.raises(DecaWeightsError) as info:
        load_deca(path)
    assert reported in str(info.value)


def test_file_without_a_network_is_rejected(checkpoint: dict, tmp_path: Path) -> None:
    path = tmp_path / "partial.tar"
    torch.save({"E_flame": checkpoint["E_flame"]}, path)
    with pytest.raises(DecaWeightsError, match="E_detail"):
        load_deca(path)


def test_file_without_batch_counters_loads(checkpoint: dict, tmp_path: Path) -> None:
    """Checkpoints written before PyTorch 0.4.1 have no ``num_batches_tracked``."""
    state = {k: v for k, v in checkpoint["D_detail"].items() if not k.endswith("num_batches_tracked")}
    loaded = load_deca(_save_variant(checkpoint, "D_detail", state, tmp_path / "old.tar"))
    assert torch.equal(loaded.D_detail.l1[0].weight, checkpoint["D_detail"]["l1.0.weight"])


def test_missing_file_names_it_and_its_source(tmp_path: Path) -> None:
    path = tmp_path / "data" / "deca_model.tar"
    with pytest.raises(FileNotFoundError) as info:
        load_deca(path)
    message = str(info.value)
    for needle in (str(path), "deca_model.tar", "drive.google.com", "generic_model.pkl"):
        assert needle in message


class _Opaque:
    """Not a tensor type: torch's weights-only unpickler must refuse it."""


def test_arbitrary_pickle_needs_trust(tmp_path: Path) -> None:
    path = tmp_path / "opaque.tar"
    torch.save({name: _Opaque() for name in ("E_flame", "E_detail", "D_detail")}, path)
    with pytest.raises(DecaWeightsError, match="trust_pickle"):
        load_deca(path)
    with pytest.raises(DecaWeightsError, match="E_flame is not a state dict"):
        load_deca(path, trust_pickle=True)


def test_non_checkpoint_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "deca_model.tar"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(DecaWeightsError, match="deca_model.tar"):
        load_deca(path)


def test_unset_path_names_the_setting() -> None:
    with pytest.raises(ValueError) as info:
        load_deca("")
    message = str(info.value)
    assert message.startswith("no DECA weights given: reconstruction deca needs `preprocess.deca_model`")
    for needle in ("deca_model.tar", "drive.google.com", "generic_model.pkl"):
        assert needle in message
    assert "not found: ." not in message

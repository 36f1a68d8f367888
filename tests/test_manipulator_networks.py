"""NED's four manipulator networks at the paper's widths, and the XX_nets.pth files they load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from scmcl.config import validate_config
from scmcl.manipulator.checkpoint import ManipulatorWeightsError, load_networks, save_networks
from scmcl.manipulator.networks import NETWORK_KEYS, ManipulatorNets, NetworkSizes, padded_columns
from scmcl.manipulator.checkpoint import PADDING_KEY, RESIDUAL_KEY
from scmcl.options import schema_default


def _lstm(size_in: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """PyTorch's names for NED's 2-layer bidirectional ``LSTM`` attribute."""
    keys = {}
    for layer, width in ((0, size_in), (1, 2 * hidden)):
        for suffix in ("", "_reverse"):
            keys |= {f"LSTM.weight_ih_l{layer}{suffix}": (4 * hidden, width),
                     f"LSTM.weight_hh_l{layer}{suffix}": (4 * hidden, hidden),
                     f"LSTM.bias_ih_l{layer}{suffix}": (4 * hidden,), f"LSTM.bias_hh_l{layer}{suffix}": (4 * hidden,)}
    return keys


def _trunk(head_out: int) -> dict[str, tuple[int, ...]]:
    """NED's StyleEncoder / Discriminator: seq1 51→512→256, LSTM 128, seq2 256→128→64→head_out."""
    return {"seq1.0.weight": (512, 51), "seq1.0.bias": (512,), "seq1.2.weight": (256, 512), "seq1.2.bias": (256,),
            **_lstm(256, 128),
            "seq2.0.weight": (128, 256), "seq2.0.bias": (128,), "seq2.2.weight": (64, 128), "seq2.2.bias": (64,),
            "seq2.4.weight": (head_out, 64), "seq2.4.bias": (head_out,)}


# The state dicts of foivospar/NED manipulator/models/networks.py (unchanged in ZH-Xu410/SCMCL), as
# create_model builds them: style 16, latent 4, hidden 64, 7 emotions, 51 coefficients.
OFFICIAL_LAYOUT = {
    "generator": {"seq1.0.weight": (512, 67), "seq1.0.bias": (512,), "seq1.2.weight": (512, 512), "seq1.2.bias": (512,),
                  **_lstm(512, 512),
                  "seq2.0.weight": (1024, 1024), "seq2.0.bias": (1024,), "seq2.2.weight": (1024, 1024),
                  "seq2.2.bias": (1024,), "seq2.4.weight": (51, 1024), "seq2.4.bias": (51,)},
    "mapping_network": {"shared.0.weight": (64, 4), "shared.0.bias": (64,), "shared.2.weight": (64, 64),
                        "shared.2.bias": (64,), "shared.4.weight": (64, 64), "shared.4.bias": (64,),
                        **{key: shape for e in range(7) for key, shape in
                           {f"unshared.{e}.0.weight": (64, 64), f"unshared.{e}.0.bias": (64,),
                            f"unshared.{e}.2.weight": (16, 64), f"unshared.{e}.2.bias": (16,)}.items()}},
    "style_encoder": _trunk(16),
    "discriminator": _trunk(7),
}

N_EMOTIONS = len(schema_default("emotions"))
SEQ_LEN = schema_default("scmc.dists.seq_len")
PAPER = NetworkSizes.from_config(validate_config({}))


def _nets(seed: int, sizes: NetworkSizes = PAPER, n_emotions: int = N_EMOTIONS) -> ManipulatorNets:
    torch.manual_seed(seed)
    return ManipulatorNets(sizes, n_emotions).eval()


@pytest.fixture(scope="module")
def nets() -> ManipulatorNets:
    return _nets(0)


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"x": torch.randn(3, SEQ_LEN, 51, generator=generator), "style": torch.randn(3, 16, generator=generator),
            "z": torch.randn(3, 4, generator=generator), "labels": torch.tensor([0, 3, 6])}


@pytest.fixture(scope="module")
def saved(nets: ManipulatorNets, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nets") / "05_nets_finetuned.pth"
    save_networks(path, nets)
    return path


def _outputs(nets: ManipulatorNets, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {"generator": nets.generator(inputs["x"], inputs["style"]),
                "mapping_network": nets.mapping_network(inputs["z"], inputs["labels"]),
                "style_encoder": nets.style_encoder(inputs["x"]),
                "discriminator": nets.discriminator(inputs["x"], inputs["labels"])}


def test_schema_defaults_are_the_paper_sizes() -> None:
    assert PAPER == NetworkSizes(generator_residual=True, style_size=16, latent_size=4, mapping_hidden=64, lstm_layers=2,
                                 generator_frame_widths=(512, 512), generator_lstm_hidden=512,
                                 generator_head_widths=(1024, 1024), encoder_frame_widths=(512, 256),
                                 encoder_lstm_hidden=128, encoder_head_widths=(128, 64))
    assert (N_EMOTIONS, SEQ_LEN) == (7, 10)


def test_layout_is_the_official_one(nets: ManipulatorNets) -> None:
    for name, net in nets.networks().items():
        assert {key: tuple(value.shape) for key, value in net.state_dict().items()} == OFFICIAL_LAYOUT[name], name


def test_forward_shapes(nets: ManipulatorNets, inputs: dict[str, torch.Tensor]) -> None:
    out = _outputs(nets, inputs)
    assert out["generator"].shape == (3, SEQ_LEN, 51)
    assert out["mapping_network"].shape == (3, 16)
    assert out["style_encoder"].shape == (3, 16)
    assert out["discriminator"].shape == (3,)


def test_labels_select_a_head_and_a_logit(nets: ManipulatorNets, inputs: dict[str, torch.Tensor]) -> None:
    """A sample's style and logit depend on its own label only, not on the rest of the batch."""
    x, z = inputs["x"], inputs["z"]
    with torch.no_grad():
        alone = [nets.mapping_network(z[i:i + 1], torch.tensor([label])) for i, label in enumerate([0, 3, 6])]
        assert torch.allclose(torch.cat(alone), nets.mapping_network(z, inputs["labels"]), atol=1e-6)
        other = nets.mapping_network(z, torch.tensor([1, 3, 6]))
        assert not torch.allclose(other[0], alone[0][0]) and torch.allclose(other[1:], torch.cat(alone[1:]), atol=1e-6)
        logits = [nets.discriminator(x, torch.full((3,), label)) for label in range(N_EMOTIONS)]
        picked = nets.discriminator(x, inputs["labels"])
        assert torch.allclose(picked, torch.stack([logits[0][0], logits[3][1], logits[6][2]]), atol=1e-6)


def test_he_init_on_linear_layers_default_lstm(nets: ManipulatorNets) -> None:
    linear = nets.generator.seq2[2]  # 1024 → 1024: a million weights
    assert torch.count_nonzero(linear.bias) == 0
    assert linear.weight.std().item() == pytest.approx((2 / 1024) ** 0.5, rel=0.02)
    lstm = nets.generator.LSTM  # PyTorch's U(-1/sqrt(hidden), 1/sqrt(hidden)), biases included
    assert lstm.bias_ih_l0.abs().max().item() <= 512 ** -0.5 and torch.count_nonzero(lstm.bias_ih_l0) > 0


def test_file_is_the_official_container(nets: ManipulatorNets, saved: Path) -> None:
    payload = torch.load(saved, weights_only=True)
    assert list(payload) == [*NETWORK_KEYS, RESIDUAL_KEY, PADDING_KEY] and payload[RESIDUAL_KEY] is True
    for name in NETWORK_KEYS:
        assert {key: tuple(value.shape) for key, value in payload[name].items()} == OFFICIAL_LAYOUT[name]


def test_saved_file_loads_strictly_with_identical_outputs(nets, inputs, saved) -> None:
    fresh = _nets(seed=5)
    assert not torch.equal(_outputs(fresh, inputs)["generator"], _outputs(nets, inputs)["generator"])
    assert load_networks(saved, fresh) is fresh
    expected, loaded = _outputs(nets, inputs), _outputs(fresh, inputs)
    for name in NETWORK_KEYS:
        assert torch.equal(loaded[name], expected[name]), name


def test_generator_residual_adds_the_input(nets: ManipulatorNets, inputs: dict[str, torch.Tensor]) -> None:
    absolute = _nets(seed=0, sizes=dataclasses.replace(PAPER, generator_residual=False))
    with torch.no_grad():
        head = absolute.generator(inputs["x"], inputs["style"])
    assert torch.equal(_outputs(nets, inputs)["generator"], inputs["x"] + head)


def test_padded_columns_pass_through_and_travel_beside_the_state_dicts(nets, inputs, saved, tmp_path: Path) -> None:
    """The built-in head's 25 components leave exp_25..49 zero-padded: the generator copies them.
    The columns are no parameter: they travel in an entry of our files beside the state dicts,
    which still load strictly."""
    x = inputs["x"].clone()
    x[..., 26:] = 0
    padding = padded_columns(x)
    assert padding.tolist() == [False] * 26 + [True] * 25
    masked = _nets(seed=0)
    masked.generator.set_padding(padding)
    with torch.no_grad():
        plain, kept = nets.generator(x, inputs["style"]), masked.generator(x, inputs["style"])
    assert torch.equal(kept[..., 26:], x[..., 26:]) and plain[..., 26:].abs().min() > 0
    assert torch.equal(kept[..., :26], plain[..., :26])
    assert set(masked.generator.state_dict()) == set(OFFICIAL_LAYOUT["generator"])
    path = tmp_path / "05_nets.pth"
    save_networks(path, masked)
    assert torch.load(path, weights_only=True)[PADDING_KEY] == list(range(26, 51))
    assert load_networks(path, _nets(seed=2)).generator.padding.equal(padding)
    assert not load_networks(saved, masked).generator.padding.any()  # a file without the entry: none, as NED's


def test_released_file_without_the_key_is_absolute(nets, inputs, saved, tmp_path: Path) -> None:
    """NED's and SCMCL's files hold the four networks only: their generator re-synthesises frames."""
    path = tmp_path / "20_nets.pth"
    torch.save({name: state for name, state in torch.load(saved, weights_only=True).items() if name in NETWORK_KEYS}, path)
    released = load_networks(path, _nets(seed=4))
    assert released.generator.residual is False
    with torch.no_grad():
        head = nets.generator.frames(torch.cat([inputs["x"], inputs["style"][:, None].expand(-1, SEQ_LEN, -1)], dim=2))
    assert torch.equal(_outputs(released, inputs)["generator"], head)
    ours = tmp_path / "ours.pth"
    save_networks(ours, released)
    assert load_networks(ours, _nets(seed=4)).generator.residual is False  # the choice travels with the weights


def test_data_parallel_prefixed_file_loads(nets, inputs, saved, tmp_path: Path) -> None:
    payload = torch.load(saved, weights_only=True)
    path = tmp_path / "20_nets.pth"
    torch.save({name: {f"module.{key}": value for key, value in payload[name].items()} for name in NETWORK_KEYS}, path)
    fresh = load_networks(path, _nets(seed=6))
    assert torch.equal(_outputs(fresh, inputs)["style_encoder"], _outputs(nets, inputs)["style_encoder"])


class _Opaque:
    """A pickled object: what weights-only loading refuses."""


def _renamed(payload: dict) -> dict:
    generator = dict(payload["generator"])
    generator["seq1.0.w"] = generator.pop("seq1.0.weight")
    return payload | {"generator": generator}


@pytest.mark.parametrize("write, message", [
    (lambda path, payload: path.write_bytes(b""), "cannot be read as a weights-only torch file"),
    (lambda path, payload: path.write_bytes(b"not a checkpoint" * 4), "cannot be read as a weights-only torch file"),
    (lambda path, payload: torch.save({"generator": _Opaque()}, path), "holding pickled objects; UnpicklingError"),
    (lambda path, payload: torch.save([payload["generator"]], path), "holds a list, not the manipulator's dict"),
    (lambda path, payload: torch.save({k: payload[k] for k in NETWORK_KEYS[:3]}, path),
     "is not a manipulator XX_nets.pth: it lacks discriminator (it has generator, mapping_network, style_encoder)"),
    (lambda path, payload: torch.save(payload | {"style_encoder": torch.zeros(3)}, path),
     "style_encoder is a Tensor, not a state dict"),
    (lambda path, payload: torch.save({k: {"state": {}, "param_groups": []} for k in NETWORK_KEYS}, path),
     "holds optimizer states (an XX_optims.pth), not network weights"),
    (lambda path, payload: torch.save(payload | {RESIDUAL_KEY: 1}, path), "generator_residual is 1, not true or false"),
    (lambda path, payload: torch.save(payload | {PADDING_KEY: [26, 51]}, path), "generator_padding is [26, 51], not a list of frame columns 0..50"),
    (lambda path, payload: torch.save(_renamed(payload), path),
     "does not have NED's manipulator layout: generator has missing 1 (seq1.0.weight) and unexpected 1 (seq1.0.w) "
     "parameters; the number of emotions"),
])
def test_wrong_file_is_one_clear_error(write, message, nets, saved, tmp_path: Path) -> None:
    path = tmp_path / "wrong.pth"
    write(path, torch.load(saved, weights_only=True))
    with pytest.raises(ManipulatorWeightsError) as info:
        load_networks(path, _nets(seed=7))
    text = str(info.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text
    assert isinstance(info.value, ValueError)  # the CLI prints it as `scmcl <cmd>: error: <msg>`


def test_other_widths_name_the_parameter_and_both_shapes(saved: Path) -> None:
    narrow = dataclasses.replace(PAPER, generator_lstm_hidden=256)
    target = _nets(seed=8, sizes=narrow)
    before = {key: value.clone() for key, value in target.state_dict().items()}
    with pytest.raises(ManipulatorWeightsError) as info:
        load_networks(saved, target)
    assert str(info.value) == (
        f"{saved} does not fit the configured networks: generator.LSTM.weight_ih_l0 is (2048, 512) in the file but "
        "(1024, 512) here (+16 more); the manipulator.networks sizes and the number of emotions must match the "
        "checkpoint's")
    assert all(torch.equal(value, before[key]) for key, value in target.state_dict().items())  # left untouched


def test_fewer_emotions_are_a_layout_error(saved: Path) -> None:
    with pytest.raises(ManipulatorWeightsError, match=r"mapping_network has unexpected 4 \(unshared\.6\.0\.weight, "
                                                      r"unshared\.6\.0\.bias, unshared\.6\.2\.weight, \.\.\.\)"):
        load_networks(saved, _nets(seed=9, n_emotions=6))


def test_missing_file_is_named(nets: ManipulatorNets, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manipulator weights .*absent.pth not found"):
        load_networks(tmp_path / "absent.pth", nets)

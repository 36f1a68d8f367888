"""NED's renderer generator at the paper's sizes, and the XX_net_G.pth files it loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scmcl.renderer.checkpoint import RendererWeightsError, load_network, save_network
from scmcl.renderer.networks import FRAME_CHANNELS, RGB, DiscriminatorSizes, Generator, MultiscaleDiscriminator, RendererSizes
from tests.helpers import assert_float32_close

PAPER = RendererSizes(ngf=64, downsample=3, blocks=9, frames=3)
SMALL = RendererSizes(ngf=8, downsample=2, blocks=3, frames=3)
SIZE = 32


def official_layout(ngf: int = 64, downsample: int = 3, blocks: int = 9, frames: int = 3) -> list[tuple[str, tuple]]:
    """The ordered (key, shape) list of foivospar/NED renderer/models/networks.py ``Generator``
    (unchanged in SCMCL) as its state_dict() gives it; docs/ned-renderer-layout.md §2.1."""
    keys: list[tuple[str, tuple]] = []

    def conv(prefix: str, out: int, into: int, kernel: int) -> None:
        keys.extend([(f"{prefix}.weight", (out, into, kernel, kernel)), (f"{prefix}.bias", (out,))])

    def norm(prefix: str, channels: int) -> None:
        keys.extend([(f"{prefix}.running_mean", (channels,)), (f"{prefix}.running_var", (channels,)),
                     (f"{prefix}.num_batches_tracked", ())])

    def block(prefix: str, channels: int) -> None:
        for alias in ("resnetblock_sequential", "conv_block"):
            conv(f"{prefix}.{alias}.1", channels, channels, 3)
            norm(f"{prefix}.{alias}.2", channels)
            conv(f"{prefix}.{alias}.5", channels, channels, 3)
            norm(f"{prefix}.{alias}.6", channels)

    bottleneck = ngf * 2 ** downsample
    for name, channels_in in (("model_down_seg", 9 * frames), ("model_down_img", 3 * (frames - 1))):
        conv(f"{name}.1", ngf, channels_in, 7)
        norm(f"{name}.2", ngf)
        index = 4
        for i in range(downsample):
            conv(f"{name}.{index}", ngf * 2 ** (i + 1), ngf * 2 ** i, 3)
            norm(f"{name}.{index + 1}", ngf * 2 ** (i + 1))
            index += 3
        for b in range(blocks - blocks // 2):
            block(f"{name}.{index + b}", bottleneck)
    for b in range(blocks // 2):
        block(f"model_res_img.{b}", bottleneck)
    for i in range(downsample):
        width = ngf * 2 ** (downsample - i)
        keys.extend([(f"model_up_img.{3 * i}.weight", (width, width // 2, 3, 3)), (f"model_up_img.{3 * i}.bias", (width // 2,))])
        norm(f"model_up_img.{3 * i + 1}", width // 2)
    conv("model_final_img.1", 3, ngf, 7)
    return keys


def _generator(seed: int, sizes: RendererSizes = SMALL) -> Generator:
    torch.manual_seed(seed)
    return Generator(sizes)


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    conditioning = torch.rand(2, FRAME_CHANNELS * SMALL.frames, SIZE, SIZE, generator=generator)
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[:, :, 8:24, 6:26] = 1
    conditioning[:, -1:] = mask  # the current frame's face mask
    previous = torch.rand(2, RGB * (SMALL.frames - 1), SIZE, SIZE, generator=generator) * 2 - 1
    return {"conditioning": conditioning, "previous": previous, "mask": mask}


def _render(generator: Generator, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return generator(inputs["conditioning"], inputs["previous"])


def test_paper_generator_has_the_official_keys_in_order() -> None:
    state = Generator(PAPER).state_dict()
    assert [(key, tuple(value.shape)) for key, value in state.items()] == official_layout()
    assert len(state) == 337 and sum(p.numel() for p in Generator(PAPER).parameters()) == 70_834_755


def test_each_resnet_block_tensor_is_one_tensor_under_both_names() -> None:
    state = _generator(0).state_dict()
    first, second = state["model_res_img.0.resnetblock_sequential.1.weight"], state["model_res_img.0.conv_block.1.weight"]
    assert first.data_ptr() == second.data_ptr()


def test_output_is_masked_and_eval_mode_keeps_instance_statistics(inputs) -> None:
    generator = _generator(1)
    trained_mode = _render(generator.train(), inputs)
    assert trained_mode.shape == (2, RGB, SIZE, SIZE)
    background = inputs["mask"].expand_as(trained_mode) == 0
    assert torch.equal(trained_mode[background], torch.full_like(trained_mode[background], -1.0))
    assert trained_mode.abs().max() <= 1
    # NED never leaves train mode: each image is normalised with its own statistics, in eval mode too.
    assert_float32_close(_render(generator.eval(), inputs), trained_mode)


def test_saved_file_loads_strictly_with_identical_outputs(inputs, tmp_path: Path) -> None:
    path = tmp_path / "20_net_G.pth"
    source = _generator(2).eval()
    save_network(path, source)
    assert list(torch.load(path, weights_only=True)) == [key for key, _ in official_layout(8, 2, 3, 3)]
    fresh = _generator(5).eval()
    assert not torch.equal(_render(fresh, inputs), _render(source, inputs))
    assert torch.equal(_render(load_network(path, fresh), inputs), _render(source, inputs))
    prefixed = tmp_path / "wrapped_net_G.pth"
    torch.save({f"module.{key}": value for key, value in source.state_dict().items()}, prefixed)
    assert torch.equal(_render(load_network(prefixed, _generator(6).eval()), inputs), _render(source, inputs))


def _one_alias(state: dict) -> dict:
    return {key: value for key, value in state.items() if ".conv_block." not in key}


@pytest.mark.parametrize("write, message", [
    (lambda path, state: path.write_bytes(b""), "cannot be read as a weights-only torch file"),
    (lambda path, state: torch.save([state], path), "holds a list, not a network's state dict"),
    (lambda path, state: torch.save({"rendererG": {f"netG.{k}": v for k, v in state.items()}}, path),
     "is SCMCL's bundle of every network (%02d_nets.pth); use the generator it exports, export/01_net_G.pth"),
    (lambda path, state: torch.save(_one_alias(state), path),
     "does not have NED's renderer generator layout: the generator has missing 50 "  # 5 blocks × 10 tensors
     "(model_down_seg.10.conv_block.1.weight, model_down_seg.10.conv_block.1.bias, "
     "model_down_seg.10.conv_block.2.running_mean, ...) parameters"),
])
def test_wrong_file_is_one_clear_error(write, message, tmp_path: Path) -> None:
    path = tmp_path / "wrong_net_G.pth"
    write(path, _generator(7).state_dict())
    target = _generator(8)
    before = {key: value.clone() for key, value in target.state_dict().items()}
    with pytest.raises(RendererWeightsError) as info:
        load_network(path, target)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text
    assert all(torch.equal(value, before[key]) for key, value in target.state_dict().items())  # untouched


def test_other_widths_name_the_tensor_and_both_shapes(tmp_path: Path) -> None:
    path = tmp_path / "01_net_G.pth"
    save_network(path, _generator(9))
    with pytest.raises(RendererWeightsError, match=r"generator\.model_down_seg\.1\.weight is \(8, 27, 7, 7\) in the "
                                                    r"file but \(16, 27, 7, 7\) here \(\+\d+ more\)"):
        load_network(path, _generator(9, RendererSizes(ngf=16, downsample=2, blocks=3, frames=3)))


def official_discriminator_layout(ndf: int = 64, layers: int = 3, scales: int = 2) -> list[tuple[str, tuple]]:
    """NED's MultiscaleDiscriminator(12, ndf, n_layers_D, num_D, getIntermFeat=True) state dict:
    stages as scale<i>_layer<j>, InstanceNorm statistics on every middle stage."""
    keys: list[tuple[str, tuple]] = []
    for i in range(scales):
        width_in, width = 12, min(64, ndf * 2 ** (scales - 1 - i))
        for j in range(layers + 2):
            out = 1 if j == layers + 1 else width if j == 0 else min(width_in * 2, 512)
            keys += [(f"scale{i}_layer{j}.0.weight", (out, width_in, 4, 4)), (f"scale{i}_layer{j}.0.bias", (out,))]
            if 0 < j <= layers:
                keys += [(f"scale{i}_layer{j}.1.{k}", (out,)) for k in ("running_mean", "running_var")]
                keys.append((f"scale{i}_layer{j}.1.num_batches_tracked", ()))
            width_in = out
    return keys


def test_paper_discriminator_has_the_official_keys_and_patch_sizes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    discriminator = MultiscaleDiscriminator(DiscriminatorSizes(ndf=64, layers=3, scales=2))
    assert [(key, tuple(value.shape)) for key, value in discriminator.state_dict().items()] == official_discriminator_layout()
    assert sum(p.numel() for p in discriminator.parameters()) == 5_547_906
    with torch.no_grad():
        features = discriminator(torch.rand(1, FRAME_CHANNELS, 256, 256), torch.rand(1, RGB, 256, 256) * 2 - 1)
    assert [len(stages) for stages in features] == [5, 5]
    assert [tuple(stages[-1].shape) for stages in features] == [(1, 1, 35, 35), (1, 1, 19, 19)]  # full size first
    save_network(tmp_path / "15_net_Dm.pth", discriminator)
    torch.manual_seed(1)
    fresh = load_network(tmp_path / "15_net_Dm.pth", MultiscaleDiscriminator(DiscriminatorSizes(ndf=64, layers=3, scales=2)))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), discriminator.state_dict().values()))
    with pytest.raises(RendererWeightsError, match="does not have NED's renderer discriminator layout: the discriminator has "
                                                    "missing 19"):
        load_network(tmp_path / "15_net_Dm.pth", MultiscaleDiscriminator(DiscriminatorSizes(ndf=64, layers=3, scales=3)))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="renderer weights .*absent_net_G.pth not found"):
        load_network(tmp_path / "absent_net_G.pth", _generator(0))

"""SCMCL's released SCMC checkpoints load into our encoders: a file of the official layout (keys
and shapes written out here from SCMCL's scmc/models.py and scmc/cross_attention.py, filled with
seeded random values) gives through `scmcl scmc import` the outputs that the official computation
gives with those parameters, and a wrong file is one error line naming it."""

from __future__ import annotations

import hashlib
import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml

from scmcl.cli import main
from scmcl.scmc.models import ImageEncoder, audio_encoder, expression_encoder
from scmcl.scmc.train import JointModels, encoder_contents
from scmcl.train.loop import load_published
from tests.conftest import REPO, run_cmd

# AudioEncoder/ExprEncoder(nconv=14, nchan=64): the width doubles before layers 3, 7, 11; stride 2
# where iconv % downsample_freq == 0 (2 for audio, 4 for the 3DMM vector).
WIDTHS = (64,) * 3 + (128,) * 4 + (256,) * 4 + (512,) * 3
STRIDES = {"audio": [2 if i % 2 == 0 else 1 for i in range(14)], "expression": [2 if i % 4 == 0 else 1 for i in range(14)]}
INPUT_LENGTH = {"audio": 533, "expression": 51}  # one 1/30 s frame of 16 kHz audio; [jaw_open, exp_0..49]
HEADS = 4
# CrossAttentionSeq(in_features=512, dim=128, num_blocks=1, heads=4): the proj layers, then one
# CrossAttentionBlock (norm_q/k/v, MultiHeadAttention to_q/k/v/out, norm, FeedForward fc1/fc2).
ATTENTION = {
    "proj_q.weight": (128, 512), "proj_q.bias": (128,), "proj_x.weight": (128, 512), "proj_x.bias": (128,),
    **{f"blocks.0.norm_{s}.{p}": (128,) for s in "qkv" for p in ("weight", "bias")},
    **{f"blocks.0.attention.to_{s}.{p}": (128, 128) if p == "weight" else (128,) for s in ("q", "k", "v", "out")
       for p in ("weight", "bias")},
    "blocks.0.norm.weight": (128,), "blocks.0.norm.bias": (128,),
    "blocks.0.ffn.fc1.weight": (256, 128), "blocks.0.ffn.fc1.bias": (256,),
    "blocks.0.ffn.fc2.weight": (128, 256), "blocks.0.ffn.fc2.bias": (128,),
}
SCALE = {"w": (1,), "b": (1,)}


def conv_layout() -> dict[str, tuple]:
    """convs.i = Sequential(Conv1d(k3, no bias), BatchNorm1d, ReLU), then fc 512→128."""
    layout, channels = {}, 1
    for i, width in enumerate(WIDTHS):
        layout[f"convs.{i}.0.weight"] = (width, channels, 3)
        layout.update({f"convs.{i}.1.{p}": (width,) for p in ("weight", "bias", "running_mean", "running_var")})
        layout[f"convs.{i}.1.num_batches_tracked"] = ()
        channels = width
    return {**layout, "fc.weight": (128, 512), "fc.bias": (128,)}


def image_layout() -> dict[str, tuple]:
    """ImageEncoder.model: torchvision's ResNet-18 with fc replaced by Linear(512, 128)."""
    resnet = {f"model.{k}": tuple(v.shape) for k, v in torchvision.models.resnet18().state_dict().items()}
    return {**resnet, "model.fc.weight": (128, 512), "model.fc.bias": (128,)}


def fill(layout: dict[str, tuple], seed: int) -> dict[str, torch.Tensor]:
    """Seeded values that keep activations moderate through 14 layers."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        elif len(shape) > 1:
            out[key] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        elif key.endswith(".weight"):  # BatchNorm / LayerNorm gain
            out[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            out[key] = torch.randn(shape, generator=gen) * (1.0 if key in SCALE else 0.1)
    return out


def official_encode(p: dict, x: torch.Tensor, modality: str) -> torch.Tensor:
    for i, stride in enumerate(STRIDES[modality]):
        x = F.conv1d(x, p[f"convs.{i}.0.weight"], stride=stride, padding=1)
        x = F.batch_norm(x, p[f"convs.{i}.1.running_mean"], p[f"convs.{i}.1.running_var"],
                         p[f"convs.{i}.1.weight"], p[f"convs.{i}.1.bias"], training=False)
        x = F.relu(x)
    return x


def official_proj(p: dict, features: torch.Tensor, fc: str = "fc") -> torch.Tensor:
    pooled = features.flatten(2).mean(-1)
    return torch.tanh(pooled if pooled.shape[1] == 128 else F.linear(pooled, p[f"{fc}.weight"], p[f"{fc}.bias"]))


def official_attention(p: dict, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """CrossAttentionSeq.forward by hand, with the separate to_q/to_k/to_v tensors."""
    def lin(name, t):
        return F.linear(t, p[f"{name}.weight"], p[f"{name}.bias"])

    q = lin("proj_q", query.flatten(2).transpose(1, 2))
    x = lin("proj_x", context.flatten(2).transpose(1, 2))
    b, n, c = q.shape
    heads = [lin(f"blocks.0.attention.to_{s}", t).reshape(b, t.shape[1], HEADS, -1).transpose(1, 2)
             for s, t in (("q", q), ("k", x), ("v", x))]
    weights = (heads[0] @ heads[1].transpose(-2, -1) * (c // HEADS) ** -0.5).softmax(-1)
    x1 = lin("blocks.0.attention.to_out", (weights @ heads[2]).transpose(1, 2).reshape(b, n, c)) + q
    normed = F.layer_norm(x1, (c,), p["blocks.0.norm.weight"], p["blocks.0.norm.bias"])
    return (lin("blocks.0.ffn.fc2", F.gelu(lin("blocks.0.ffn.fc1", normed))) + x1).transpose(1, 2)


def official_image(p: dict) -> torch.nn.Module:
    """The official ImageEncoder's ResNet, loaded with its own key names."""
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Linear(512, 128)
    net.load_state_dict({k.removeprefix("model."): v for k, v in p.items()})
    return net.eval()


def official_image_encode(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    for layer in (net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4):
        x = layer(x)
    return x


def save_release(path, model) -> None:
    torch.save({"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}}, path)


def run_import(name: str, released, out_dir) -> int:
    return main(["scmc", "import", name, str(released), "--out", str(out_dir / f"{name}.pt"),
                 "--metrics", str(out_dir / f"{name}.metrics.tsv"), "--eval", str(out_dir / f"{name}.eval.json")])


@pytest.fixture(scope="module")
def finetunes(tmp_path_factory):
    """SCMCL fine-tunes of both visuals; the 3DMM one's expr_attn never trained (biases 0, LayerNorm
    gain 1, as after SCMCL's default of 1 frame) but with random weights, so outputs still differ."""
    root = tmp_path_factory.mktemp("released")
    expr_attn = fill(ATTENTION, 4)
    expr_attn.update({k: torch.zeros_like(v) for k, v in expr_attn.items() if k.startswith("blocks.0.") and k.endswith("bias")})
    expr_attn["blocks.0.norm.weight"] = torch.ones(128)
    parts = {
        "expression": {"audio_encoder": fill(conv_layout(), 1), "expr_encoder": fill(conv_layout(), 2),
                       "scale_layer": fill(SCALE, 3), "expr_attn": expr_attn, "audio_attn": fill(ATTENTION, 5)},
        "image": {"audio_encoder": fill(conv_layout(), 6), "image_encoder": fill(image_layout(), 7),
                  "scale_layer": fill(SCALE, 8), "image_attn": fill(ATTENTION, 9), "audio_attn": fill(ATTENTION, 10)},
    }
    for visual, model in parts.items():
        save_release(root / f"{visual}_finetune.pth", model)
    return root, parts


@pytest.mark.parametrize("modality", ["audio", "expression"])
def test_released_conv_encoder_gives_the_official_outputs(modality, tmp_path):
    params = fill(conv_layout(), 0)
    save_release(tmp_path / "last.pth", params)
    assert run_import(modality, tmp_path / "last.pth", tmp_path) == 0

    payload = load_published(tmp_path / f"{modality}.pt", encoder_contents(modality))
    encoder = (audio_encoder if modality == "audio" else expression_encoder)()
    encoder.load_state_dict(payload["encoder"])
    x = torch.randn(3, 1, INPUT_LENGTH[modality], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = encoder.eval()(x)
        expected = official_proj(params, official_encode(params, x, modality))
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    assert ours.abs().max() < 1 and ours.std() > 0.05  # not saturated, not constant

    assert payload["fingerprint"] == hashlib.sha256((tmp_path / "last.pth").read_bytes()).hexdigest()
    figures = json.loads((tmp_path / f"{modality}.eval.json").read_text())
    assert figures["modality"] == modality and figures["release"].endswith("last.pth") and "not trained" in figures["note"]
    assert pd.read_csv(tmp_path / f"{modality}.metrics.tsv", sep="\t").empty


def test_released_image_encoder_gives_the_official_outputs(tmp_path):
    params = fill(image_layout(), 0)
    save_release(tmp_path / "last.pth", params)
    assert run_import("image", tmp_path / "last.pth", tmp_path) == 0

    payload = load_published(tmp_path / "image.pt", encoder_contents("image"))
    encoder = ImageEncoder()
    encoder.load_state_dict(payload["encoder"])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = official_proj(params, official_image_encode(official_image(params), x), fc="model.fc")
        ours = encoder.eval()(x)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    assert payload["image_size"] == 128  # what SCMCL trained the image encoder on


def test_released_3dmm_finetune_gives_the_official_metric(finetunes, tmp_path):
    root, parts = finetunes
    p = parts["expression"]
    assert run_import("finetune_expression", root / "expression_finetune.pth", tmp_path) == 0
    models = JointModels.load(tmp_path / "finetune_expression.pt")
    gen = torch.Generator().manual_seed(2)
    audio = torch.randn(3, 4, 1, 533, generator=gen)  # [src_t, src_t+1, dst_t, dst_t+1]
    expression = torch.randn(3, 4, 1, 51, generator=gen)

    def official_embed(enc: dict, attn: dict, frames: torch.Tensor, modality: str) -> torch.Tensor:
        features = [official_encode(enc, frames[:, i], modality) for i in range(4)]
        sides = [official_attention(attn, features[1], features[0]), official_attention(attn, features[3], features[2])]
        return torch.stack([official_proj(enc, side) for side in sides], 1)

    with torch.no_grad():
        torch.testing.assert_close(models.embed("audio", audio),
                                   official_embed(p["audio_encoder"], p["audio_attn"], audio, "audio"), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(models.embed("expression", expression),
                                   official_embed(p["expr_encoder"], p["expr_attn"], expression, "expression"),
                                   rtol=1e-4, atol=1e-5)
        d = torch.rand(3, 3, generator=gen)
        torch.testing.assert_close(models.scale(d), p["scale_layer"]["w"] * d + p["scale_layer"]["b"])
    figures = json.loads((tmp_path / "finetune_expression.eval.json").read_text())
    assert figures["untrained_attention"] == ["visual"]  # expr_attn at its initial values, audio_attn trained


def test_released_image_finetune_gives_the_official_metric(finetunes, tmp_path):
    root, parts = finetunes
    p = parts["image"]
    assert run_import("finetune_image", root / "image_finetune.pth", tmp_path) == 0
    models = JointModels.load(tmp_path / "finetune_image.pt")
    frames = torch.randn(2, 4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    net = official_image(p["image_encoder"])
    with torch.no_grad():
        features = [official_image_encode(net, frames[:, i]) for i in range(4)]
        sides = [official_attention(p["image_attn"], features[1], features[0]),
                 official_attention(p["image_attn"], features[3], features[2])]
        expected = torch.stack([official_proj({}, side) for side in sides], 1)
        torch.testing.assert_close(models.embed("image", frames), expected, rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "finetune_image.eval.json").read_text())["untrained_attention"] == []


def _without(model: dict, part: str | None, key: str) -> dict:
    if part is None:
        return {k: v for k, v in model.items() if k != key}
    return {**model, part: {k: v for k, v in model[part].items() if k != key}}


def _reshaped(model: dict, key: str, shape: tuple) -> dict:
    return {**model, key: torch.zeros(shape)}


@pytest.mark.parametrize("name, make, message", [
    ("audio", lambda parts: _without(fill(conv_layout(), 0), None, "convs.5.1.running_var"),
     "is not SCMCL's audio encoder: missing keys convs.5.1.running_var: check scmc.weights.audio (SCMCL's scmc/audio/last.pth)"),
    ("expression", lambda parts: _reshaped(fill(conv_layout(), 0), "fc.weight", (128, 256)),
     "is not SCMCL's expression encoder: wrong shapes fc.weight (128, 256) (expected (128, 512)): check scmc.weights.expression"),
    ("audio", lambda parts: {**fill(conv_layout(), 0), "convs.14.0.weight": torch.zeros(512, 512, 3)},
     "is not SCMCL's audio encoder: unexpected keys convs.14.0.weight: check"),
    ("finetune_expression", lambda parts: fill(conv_layout(), 0),
     "holds one encoder's state dict, expected SCMCL's audio+expression fine-tune with model parts audio_encoder, "
     "expr_encoder, scale_layer, expr_attn, audio_attn: check scmc.weights.finetune_expression"),
    ("audio", lambda parts: parts["expression"],
     "holds an SCMCL fine-tune (model parts audio_encoder, expr_encoder, scale_layer, expr_attn, audio_attn), "
     "expected one audio encoder's state dict"),
    ("finetune_expression", lambda parts: parts["image"],
     "has model parts audio_encoder, image_encoder, scale_layer, image_attn, audio_attn, expected audio_encoder, "
     "expr_encoder, scale_layer, expr_attn, audio_attn"),
    ("finetune_expression", lambda parts: _without(parts["expression"], "expr_attn", "blocks.0.attention.to_k.weight"),
     "is not SCMCL's audio+expression fine-tune: missing keys expr_attn.blocks.0.attention.to_k.weight: check"),
], ids=["missing_key", "wrong_shape", "extra_block", "encoder_as_finetune", "finetune_as_encoder", "other_visual",
        "missing_attention_key"])
def test_wrong_release_is_one_line_naming_file_and_keys(name, make, message, finetunes, tmp_path, capsys):
    released = tmp_path / "last.pth"
    save_release(released, make(finetunes[1]))
    assert run_import(name, released, tmp_path) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"scmcl scmc: error: {released} ")
    assert message in lines[0]
    assert not (tmp_path / f"{name}.pt").exists()


def test_not_a_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    assert run_import("audio", tmp_path / "garbage.pth", tmp_path) == 1
    assert run_import("audio", tmp_path / "other.pth", tmp_path) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == (f"scmcl scmc: error: {tmp_path / 'garbage.pth'} is not a readable torch checkpoint (UnpicklingError): "
                        "check scmc.weights.audio (SCMCL's scmc/audio/last.pth)")
    assert lines[1].startswith(f"scmcl scmc: error: {tmp_path / 'other.pth'} is not an SCMCL checkpoint "
                               "{'model': ..., 'optimizer': ...} (found ['state_dict'])")


@pytest.mark.workflow
def test_dry_run_imports_the_released_audio_encoder_instead_of_training(tmp_path):
    released = tmp_path / "audio_last.pth"
    released.write_bytes(b"")  # a dry run only needs the file to exist
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(yaml.safe_dump({"scmc": {"weights": {"audio": str(released)}}}))
    result = run_cmd(["snakemake", "-n", "--forceall", "--configfile", str(REPO / "config/config.yaml"), str(overrides)])
    assert result.returncode == 0, result.stderr
    assert f"scmcl scmc import audio {released} --out work/scmc/audio.pt" in result.stdout
    assert "scmcl scmc train audio" not in result.stdout and "scmcl scmc train expression" in result.stdout
    assert "--audio-weights work/scmc/audio.pt" in result.stdout  # the fine-tunes start from the import
    job = result.stdout.split("rule train_scmc_audio:")[1].split("rule ")[0]
    assert "input: " + str(released) in job and "aligned_pairs" not in job  # no training inputs

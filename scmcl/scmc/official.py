"""SCMCL's released SCMC metric (``scmc/{audio,3dmm,image}/last.pth`` and
``scmc/{3dmm,image}_finetune/last.pth``, method.md §7.1–7.2) converted into our encoders and
published in our weight format, so a user with the release need not train (``scmc.weights``).

A released encoder file is ``{'model': <encoder state dict>, 'optimizer': ...}``; a fine-tune is
``{'model': {'audio_encoder', 'expr_encoder'|'image_encoder', 'scale_layer', 'expr_attn'|'image_attn',
'audio_attn'}, 'optimizer': ...}``. The optimizer state is not used. Same layers, same shapes;
only the names differ (official → ours):

audio / 3DMM encoder (``AudioEncoder``/``ExprEncoder``: ``convs.i`` = Sequential(Conv1d, BN, ReLU);
ours is one flat Sequential with three modules per layer)
    ``convs.{i}.0.weight``                      → ``layers.{3i}.weight``
    ``convs.{i}.1.{weight,bias,running_*,num_batches_tracked}`` → ``layers.{3i+1}.*``
    ``fc.*``                                    → ``fc.*``
image encoder (``ImageEncoder.model`` is a whole torchvision ResNet-18 with its fc replaced;
ours keeps the trunk as a Sequential and the fc beside it)
    ``model.conv1.*`` → ``trunk.0.*``, ``model.bn1.*`` → ``trunk.1.*``,
    ``model.layer{k}.*`` → ``trunk.{3+k}.*`` (k = 1..4), ``model.fc.*`` → ``fc.*``
cross-attention (``CrossAttentionSeq``, one block, 4 heads; ours uses ``nn.MultiheadAttention``)
    ``proj_q.*``, ``proj_x.*``                  → same names
    ``blocks.0.attention.to_{q,k,v}.weight``    → ``attn.in_proj_weight``: the three (128,128)
    ``blocks.0.attention.to_{q,k,v}.bias``      → ``attn.in_proj_bias``: concatenated along dim 0 in
        the order q, k, v, which is how ``nn.MultiheadAttention`` splits its fused projection
        (head h uses channels 32h..32h+31 in both, the scale is 32^-0.5 in both)
    ``blocks.0.attention.to_out.*``             → ``attn.out_proj.*``
    ``blocks.0.norm.*``                         → ``norm.*``
    ``blocks.0.ffn.fc1.*``, ``blocks.0.ffn.fc2.*`` → ``ffn.0.*``, ``ffn.2.*``
    ``blocks.0.norm_{q,k,v}.*``                 → nothing: the original computes these LayerNorms
        and overwrites their output (method.md §3.2), so they never affect a result; they must be
        present with their shapes, and are dropped
scale layer: ``w`` → ``weight``, ``b`` → ``bias``
fine-tune parts: ``audio_encoder`` → ``audio_encoder``, ``expr_encoder``/``image_encoder`` →
    ``visual_encoder``, ``audio_attn`` → ``audio_attention``, ``expr_attn``/``image_attn`` →
    ``visual_attention``, ``scale_layer`` → ``scale``.

The conversion is strict: every official key is consumed, every one of ours filled, every shape
checked; any fault is one ``ReleasedFileError`` line naming the file and the keys. The audio and
3DMM encoders have identical layers (only their strides differ), so no file can tell which of
the two it holds: the name it is imported as decides.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from scmcl.io.atomic import atomic_path
from scmcl.scmc.models import CrossAttention, ImageEncoder, audio_encoder, expression_encoder
from scmcl.scmc.train import JointModels, encoder_contents, finetune_contents
from scmcl.train.loop import UnreadableTorchFile, WeightFileError, publish_weights, read_torch

log = logging.getLogger(__name__)

#: ``scmc.weights`` names: what each imports as, and where it sits in SCMCL's release.
RELEASED = {"audio": "scmc/audio/last.pth", "expression": "scmc/3dmm/last.pth", "image": "scmc/image/last.pth",
            "finetune_expression": "scmc/3dmm_finetune/last.pth", "finetune_image": "scmc/image_finetune/last.pth"}
#: What SCMCL trained on (method.md §3.4–3.5), recorded in the imported files: 16 kHz audio,
#: faces cropped 35 px of 256 a side, 128 px for the image encoder and 64 px for its fine-tune.
SCMCL_SAMPLE_RATE = 16000
SCMCL_IMAGE_CROP = 35 / 256
SCMCL_IMAGE_SIZE = {"image": 128, "finetune_image": 64}
#: The fine-tune's part names in SCMCL's container for each visual modality.
_OFFICIAL_VISUAL = {"expression": "expr", "image": "image"}
_TRUNK = {0: "conv1", 1: "bn1", 4: "layer1", 5: "layer2", 6: "layer3", 7: "layer4"}
_ATTENTION = {"attn.in_proj_": "blocks.0.attention.to_{}.", "attn.out_proj.": "blocks.0.attention.to_out.",
              "norm.": "blocks.0.norm.", "ffn.0.": "blocks.0.ffn.fc1.", "ffn.2.": "blocks.0.ffn.fc2."}
_LISTED = 4  # keys named per kind of fault, so the message stays one readable line


class ReleasedFileError(WeightFileError):
    """A released SCMCL file that is unreadable or is not the checkpoint it is imported as."""


def _conv_source(key: str) -> list[str]:
    if match := re.fullmatch(r"layers\.(\d+)\.(.+)", key):
        layer, position = divmod(int(match[1]), 3)
        return [f"convs.{layer}.{position}.{match[2]}"]
    return [key]


def _image_source(key: str) -> list[str]:
    if match := re.fullmatch(r"trunk\.(\d+)\.(.+)", key):
        return [f"model.{_TRUNK[int(match[1])]}.{match[2]}"]
    return [f"model.{key}"]


def _attention_source(key: str) -> list[str]:
    for ours, official in _ATTENTION.items():
        if key.startswith(ours):
            rest = key[len(ours):]
            if ours == "attn.in_proj_":  # in_proj_weight / in_proj_bias: q, k, v stacked
                return [official.format(part) + rest for part in "qkv"]
            return [official + rest]
    return [key]


def _scale_source(key: str) -> list[str]:
    return [{"weight": "w", "bias": "b"}[key]]


#: Official LayerNorms with no counterpart (see the module docstring), by key: their shape is
#: that of our ``norm`` entry of the same parameter.
_DEAD_ATTENTION = {f"blocks.0.norm_{side}.{param}": f"norm.{param}" for side in "qkv" for param in ("weight", "bias")}


_ENCODERS = {"audio": audio_encoder, "expression": expression_encoder, "image": ImageEncoder}


def _encoder_source(modality: str) -> Callable[[str], list[str]]:
    return _image_source if modality == "image" else _conv_source


class _Faults:
    """Missing, unexpected and misshapen official keys of every part, reported as one line."""

    def __init__(self) -> None:
        self.missing: list[str] = []
        self.unexpected: list[str] = []
        self.shapes: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self) -> str:
        parts = []
        for label, keys in (("missing keys", self.missing), ("unexpected keys", self.unexpected), ("wrong shapes", self.shapes)):
            if keys:
                more = f" (+{len(keys) - _LISTED} more)" if len(keys) > _LISTED else ""
                parts.append(f"{label} {', '.join(keys[:_LISTED])}{more}")
        return "; ".join(parts)


def _convert(official: dict, module: nn.Module, source: Callable[[str], list[str]], faults: _Faults,
             prefix: str = "", dead: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """Our state dict of ``module`` from an official one, recording every fault under ``prefix``
    (the part's name in a fine-tune). An entry made of several official tensors concatenates
    them along dim 0 in the order ``source`` lists them."""
    ours = module.state_dict()
    plan = {key: source(key) for key in ours}
    expected = {}
    for key, tensor in ours.items():
        rows = tensor.shape[0] // len(plan[key]) if len(plan[key]) > 1 else None
        for name in plan[key]:
            expected[name] = tuple(tensor.shape) if rows is None else (rows, *tensor.shape[1:])
    expected.update({name: tuple(ours[like].shape) for name, like in (dead or {}).items()})
    faults.missing += [prefix + name for name in expected if name not in official]
    faults.unexpected += [prefix + str(name) for name in official if name not in expected]
    for name, shape in expected.items():
        value = official.get(name)
        if value is not None and (not isinstance(value, torch.Tensor) or tuple(value.shape) != shape):
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            faults.shapes.append(f"{prefix}{name} {found} (expected {shape})")
    if faults:
        return {}
    return {key: torch.cat([official[name] for name in names]) if len(names) > 1 else official[names[0]]
            for key, names in plan.items()}


def _read(path: Path, hint: str) -> dict:
    """The ``model`` entry of a released checkpoint."""
    if not path.is_file():
        raise FileNotFoundError(f"released SCMC weights {path} not found: {hint}")
    try:
        checkpoint = read_torch(path, "cpu")
    except UnreadableTorchFile as err:
        raise ReleasedFileError(f"{path} is not a readable torch checkpoint ({err}): {hint}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        found = sorted(map(str, checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ReleasedFileError(f"{path} is not an SCMCL checkpoint {{'model': ..., 'optimizer': ...}} "
                                f"(found {found}): {hint}")
    return checkpoint["model"]


def _finetune_parts(visual: str) -> list[str]:
    tag = _OFFICIAL_VISUAL[visual]
    return ["audio_encoder", f"{tag}_encoder", "scale_layer", f"{tag}_attn", "audio_attn"]


def convert_encoder(path: str | Path, modality: str) -> dict[str, torch.Tensor]:
    """Our ``modality`` encoder's state dict from SCMCL's ``scmc/<m>/last.pth``."""
    path, name = Path(path), modality
    hint = f"check scmc.weights.{name} (SCMCL's {RELEASED[name]})"
    model = _read(path, hint)
    if model and all(isinstance(value, dict) for value in model.values()):
        raise ReleasedFileError(f"{path} holds an SCMCL fine-tune (model parts {', '.join(map(str, model))}), "
                                f"expected one {modality} encoder's state dict: {hint}")
    faults = _Faults()
    encoder = _ENCODERS[modality]()
    state = _convert(model, encoder, _encoder_source(modality), faults)
    if faults:
        raise ReleasedFileError(f"{path} is not SCMCL's {modality} encoder: {faults.describe()}: {hint}")
    encoder.load_state_dict(state, strict=True)
    return encoder.state_dict()


def convert_finetune(path: str | Path, visual: str) -> JointModels:
    """Our ``JointModels`` (eval mode) from SCMCL's ``scmc/<visual>_finetune/last.pth``."""
    path, name = Path(path), f"finetune_{visual}"
    hint = f"check scmc.weights.{name} (SCMCL's {RELEASED[name]})"
    model = _read(path, hint)
    expected = _finetune_parts(visual)
    if not all(isinstance(value, dict) for value in model.values()):
        raise ReleasedFileError(f"{path} holds one encoder's state dict, expected SCMCL's audio+{visual} fine-tune "
                                f"with model parts {', '.join(expected)}: {hint}")
    if sorted(map(str, model)) != sorted(expected):
        raise ReleasedFileError(f"{path} has model parts {', '.join(map(str, model))}, expected {', '.join(expected)} "
                                f"(SCMCL's audio+{visual} fine-tune): {hint}")
    models = JointModels(visual)
    audio, visual_encoder, scale, visual_attn, audio_attn = expected
    faults = _Faults()
    state = {}
    for part, ours, module, source, dead in (
            (audio, "audio_encoder", models.audio_encoder, _conv_source, None),
            (visual_encoder, "visual_encoder", models.visual_encoder, _encoder_source(visual), None),
            (audio_attn, "audio_attention", models.audio_attention, _attention_source, _DEAD_ATTENTION),
            (visual_attn, "visual_attention", models.visual_attention, _attention_source, _DEAD_ATTENTION),
            (scale, "scale", models.scale, _scale_source, None)):
        converted = _convert(model[part], module, source, faults, f"{part}.", dead)
        state.update({f"{ours}.{key}": value for key, value in converted.items()})
    if faults:
        raise ReleasedFileError(f"{path} is not SCMCL's audio+{visual} fine-tune: {faults.describe()}: {hint}")
    models.load_state_dict(state, strict=True)
    return models.eval()


def at_initialisation(attention: CrossAttention) -> bool:
    """Whether a cross-attention block still holds its initial values (every bias 0, the
    LayerNorm's weight 1): SCMCL's 3DMM fine-tune defaults to one frame, where the attention
    gets no gradient and stays random (method.md §3.5)."""
    biases = [attention.attn.in_proj_bias, attention.attn.out_proj.bias, attention.ffn[0].bias, attention.ffn[2].bias,
              attention.norm.bias]
    return bool(all((b == 0).all() for b in biases) and (attention.norm.weight == 1).all())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_released(name: str, path: str | Path, out: str | Path, metrics_out: str | Path, eval_out: str | Path) -> dict:
    """Convert SCMCL's released ``name`` (a ``scmc.weights`` key) into the outputs of the rule it
    replaces: weights in our format (fingerprint = sha256 of the released file, so a new file
    reruns what depends on it), a metrics table with no steps (none ran here), and an eval JSON
    saying the weights were imported, not trained or evaluated here."""
    path = Path(path)
    figures: dict = {"imported": str(path), "release": RELEASED[name], "sha256": _sha256(path),
                     "note": "SCMCL's released weights, converted; not trained or evaluated by this workflow"}
    payload = {"sample_rate": SCMCL_SAMPLE_RATE, "image_size": SCMCL_IMAGE_SIZE.get(name), "image_crop": SCMCL_IMAGE_CROP}
    if name.startswith("finetune_"):
        visual = name.removeprefix("finetune_")
        models = convert_finetune(path, visual)
        contents = finetune_contents(visual)
        # nframe: SCMCL's 3DMM fine-tune ran 1 frame by default, its image one 2; unknown for a file.
        payload.update(nframe=None, models=models.state_dict())
        untrained = [side for side, attention in (("audio", models.audio_attention), ("visual", models.visual_attention))
                     if at_initialisation(attention)]
        for side in untrained:
            log.warning("%s: the %s cross-attention holds its initial values (fine-tuned with 1 frame?): the "
                        "metric fuses frames with an untrained attention", path, side)
        figures.update(visual=visual, untrained_attention=untrained)
    else:
        contents = encoder_contents(name)
        payload.update(encoder=convert_encoder(path, name))
        figures.update(modality=name)
    publish_weights(out, contents, figures["sha256"], payload)
    with atomic_path(metrics_out) as tmp:
        tmp.write_text("step\tseconds\n")
    with atomic_path(eval_out) as tmp:
        tmp.write_text(json.dumps(figures, indent=1) + "\n")
    return figures

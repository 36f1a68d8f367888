"""NED's four manipulator networks (method.md §4.1) on windows of 51-d expression frames.

Attribute names follow NED's ``manipulator/models/networks.py`` (``seq1``/``LSTM``/``seq2``,
``shared``/``unshared``), and each MLP alternates Linear and ReLU as there, so the
``nn.Sequential`` indices, and therefore the state-dict keys, are the released checkpoints'.
The sizes come from the config section ``manipulator.networks``; its defaults are NED's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from scmcl.io.clip_data import EXPRESSION_DIM

#: A frame is [jaw_open, exp_0..49] (``clip_data.expression_view51``).
FRAME_SIZE = 1 + EXPRESSION_DIM
#: The entries of NED's ``XX_nets.pth``, in NED's order.
NETWORK_KEYS = ("generator", "mapping_network", "style_encoder", "discriminator")


@dataclass(frozen=True)
class NetworkSizes:
    """The config section ``manipulator.networks``; no defaults, the schema holds them."""

    generator_residual: bool
    style_size: int
    latent_size: int
    mapping_hidden: int
    lstm_layers: int
    generator_frame_widths: tuple[int, ...]
    generator_lstm_hidden: int
    generator_head_widths: tuple[int, ...]
    encoder_frame_widths: tuple[int, ...]
    encoder_lstm_hidden: int
    encoder_head_widths: tuple[int, ...]

    @classmethod
    def from_config(cls, config: dict) -> NetworkSizes:
        """From a validated config (``config["manipulator"]["networks"]``)."""
        return cls.from_values(config["manipulator"]["networks"])

    @classmethod
    def from_values(cls, values: dict) -> NetworkSizes:
        """From the section's values (lists as the config and the options hold them); other keys are ignored."""
        return cls(**{key: tuple(value) if isinstance(value, list) else value
                      for key, value in values.items() if key in cls.__dataclass_fields__})


def padded_columns(frames) -> torch.Tensor:
    """(51,) bool: the columns of (..., 51) frames that are zero in every frame, the zero padding
    of a face model with fewer expression components (a fitted coefficient is never exactly zero
    throughout a clip)."""
    return torch.as_tensor((frames == 0).reshape(-1, FRAME_SIZE).all(0))


def he_init(module: nn.Module) -> None:
    """NED's ``he_init``: kaiming normal (fan_in, ReLU gain) and zero bias on Linear layers;
    LSTMs keep PyTorch's uniform default, as in NED."""
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(module.bias)


def _mlp(size_in: int, widths: Sequence[int], size_out: int | None) -> nn.Sequential:
    """Linear → ReLU for each width, then a plain Linear to ``size_out`` if given."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(size_in, width), nn.ReLU()]
        size_in = width
    if size_out is not None:
        layers.append(nn.Linear(size_in, size_out))
    return nn.Sequential(*layers)


class _Recurrent(nn.Module):
    """Per-frame MLP (``seq1``) → bidirectional LSTM (``LSTM``) → per-frame MLP (``seq2``):
    the body of NED's generator, style encoder and discriminator. (B,T,size_in) → (B,T,size_out)."""

    def __init__(self, size_in: int, frame_widths: Sequence[int], lstm_hidden: int, lstm_layers: int,
                 head_widths: Sequence[int], size_out: int) -> None:
        super().__init__()
        self.seq1 = _mlp(size_in, frame_widths, None)
        self.LSTM = nn.LSTM(frame_widths[-1], lstm_hidden, lstm_layers, batch_first=True, bidirectional=True)
        self.seq2 = _mlp(2 * lstm_hidden, head_widths, size_out)
        self.apply(he_init)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq2(self.LSTM(self.seq1(x))[0])


class Generator(_Recurrent):
    """(B,T,51) expressions + (B,style) code → (B,T,51) edited expressions.

    NED's generator re-synthesises every frame (``residual=False``, what its released weights
    expect); with ``residual=True`` it adds its output to the input, so an edit starts from the
    source's own per-coefficient speech dynamics. The choice has no parameters of its own: it
    travels in our weight files beside the state dicts (``checkpoint.py``).

    Columns set by ``set_padding`` pass through unchanged: the expression tables zero-pad a face
    model with fewer than 50 components (the built-in head has 25), and no renderer sees those
    columns. A generator left to write there adds noise to every distance to a real clip
    (on the demo, 0.02 rms in each of 25 columns, a third of an angry edit's margin) and hands
    the discriminator a way to tell fakes that has nothing to do with emotion. With FLAME's 50
    components nothing is padded and the generator is NED's.
    """

    def __init__(self, style_size: int, frame_widths: Sequence[int], lstm_hidden: int, lstm_layers: int,
                 head_widths: Sequence[int], residual: bool) -> None:
        super().__init__(FRAME_SIZE + style_size, frame_widths, lstm_hidden, lstm_layers, head_widths, FRAME_SIZE)
        self.residual = residual
        self.register_buffer("padding", torch.zeros(FRAME_SIZE, dtype=torch.bool), persistent=False)

    def set_padding(self, columns: torch.Tensor) -> None:
        """Pass the (51,) boolean ``columns`` through: ``padded_columns`` of the training data,
        saved with the weights (``checkpoint.PADDING_KEY``)."""
        self.padding.copy_(torch.as_tensor(columns, dtype=torch.bool))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        style = style[:, None, :].expand(-1, x.shape[1], -1)
        out = self.frames(torch.cat([x, style], dim=2))
        return torch.where(self.padding, x, x + out if self.residual else out)


class StyleEncoder(_Recurrent):
    """(B,T,51) → (B,style): per-frame codes averaged over time, so any window length works."""

    def __init__(self, style_size: int, frame_widths: Sequence[int], lstm_hidden: int, lstm_layers: int,
                 head_widths: Sequence[int]) -> None:
        super().__init__(FRAME_SIZE, frame_widths, lstm_hidden, lstm_layers, head_widths, style_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frames(x).mean(dim=1)


class Discriminator(_Recurrent):
    """Multi-task discriminator: one real/fake logit per emotion, averaged over time; (B,T,51)
    and labels (B,) → (B,) logits of each sample's own label."""

    def __init__(self, n_emotions: int, frame_widths: Sequence[int], lstm_hidden: int, lstm_layers: int,
                 head_widths: Sequence[int]) -> None:
        super().__init__(FRAME_SIZE, frame_widths, lstm_hidden, lstm_layers, head_widths, n_emotions)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.frames(x).mean(dim=1)
        return logits.gather(1, labels[:, None]).squeeze(1)


class MappingNetwork(nn.Module):
    """z (B,latent) and labels (B,) → (B,style): a shared 3-layer trunk (``shared``), then the
    head of each sample's emotion (``unshared.<label>``), as in StarGAN v2."""

    def __init__(self, latent_size: int, hidden: int, style_size: int, n_emotions: int) -> None:
        super().__init__()
        self.shared = _mlp(latent_size, [hidden] * 3, None)
        self.unshared = nn.ModuleList(_mlp(hidden, [hidden], style_size) for _ in range(n_emotions))
        self.apply(he_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        trunk = self.shared(z)
        styles = torch.stack([head(trunk) for head in self.unshared], dim=1)  # (B, n_emotions, style)
        return styles[torch.arange(len(labels), device=labels.device), labels]


class ManipulatorNets(nn.Module):
    """The four networks under their checkpoint names; ``networks()`` gives them in NED's order.
    Label ``i`` is the i-th entry of the config's ``emotions`` (NED's ``selected_emotions``)."""

    def __init__(self, sizes: NetworkSizes, n_emotions: int) -> None:
        super().__init__()
        self.generator = Generator(sizes.style_size, sizes.generator_frame_widths, sizes.generator_lstm_hidden,
                                   sizes.lstm_layers, sizes.generator_head_widths, sizes.generator_residual)
        self.mapping_network = MappingNetwork(sizes.latent_size, sizes.mapping_hidden, sizes.style_size, n_emotions)
        self.style_encoder = StyleEncoder(sizes.style_size, sizes.encoder_frame_widths, sizes.encoder_lstm_hidden,
                                          sizes.lstm_layers, sizes.encoder_head_widths)
        self.discriminator = Discriminator(n_emotions, sizes.encoder_frame_widths, sizes.encoder_lstm_hidden,
                                           sizes.lstm_layers, sizes.encoder_head_widths)

    def networks(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in NETWORK_KEYS}

"""The SCMC encoders (method.md §3.2): audio, 3DMM-expression and image encoders into one
128-d tanh-bounded space, the cross-attention that fuses two consecutive frames, and the
scalar scale layer that maps visual distances onto audio distances.

Every encoder has ``encode`` (a feature map) and ``proj`` (pool → 512→128 fc → tanh); the fc is
skipped when the features already have 128 channels, which is the case after cross-attention.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from scmcl import backbones

EMBED_DIM = 128
FEATURE_DIM = 512
#: Layers with stride 2: seven halvings of one frame of raw audio, four of the 51-d expression.
AUDIO_STRIDES = (0, 2, 4, 6, 8, 10, 12)
EXPRESSION_STRIDES = (0, 4, 8, 12)


class _Encoder(nn.Module):
    """``encode`` (subclass) → feature map; ``proj`` → mean over every position, fc unless
    already ``EMBED_DIM`` channels, tanh."""

    fc: nn.Linear

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def proj(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.flatten(2).mean(-1)
        return torch.tanh(pooled if pooled.shape[1] == EMBED_DIM else self.fc(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.encode(x))


class ConvEncoder(_Encoder):
    """14 × [Conv1d k3 (no bias) → BN → ReLU] over a 1-channel signal; widths 64/128/256/512
    doubling at layers 3, 7 and 11. The audio encoder reads one video frame of raw audio, the
    expression encoder the 51-d [jaw_open, exp_0..49] vector as a length-51 signal."""

    def __init__(self, strides: tuple[int, ...], depth: int = 14):
        super().__init__()
        layers, channels = [], 1
        for index in range(depth):
            width = 64 if index < 3 else 128 if index < 7 else 256 if index < 11 else FEATURE_DIM
            layers += [nn.Conv1d(channels, width, 3, stride=2 if index in strides else 1, padding=1, bias=False),
                       nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            channels = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(FEATURE_DIM, EMBED_DIM)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N,1,L) → (N,512,L')."""
        return self.layers(x)


def audio_encoder() -> ConvEncoder:
    return ConvEncoder(AUDIO_STRIDES)


def expression_encoder() -> ConvEncoder:
    return ConvEncoder(EXPRESSION_STRIDES)


class ImageEncoder(_Encoder):
    """ResNet-18 trunk (ImageNet weights when the user has them) → (N,512,h,w); fc 512→128."""

    def __init__(self, pretrained: str | Path | None = None):
        super().__init__()
        net = backbones.models().resnet18(weights=None)
        if pretrained:
            path = Path(pretrained)
            if not path.is_file():
                raise FileNotFoundError(f"ImageNet ResNet-18 weights {path} not found: set scmc.image_pretrained to "
                                        "torchvision's resnet18-f37072fd.pth or to \"\" for random init")
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
        self.fc = nn.Linear(FEATURE_DIM, EMBED_DIM)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) → (N,512,H/32,W/32)."""
        return self.trunk(x)


class CrossAttention(nn.Module):
    """Fuses frame t+1 (query) with frame t (key/value), tokens = time steps or pixels.

    One block: multi-head attention with a residual on the projected query, then
    LayerNorm → FFN (128→256→128, GELU) → residual. The original also built LayerNorms for
    q/k/v whose output it overwrote; they are left out here (same function, no dead weights).
    """

    def __init__(self, dim: int = EMBED_DIM, in_dim: int = FEATURE_DIM, heads: int = 4):
        super().__init__()
        self.proj_q = nn.Linear(in_dim, dim)
        self.proj_x = nn.Linear(in_dim, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def _tokens(self, features: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        tokens = features.flatten(2).transpose(1, 2)  # (N, positions, C)
        return tokens if tokens.shape[-1] == self.norm.normalized_shape[0] else proj(tokens)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(N,512,...) query and (N,512|128,...) context → (N,128,positions of the query)."""
        q = self._tokens(query, self.proj_q)
        x = self._tokens(context, self.proj_x)
        q = q + self.attn(q, x, x, need_weights=False)[0]
        q = q + self.ffn(self.norm(q))
        return q.transpose(1, 2)


class ScaleLayer(nn.Module):
    """``w·d + b`` on visual distances (w=1, b=0 at start), so the consistency loss compares
    the visual and audio distance matrices up to an affine change of units."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        return distances * self.weight + self.bias


def encode_frames(encoder: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """(B,k,...) inputs → (B,k,C,...) features, one batched ``encode`` call (shared BN statistics)."""
    features = encoder.encode(frames.flatten(0, 1))
    return features.unflatten(0, frames.shape[:2])


def fuse(encoder: nn.Module, attention: CrossAttention, features: torch.Tensor) -> torch.Tensor:
    """(B,n,C,...) features of n consecutive frames → (B,128): each frame attends to the fused
    past, as in SCMCL's fine-tuning, ``compute_dist`` and the manipulator's SCMC loss."""
    fused = features[:, 0]
    for index in range(1, features.shape[1]):
        fused = attention(features[:, index], fused)
    return encoder.proj(fused)

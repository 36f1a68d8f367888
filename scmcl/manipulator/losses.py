"""The manipulator's loss terms (method.md §4.2, §4.3), each a scalar mean over the batch."""

from __future__ import annotations

import torch
from torch.nn import functional as F

#: Pearson's epsilon in SCMCL's mouth loss.
PEARSON_EPS = 1e-7


def lsgan_real(logits: torch.Tensor) -> torch.Tensor:
    return ((logits - 1) ** 2).mean()


def lsgan_fake(logits: torch.Tensor) -> torch.Tensor:
    return (logits ** 2).mean()


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,T) × (B,T) → (B,) correlation over time."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + PEARSON_EPS)


def mouth(real: torch.Tensor, fake: torch.Tensor, cycled: torch.Tensor) -> torch.Tensor:
    """SCMCL's form of NED's mouth term on the jaw opening (channel 0): (1 − ρ(real, fake)) +
    (1 − ρ(fake, cycled)); NED subtracts the two correlations, which has the same gradient."""
    return (2 - pearson(real[..., 0], fake[..., 0]) - pearson(fake[..., 0], cycled[..., 0])).mean()


def paired_cosine(target: torch.Tensor, fake: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SCMCL's paired loss: Σ_b w_b·mean_t(1 − mask_b·cos(exp of target, exp of fake)) / Σ mask,
    per frame over the 50 expression coefficients (the jaw, channel 0, is the speech's)."""
    cosine = F.cosine_similarity(target[..., 1:], fake[..., 1:], dim=2)  # (B, T)
    return (weight * (1 - mask[:, None] * cosine).mean(1)).sum() / mask.sum().clamp_min(1)

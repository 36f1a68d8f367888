"""The contrastive loss of every SCMC trainer and the figures its evaluation reports."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE on negative L2 distances (temperature 1), method.md §3.3.

    ``embeddings`` is (B,2,D): column 0 the neutral anchors, column 1 their aligned emotional
    frames. Returns the loss and the full B×B neutral×emotional distance matrix, which the
    symmetric fine-tuning compares across modalities.
    """
    distances = torch.cdist(embeddings[:, 0], embeddings[:, 1])
    target = torch.arange(len(distances), device=distances.device)
    return F.cross_entropy(-distances, target), distances


def topk_hits(distances: torch.Tensor, k: int) -> torch.Tensor:
    """Per anchor (row): is its own aligned frame (the diagonal) among the k nearest columns?"""
    own = distances.diagonal()[:, None]
    rank = (distances < own).sum(1)
    return rank < k


def consistency(visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """Mean |D_visual − D_audio| over the whole B×B matrices (both sides carry gradients)."""
    return (visual - audio).abs().mean()


def matrix_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two distance matrices' entries (agreement up to units)."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))

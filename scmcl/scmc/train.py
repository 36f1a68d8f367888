"""Contrastive training of one SCMC encoder, then the symmetric joint fine-tuning of the audio
encoder with a visual one (method.md §3.4–3.5), both on the shared resumable loop.

Fixed against the original: gradients are zeroed every step; the fine-tuning uses 2 frames so
the cross-attention that every consumer applies is trained; the warm-up counts global steps
(the original restarted it every epoch).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from scmcl.device import resolve_device
from scmcl.io.atomic import atomic_path
from scmcl.scmc.data import CLIP_KEY, AudioFrames, BatchSampler, ExpressionFrames, ImageFrames, Pairs
from scmcl.scmc.loss import consistency, info_nce, matrix_correlation, topk_hits
from scmcl.scmc.models import CrossAttention, ImageEncoder, ScaleLayer, audio_encoder, encode_frames, expression_encoder, fuse
from scmcl.train.loop import Contents, TrainLoop, TrainSettings, load_published, seed_everything, table_digest

log = logging.getLogger(__name__)

MODALITIES = ("audio", "expression", "image")
VISUAL = ("expression", "image")
#: Frames fused per side in the fine-tuning: frame t+1 attends to frame t, exactly what
#: ``compute_dists`` and the manipulator's SCMC loss apply (the original's default of 1 left
#: the attention untrained).
NFRAME = 2


@dataclass(frozen=True)
class DataFiles:
    """Inputs of the SCMC trainers (tables only; audio and image stacks are found through them)."""

    manifest: str
    pairs: str
    sample_rate: int  # config scmc.sample_rate
    image_crop: float  # config scmc.image_crop
    expressions: tuple[str, ...] = ()  # the tables a modality reads: 3DMM trainers
    shards: tuple[str, ...] = ()  # image trainers


@dataclass(frozen=True)
class Settings:
    """One trainer's settings (config ``scmc`` and its ``scmc.<stage>_<modality>`` section); the
    ones a trainer does not have are None (an audio encoder's image size, an encoder's warm-up).
    The fingerprint of a checkpoint covers all but device and cadence."""

    steps: int
    lr: float
    batch_size: int
    tau: int
    image_size: int | None
    warmup: int | None
    consistency_weight: float | None
    pretrained: str | None
    seed: int
    eval_batches: int
    checkpoint_every: int = field(compare=False)
    device: str = field(compare=False)

    def loop(self) -> TrainSettings:
        return TrainSettings(steps=self.steps, checkpoint_every=self.checkpoint_every, seed=self.seed, device=self.device)


def fingerprint(settings: Settings, data: DataFiles, weights: tuple[str | Path, ...] = ()) -> str:
    """What the trainer reads: settings, frame geometry, the manifest rows of the actors in the
    aligned pairs (in clip order, so the run's other actors leave it unchanged), the pairs,
    expression and shard tables, and the bytes of the weights it starts from. New inputs restart
    training, a rerun resumes."""
    trained = {k: v for k, v in asdict(settings).items() if k not in ("device", "checkpoint_every")}
    digest = hashlib.sha256(json.dumps({**trained, "sample_rate": data.sample_rate, "image_crop": data.image_crop},
                                       sort_keys=True).encode())
    actors = pd.read_parquet(data.pairs, columns=["actor"]).actor.unique()
    manifest = pd.read_parquet(data.manifest)
    rows = manifest[manifest.actor.isin(actors)].sort_values(CLIP_KEY).reset_index(drop=True)
    digest.update(table_digest(rows[sorted(rows.columns)]))
    for table in (data.pairs, *data.expressions, *data.shards):
        digest.update(table_digest(pd.read_parquet(table)))
    for path in weights:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def encoder_contents(modality: str) -> Contents:
    """The header of ``train_encoder``'s output, checked by ``finetune``."""
    return Contents("scmc", "encoder", modality)


def finetune_contents(visual: str | None) -> Contents:
    """The header of ``finetune``'s output, checked by ``JointModels.load`` (None: any visual)."""
    return Contents("scmc", "finetune", visual)


def new_encoder(modality: str, pretrained: str | None) -> nn.Module:
    if modality == "audio":
        return audio_encoder()
    if modality == "expression":
        return expression_encoder()
    if not pretrained:
        log.warning("image encoder: no ImageNet weights (scmc.image_pretrained is empty), ResNet-18 starts from random init")
    return ImageEncoder(pretrained or None)


def frame_source(modality: str, data: DataFiles, clips: pd.DataFrame, image_size: int) -> Callable:
    if modality == "audio":
        return AudioFrames(clips, data.sample_rate)
    if modality == "expression":
        if not data.expressions:
            raise ValueError("the expression encoder needs the per-actor expression tables (--expressions)")
        return ExpressionFrames(clips, data.expressions)
    if not data.shards:
        raise ValueError("the image encoder needs the preprocessing shard tables (--shards)")
    return ImageFrames(clips, data.shards, image_size, data.image_crop)


def pair_inputs(source: Callable, pairs: Pairs, index: np.ndarray, nframe: int = 1) -> torch.Tensor:
    """(B, 2·nframe, ...): nframe consecutive neutral frames, then the emotional ones."""
    sides = [(pairs.src_clip[index], pairs.src_frame[index]), (pairs.dst_clip[index], pairs.dst_frame[index])]
    items = [source(clip, frame + j) for clip, frame in sides for j in range(nframe)]
    return torch.stack(items, dim=1)


def batch_figures(loss: torch.Tensor, distances: torch.Tensor) -> dict[str, float]:
    """Per-step metrics: loss, mean positive and negative distance, in-batch top-1 accuracy."""
    d = distances.detach()
    off = ~torch.eye(len(d), dtype=torch.bool, device=d.device)
    return {"loss": loss.item(), "d_pos": float(d.diagonal().mean()), "d_neg": float(d[off].mean()),
            "top1": float(topk_hits(d, 1).float().mean())}


def _write_json(path: str | Path, figures: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(figures, indent=1) + "\n")


class _Split:
    """Pairs of one split with the frame sources of the modalities a trainer reads."""

    def __init__(self, data: DataFiles, split: str, modalities: tuple[str, ...], image_size: int, batch_size: int, tau: int):
        self.pairs = Pairs.load(pd.read_parquet(data.pairs), pd.read_parquet(data.manifest), split, context=NFRAME - 1)
        self.sources = {m: frame_source(m, data, self.pairs.clips, image_size) for m in modalities}
        self.sampler = BatchSampler(self.pairs, batch_size, tau)

    def inputs(self, modality: str, index: np.ndarray, nframe: int, device: torch.device) -> torch.Tensor:
        return pair_inputs(self.sources[modality], self.pairs, index, nframe).to(device)


def _retrieval(embed: Callable[[np.ndarray], torch.Tensor], batches: list[np.ndarray]) -> dict[str, float]:
    """Top-1/top-5 retrieval of each neutral frame's aligned emotional frame within its batch."""
    hits1, hits5, chance = [], [], []
    with torch.no_grad():
        for index in batches:
            d = torch.cdist(*embed(index).unbind(1))
            hits1.append(topk_hits(d, 1).float().mean().item())
            hits5.append(topk_hits(d, 5).float().mean().item())
            chance.append(min(5, len(d)) / len(d))
    return {"top1": float(np.mean(hits1)), "top5": float(np.mean(hits5)), "chance_top5": float(np.mean(chance)),
            "batches": len(batches), "batch_size": int(np.mean([len(b) for b in batches]))}


def train_encoder(modality: str, data: DataFiles, settings: Settings, run_dir: str | Path,
                  out: str | Path, metrics_out: str | Path, eval_out: str | Path) -> dict:
    """InfoNCE training of one encoder on single aligned frames; publishes weights, the
    per-step metrics and held-out retrieval figures."""
    device = resolve_device(settings.device)
    tau = settings.tau if modality == "image" else 0
    train = _Split(data, "train", (modality,), settings.image_size, settings.batch_size, tau)
    val = _Split(data, "val", (modality,), settings.image_size, settings.batch_size, tau)
    seed_everything(settings.seed)
    encoder = new_encoder(modality, settings.pretrained).to(device)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=settings.lr)
    loop = TrainLoop(f"scmc_{modality}", run_dir, settings.loop(), fingerprint(settings, data),
                     modules={"encoder": encoder}, optimizers={"encoder": optimizer})

    def embed(split: _Split, index: np.ndarray) -> torch.Tensor:
        x = split.inputs(modality, index, 1, device)
        return encoder(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    def step(_: int) -> dict[str, float]:
        loss, distances = info_nce(embed(train, train.sampler(loop.rng)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return batch_figures(loss, distances)

    loop.run(step)
    encoder.eval()
    figures = {"modality": modality, **_retrieval(lambda i: embed(val, i), val.sampler.fixed_batches(settings.eval_batches, settings.seed))}
    log.info("scmc %s held-out retrieval: top-5 %.3f (chance %.3f), top-1 %.3f", modality, figures["top5"],
             figures["chance_top5"], figures["top1"])
    loop.publish(out, encoder_contents(modality), {"encoder": encoder.state_dict(), "sample_rate": data.sample_rate,
                                                   "image_size": settings.image_size, "image_crop": data.image_crop})
    loop.publish_metrics(metrics_out)
    _write_json(eval_out, figures)
    return figures


class JointModels(nn.Module):
    """Audio and visual encoders, their cross-attentions and the scale layer, optimised together."""

    def __init__(self, visual: str):
        super().__init__()
        self.visual = visual
        self.audio_encoder = audio_encoder()
        self.visual_encoder = expression_encoder() if visual == "expression" else ImageEncoder()
        self.audio_attention = CrossAttention()
        self.visual_attention = CrossAttention()
        self.scale = ScaleLayer()

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> JointModels:
        """The published fine-tuned metric (``finetune`` output), in eval mode."""
        payload = load_published(path, finetune_contents(None), "use an output of finetune_scmc_<visual>", device)
        models = cls(payload["modality"])
        models.load_state_dict(payload["models"])
        models.image_size, models.image_crop = payload["image_size"], payload["image_crop"]  # how its images were cut
        return models.to(device).eval()

    def embed(self, modality: str, frames: torch.Tensor) -> torch.Tensor:
        """(B, 2·NFRAME, ...) → (B,2,128): each side's frames fused by the modality's attention."""
        encoder, attention = ((self.audio_encoder, self.audio_attention) if modality == "audio"
                              else (self.visual_encoder, self.visual_attention))
        features = encode_frames(encoder, frames)
        n = frames.shape[1] // 2
        return torch.stack([fuse(encoder, attention, features[:, :n]), fuse(encoder, attention, features[:, n:])], 1)


def _agreement(models: JointModels, split: _Split, batches: list[np.ndarray], device: torch.device) -> dict[str, float]:
    """How well the visual and the audio distance matrices agree on held-out batches: the
    trained objective (L1 after the scale layer), and two unit-free figures: L1 of the
    matrices each divided by its mean, and the Pearson correlation of their entries."""
    l1, relative, corr = [], [], []
    models.eval()
    with torch.no_grad():
        for index in batches:
            d_audio = torch.cdist(*models.embed("audio", split.inputs("audio", index, NFRAME, device)).unbind(1))
            d_visual = torch.cdist(*models.embed(models.visual, split.inputs(models.visual, index, NFRAME, device)).unbind(1))
            l1.append(float(consistency(models.scale(d_visual), d_audio)))
            relative.append(float(consistency(d_visual / d_visual.mean(), d_audio / d_audio.mean())))
            corr.append(matrix_correlation(d_visual, d_audio))
    return {"consistency_l1": float(np.mean(l1)), "relative_l1": float(np.mean(relative)), "correlation": float(np.mean(corr))}


def finetune(visual: str, data: DataFiles, settings: Settings, audio_weights: str | Path, visual_weights: str | Path,
             run_dir: str | Path, out: str | Path, metrics_out: str | Path, eval_out: str | Path) -> dict:
    """Joint audio↔visual fine-tuning: InfoNCE of both modalities plus, after ``warmup`` steps,
    λ·mean|Scale(D_visual) − D_audio| over the whole B×B matrices (neither side detached)."""
    audio_ckpt = load_published(audio_weights, encoder_contents("audio"), "check --audio-weights")
    visual_ckpt = load_published(visual_weights, encoder_contents(visual), "check --visual-weights")
    device = resolve_device(settings.device)
    tau = settings.tau if visual == "image" else 0
    train = _Split(data, "train", ("audio", visual), settings.image_size, settings.batch_size, tau)
    val = _Split(data, "val", ("audio", visual), settings.image_size, settings.batch_size, tau)
    seed_everything(settings.seed)
    models = JointModels(visual)
    models.audio_encoder.load_state_dict(audio_ckpt["encoder"])
    models.visual_encoder.load_state_dict(visual_ckpt["encoder"])
    models.to(device)
    optimizer = torch.optim.AdamW(models.parameters(), lr=settings.lr, weight_decay=0.0)
    batches = val.sampler.fixed_batches(settings.eval_batches, settings.seed)
    before = _agreement(models, val, batches, device)
    loop = TrainLoop(f"scmc_finetune_{visual}", run_dir, settings.loop(), fingerprint(settings, data, (audio_weights, visual_weights)),
                     modules={"models": models}, optimizers={"models": optimizer})

    def step(index: int) -> dict[str, float]:
        batch = train.sampler(loop.rng)
        loss_audio, d_audio = info_nce(models.embed("audio", train.inputs("audio", batch, NFRAME, device)))
        loss_visual, d_visual = info_nce(models.embed(visual, train.inputs(visual, batch, NFRAME, device)))
        loss_consistency = torch.zeros((), device=device)
        if index >= settings.warmup:
            loss_consistency = settings.consistency_weight * consistency(models.scale(d_visual), d_audio)
        loss = loss_audio + loss_visual + loss_consistency
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "loss_audio": loss_audio.item(), "loss_visual": loss_visual.item(),
                "loss_consistency": loss_consistency.item(), "scale_w": models.scale.weight.item(),
                "scale_b": models.scale.bias.item()}

    loop.run(step)
    after = _agreement(models, val, batches, device)
    audio_retrieval = _retrieval(lambda i: models.embed("audio", val.inputs("audio", i, NFRAME, device)), batches)
    figures = {"visual": visual, "before": before, "after": after, "audio_retrieval": audio_retrieval}
    log.info("scmc fine-tune %s held-out agreement: L1 %.3f → %.3f, correlation %.3f → %.3f", visual,
             before["consistency_l1"], after["consistency_l1"], before["correlation"], after["correlation"])
    loop.publish(out, finetune_contents(visual), {"nframe": NFRAME, "models": models.state_dict(),
                 "sample_rate": data.sample_rate, "image_size": settings.image_size, "image_crop": data.image_crop})
    loop.publish_metrics(metrics_out)
    _write_json(eval_out, figures)
    return figures

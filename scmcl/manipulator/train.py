"""NED training and SCMCL fine-tuning of the expression manipulator (method.md §4.2–4.3) on the
shared resumable loop (every network and optimizer, the LR schedules and the RNGs checkpointed).

One step, as NED's StarGAN-v2 loop: a discriminator update on the latent path (style F(z, y))
and one on the reference path (style E(x_ref)), then a generator update on each path. The
latent path updates G, F and E; the reference path G only (NED) or G and E (SCMCL). SCMCL's
original trains the reference path alone, which leaves label-driven edits with a mapping
network that never saw its pseudo-targets; here both variants train both paths.

The ``scmcl`` variant adds pseudo-targets (``pseudo``) to the adversarial, style and cycle
terms, the paired cosine loss and the SCMC 3DMM loss through the fine-tuned expression metric,
which is frozen and stays in eval mode (defect 16: the original let its BN statistics drift).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch import nn

from scmcl.device import resolve_device
from scmcl.manipulator import losses
from scmcl.manipulator.checkpoint import load_networks, save_networks
from scmcl.manipulator.networks import ManipulatorNets, NetworkSizes, padded_columns
from scmcl.manipulator.pseudo import (
    NONE,
    PseudoBatch,
    PseudoTargets,
    build_pseudo_targets,
)
from scmcl.manipulator.windows import (
    WindowSet,
    every_window,
    matrix_windows,
    training_sequences,
)
from scmcl.scmc.models import encode_frames, fuse
from scmcl.scmc.train import JointModels
from scmcl.train.loop import TrainLoop, TrainSettings, seed_everything, table_digest

log = logging.getLogger(__name__)

VARIANTS = ("ned", "scmcl")


@dataclass(frozen=True)
class TrainerSettings:
    """Config ``manipulator.train``: what both variants share."""

    batch_size: int
    beta1: float
    beta2: float
    style_weight: float
    cycle_weight: float
    mouth_weight: float
    seed: int
    checkpoint_every: int = field(compare=False)


@dataclass(frozen=True)
class VariantSettings:
    """Config ``manipulator.<variant>``; the keys the other variant lacks are None."""

    steps: int
    decay: float
    lr: float
    mapping_lr: float
    pretrained: str | None
    dist_thresh: float | None
    topk: int | None
    paired_weight: float | None
    sim_weight: float | None


@dataclass(frozen=True)
class Inputs:
    """What a variant trains on: the actors' expression tables, and for ``scmcl`` the ``ned``
    weights it starts from, the fine-tuned expression metric and, per actor, the folder of its
    distance matrices (``windows.parquet`` and ``<emotion>.npy``)."""

    expressions: tuple[str, ...]
    emotions: tuple[str, ...]
    test_clips: tuple[str, ...]
    seq_len: int
    init: str | None = None
    metric: str | None = None
    distances: dict[str, str] = field(default_factory=dict)


class ExpressionMetric(nn.Module):
    """The fine-tuned SCMC 3DMM metric on a window: its last frame attends to the one before
    (as the distance matrices embed the audio), then the scale layer maps embedding distances
    onto audio distances. Frozen, and ``train()`` keeps it in eval mode."""

    def __init__(self, path: str | Path, device: torch.device) -> None:
        super().__init__()
        models = JointModels.load(path, device)
        if models.visual != "expression":
            raise ValueError(f"{path} is the fine-tuned {models.visual} metric; the manipulator needs "
                             "work/scmc/finetune_expression.pt")
        self.encoder, self.attention, self.scale = models.visual_encoder, models.visual_attention, models.scale
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ExpressionMetric:
        return super().train(False)

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """(B,T,51) → (B,128)."""
        return fuse(self.encoder, self.attention, encode_frames(self.encoder, windows[:, -2:, None, :]))

    def distance(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Scaled metric distance (B,) between windows; the real side carries no gradient."""
        return self.scale(torch.linalg.vector_norm(self.embed(fake) - self.embed(real).detach(), dim=1))


def linear_decay(steps: int, decay: float) -> Callable[[int], float]:
    """NED's schedule as a LambdaLR factor: 1 until the last ``decay`` fraction of the steps,
    then falling linearly, reaching 1/n on the last of those n steps."""
    n = round(decay * steps)
    start = steps - n
    return lambda step: 1.0 if step < start else (steps - step) / n


def _fingerprint(variant: str, sizes: NetworkSizes, common: TrainerSettings, settings: VariantSettings,
                 inputs: Inputs) -> str:
    """Settings, network sizes and the content of every input: a change restarts, a rerun resumes."""
    trained = {"variant": variant, "sizes": asdict(sizes), "common": asdict(common) | {"checkpoint_every": None},
               "settings": asdict(settings), "emotions": inputs.emotions, "test_clips": inputs.test_clips,
               "seq_len": inputs.seq_len}
    digest = hashlib.sha256(json.dumps(trained, sort_keys=True, default=str).encode())
    for table in inputs.expressions:
        digest.update(table_digest(pd.read_parquet(table)))
    files = [inputs.init, inputs.metric, settings.pretrained or None]
    for folder in inputs.distances.values():
        files += sorted(str(path) for path in Path(folder).iterdir() if path.suffix in (".npy", ".parquet"))
    for path in filter(None, files):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


class _Step:
    """One training step of a variant; holds the data, networks and optimizers it needs."""

    def __init__(self, variant: str, nets: ManipulatorNets, windows: WindowSet, pseudo: PseudoTargets | None,
                 metric: ExpressionMetric | None, common: TrainerSettings, settings: VariantSettings,
                 optimizers: dict[str, torch.optim.Optimizer], schedulers: list, loop: TrainLoop) -> None:
        self.variant, self.nets, self.windows, self.pseudo, self.metric = variant, nets, windows, pseudo, metric
        self.common, self.settings, self.optimizers, self.schedulers, self.loop = common, settings, optimizers, schedulers, loop
        self.neutral = windows.emotions.index("neutral")
        self.updated = {"latent": ("generator", "mapping_network", "style_encoder"),
                        "reference": ("generator",) if variant == "ned" else ("generator", "style_encoder")}

    def _style(self, path: str, z: torch.Tensor, labels: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        return self.nets.mapping_network(z, labels) if path == "latent" else self.nets.style_encoder(x_ref)

    def _discriminator(self, x, y, x_ref, y_trg, z, pseudo: PseudoBatch | None, path: str) -> torch.Tensor:
        nets, D = self.nets, self.nets.discriminator
        with torch.no_grad():
            s = self._style(path, z, y_trg, x_ref)
            fakes, fake_labels = [nets.generator(x, s)], [y_trg]
            if pseudo is not None and pseudo.mask.any():
                m = pseudo.mask > 0
                x_t = self.windows.frames[pseudo.target[m]]
                fakes.append(nets.generator(x_t, s[m]))
                fake_labels.append(y_trg[m])
        real = losses.lsgan_real(D(x, y))
        if pseudo is not None and pseudo.mask.any():
            real = 0.5 * (real + losses.lsgan_real(D(x_t, y_trg[m])))
        return real + losses.lsgan_fake(D(torch.cat(fakes), torch.cat(fake_labels)))

    def _generator(self, x, y, x_ref, y_trg, z, pseudo: PseudoBatch | None, path: str) -> tuple[torch.Tensor, dict]:
        nets, common = self.nets, self.common
        s = self._style(path, z, y_trg, x_ref)
        fake = nets.generator(x, s)
        adv = losses.lsgan_real(nets.discriminator(fake, y_trg))
        style_fake = nets.style_encoder(fake)
        style = (style_fake - s).abs().mean()
        cycled = nets.generator(fake, nets.style_encoder(x))
        cycle = (cycled - x).abs().mean()
        mouth = losses.mouth(x, fake, cycled)
        paired = sim = torch.zeros((), device=x.device)
        if pseudo is not None and pseudo.mask.any():
            m = pseudo.mask > 0
            x_t = self.windows.frames[pseudo.target[m]]
            s_t = nets.style_encoder(x_t)
            style = 0.5 * (style + 0.5 * ((style_fake[m] - s_t).abs() + (s[m] - s_t).abs()).mean())
            cycle = 0.5 * (cycle + (nets.generator(x_t, s_t) - x_t).abs().mean())
            paired, sim = self._pseudo_terms(x, y, y_trg, fake, pseudo)
        total = (adv + common.style_weight * style + common.cycle_weight * cycle + common.mouth_weight * mouth
                 + (self.settings.paired_weight or 0.0) * paired + (self.settings.sim_weight or 0.0) * sim)
        return total, {"adv": adv.item(), "style": style.item(), "cycle": cycle.item(), "mouth": mouth.item(),
                       "paired": paired.item(), "sim": sim.item()}

    def _pseudo_terms(self, x, y, y_trg, fake, pseudo: PseudoBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """SCMCL's paired cosine loss and SCMC 3DMM loss (method.md §4.3)."""
        m = pseudo.mask > 0
        frames = self.windows.frames
        target = torch.where(m[:, None, None], frames[pseudo.target.clamp_min(0)], x)
        has_inter = pseudo.inter != NONE
        inter_distance = torch.where(has_inter, pseudo.inter_distance, torch.zeros_like(pseudo.inter_distance))
        distance = torch.where(m, pseudo.distance, torch.zeros_like(pseudo.distance))
        weight = pseudo.mask * self.settings.dist_thresh / (1 + (distance + inter_distance) / 2)
        paired = losses.paired_cosine(target, fake, weight, pseudo.mask)
        emotional = m & (y != y_trg)
        if not emotional.any():
            return paired, torch.zeros((), device=x.device)
        one_neutral = (y == self.neutral) ^ (y_trg == self.neutral)
        real = torch.where(one_neutral[:, None, None], x, frames[pseudo.inter.clamp_min(0)])
        wanted = torch.where(one_neutral, distance, inter_distance)
        sim = (self.metric.distance(fake[emotional], real[emotional]) - wanted[emotional]).abs().mean()
        return paired, sim

    def __call__(self, step: int) -> dict[str, float]:
        rng, frames, labels = self.loop.rng, self.windows.frames, self.windows.labels
        batch = self.common.batch_size
        src, ref = rng.integers(len(self.windows), size=batch), rng.integers(len(self.windows), size=batch)
        src_t, ref_t = torch.from_numpy(src).to(frames.device), torch.from_numpy(ref).to(frames.device)
        x, y, x_ref, y_trg = frames[src_t], labels[src_t], frames[ref_t], labels[ref_t]
        z = torch.randn(batch, self.nets.mapping_network.shared[0].in_features, device=frames.device)
        pseudo = None if self.pseudo is None else self.pseudo.draw(src, labels[ref_t].cpu().numpy(), rng, frames.device)
        metrics: dict[str, float] = {}
        for path in ("latent", "reference"):
            d_loss = self._discriminator(x, y, x_ref, y_trg, z, pseudo, path)
            self.optimizers["discriminator"].zero_grad(set_to_none=True)
            d_loss.backward()
            self.optimizers["discriminator"].step()
            metrics[f"d_{path}"] = d_loss.item()
        for path in ("latent", "reference"):
            g_loss, terms = self._generator(x, y, x_ref, y_trg, z, pseudo, path)
            for optimizer in self.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            g_loss.backward()
            for name in self.updated[path]:
                self.optimizers[name].step()
            metrics[f"g_{path}"] = g_loss.item()
            metrics |= {f"{key}_{path}": value for key, value in terms.items()}
        for scheduler in self.schedulers:
            scheduler.step()
        if pseudo is not None:
            metrics["pseudo_fraction"] = pseudo.mask.mean().item()
        metrics["lr"] = self.optimizers["generator"].param_groups[0]["lr"]
        return metrics


def _windows(variant: str, inputs: Inputs) -> WindowSet:
    sequences = training_sequences(inputs.expressions, inputs.emotions, inputs.test_clips)
    if variant == "ned":
        return every_window(sequences, inputs.emotions, inputs.seq_len)
    tables = {actor: str(Path(folder) / "windows.parquet") for actor, folder in inputs.distances.items()}
    return matrix_windows(sequences, tables, inputs.emotions, inputs.seq_len)


def train_manipulator(variant: str, sizes: NetworkSizes, common: TrainerSettings, settings: VariantSettings,
                      inputs: Inputs, device: str, run_dir: str | Path, out: str | Path, metrics_out: str | Path) -> dict:
    """Train one variant and write NED's ``XX_nets.pth`` container to ``out``; returns figures
    of the data it trained on."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown manipulator variant {variant!r}: one of {', '.join(VARIANTS)}")
    torch_device = resolve_device(device)
    windows = _windows(variant, inputs)
    pseudo, metric = None, None
    if variant == "scmcl":
        pseudo = build_pseudo_targets(windows, inputs.distances, settings.dist_thresh, settings.topk)
        metric = ExpressionMetric(inputs.metric, torch_device)
        log.info("scmcl pseudo-targets: %.1f%% of (window, emotion) pairs have one within %.3g",
                 100 * pseudo.coverage(), settings.dist_thresh)
    seed_everything(common.seed)
    nets = ManipulatorNets(sizes, len(inputs.emotions))
    start = inputs.init if variant == "scmcl" else settings.pretrained
    if start:
        load_networks(start, nets)
    padding = padded_columns(windows.frames)
    nets.generator.set_padding(padding)
    nets.to(torch_device)
    betas = (common.beta1, common.beta2)
    optimizers = {name: torch.optim.Adam(net.parameters(), lr=settings.mapping_lr if name == "mapping_network" else settings.lr,
                                         betas=betas) for name, net in nets.networks().items()}
    schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, linear_decay(settings.steps, settings.decay))
                  for name, opt in optimizers.items()}
    loop = TrainLoop(f"manipulator_{variant}", run_dir,
                     TrainSettings(steps=settings.steps, checkpoint_every=common.checkpoint_every, seed=common.seed, device=device),
                     _fingerprint(variant, sizes, common, settings, inputs),
                     modules=nets.networks(), optimizers=optimizers, schedulers=schedulers)
    step = _Step(variant, nets, windows.to(torch_device), pseudo, metric, common, settings, optimizers,
                 list(schedulers.values()), loop)
    loop.run(step)
    save_networks(out, nets.to("cpu"))
    loop.publish_metrics(metrics_out)
    figures = {"variant": variant, "windows": len(windows), "clips": int(windows.table.groupby(["actor", "emotion", "level", "clip"]).ngroups),
               "padded_columns": int(padding.sum())}
    if pseudo is not None:
        figures["pseudo_coverage"] = pseudo.coverage()
    return figures

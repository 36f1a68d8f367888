"""NED's renderer training (method.md §5.2) on the shared resumable loop: the generator, the
image, mouth and (optionally) eye discriminators, both Adam optimizers and every RNG are
checkpointed, so a killed run continues bit-for-bit.

One step draws ``batch`` runs inside single clips (``windows.runs``), augments their
conditioning as NED does, and renders the run's frames in sequence (``sequence.generate``);
every ``frames_per_update`` generated frames (NED's ``max_frames_per_gpu``) make one generator
update and one discriminator update, the last outputs carried into the next chunk. The run
length follows NED's schedule: ``run_frames`` generated frames, doubled every ``grow_every``
steps, capped by the shortest training clip.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from scmcl.device import resolve_device
from scmcl.renderer import losses
from scmcl.renderer.checkpoint import save_network
from scmcl.renderer.images import augment_conditioning
from scmcl.renderer.networks import DiscriminatorSizes, Generator, MultiscaleDiscriminator, RendererSizes
from scmcl.renderer.sequence import generate
from scmcl.renderer.windows import RendererClip, crop_rois, roi_side, runs
from scmcl.train.loop import TrainLoop, TrainSettings, seed_everything


@dataclass(frozen=True)
class RendererTrainSettings:
    """NED's defaults: batch 1, 12 frames doubled every 5 epochs, 4 frames per update, Adam
    2e-4 with betas (0.5, 0.999), feature-matching and VGG weight 10, mouth weight 1."""

    steps: int
    batch_size: int
    run_frames: int
    grow_every: int
    frames_per_update: int
    lr: float
    beta1: float
    beta2: float
    feat_weight: float
    vgg_weight: float
    mouth_weight: float
    eye_weight: float
    augment: bool
    seed: int
    checkpoint_every: int = field(compare=False)


@dataclass
class RendererNets:
    """The generator and the discriminators NED trains with it (eyes only when weighted)."""

    generator: Generator
    image: MultiscaleDiscriminator
    mouth: MultiscaleDiscriminator
    eyes: MultiscaleDiscriminator | None

    def modules(self) -> dict[str, torch.nn.Module]:
        named = {"generator": self.generator, "discriminator": self.image, "mouth_discriminator": self.mouth}
        return named | ({"eye_discriminator": self.eyes} if self.eyes is not None else {})

    def discriminator_parameters(self) -> list[torch.nn.Parameter]:
        """Every discriminator's parameters: one optimizer and one backward pass serve them all."""
        return [p for name, net in self.modules().items() if name != "generator" for p in net.parameters()]


def run_length(settings: RendererTrainSettings, step: int, shortest: int, frames: int) -> int:
    """Generated frames per run at ``step``: NED's doubling schedule, capped by the clips."""
    return max(1, min(shortest - frames + 1, settings.run_frames * 2 ** (step // settings.grow_every)))


def _flat(runs_first: torch.Tensor) -> torch.Tensor:
    """(B, n, ...) → (B·n, ...): a chunk's frames as one batch for the discriminators."""
    return runs_first.flatten(0, 1)


class _Step:
    def __init__(self, nets: RendererNets, clips: Sequence[RendererClip], settings: RendererTrainSettings,
                 vgg: losses.VggLoss, optimizers: dict[str, torch.optim.Optimizer], loop: TrainLoop) -> None:
        self.nets, self.clips, self.settings, self.vgg, self.optimizers, self.loop = nets, clips, settings, vgg, optimizers, loop
        self.frames = nets.generator.frames
        self.shortest = min(len(clip) for clip in clips)
        self.device = loop.device

    def _batch(self, step: int) -> tuple[torch.Tensor, ...]:
        n = run_length(self.settings, step, self.shortest, self.frames)
        span = n + self.frames - 1
        table = runs([len(clip) for clip in self.clips], span)
        chosen = table[self.loop.rng.integers(len(table), size=self.settings.batch_size)]
        conditioning, faces, mouths, eyes = [], [], [], []
        for clip_index, first in chosen:
            clip, window = self.clips[clip_index], range(first, first + span)
            generated = np.arange(first + self.frames - 1, first + span)
            conditioning.append(clip.conditioning(window))
            faces.append(clip.faces(generated))
            mouths.append(torch.from_numpy(clip.mouth[generated]))
            eyes.append(torch.from_numpy(clip.eyes[generated]))
        batch = [torch.stack(items).to(self.device) for items in (conditioning, faces, mouths, eyes)]
        if self.settings.augment:
            b, s, c, h, w = batch[0].shape
            batch[0] = augment_conditioning(batch[0].reshape(b, s * c, h, w)).reshape(b, s, c, h, w)
        return tuple(batch)

    def _terms(self, discriminator, current: torch.Tensor, real: torch.Tensor, fake: torch.Tensor):
        """(G adversarial + feature matching, D loss) of one discriminator on (N, ...) frames."""
        real_features, fake_features = discriminator(current, real), discriminator(current, fake)
        g_term = losses.lsgan(fake_features, True) + losses.feature_matching(fake_features, real_features,
                                                                            self.settings.feat_weight)
        d_term = 0.5 * (losses.lsgan(real_features, True) + losses.lsgan(discriminator(current, fake.detach()), False))
        return g_term, d_term

    def __call__(self, step: int) -> dict[str, float]:
        conditioning, faces, mouths, eyes = self._batch(step)
        n, size = faces.shape[1], faces.shape[-1]
        side = roi_side(size)
        carry, metrics = None, {"run_frames": float(n)}
        totals: dict[str, float] = {}
        for start in range(0, n, self.settings.frames_per_update):
            stop = min(n, start + self.settings.frames_per_update)
            fakes, carry = generate(self.nets.generator, conditioning[:, start:stop + self.frames - 1], carry)
            fake, real = _flat(fakes), _flat(faces[:, start:stop])
            current = _flat(conditioning[:, start + self.frames - 1:stop + self.frames - 1])
            g_image, d_image = self._terms(self.nets.image, current, real, fake)
            vgg = self.settings.vgg_weight * self.vgg(fake, real)
            rois = [(self.nets.mouth, _flat(mouths[:, start:stop]), self.settings.mouth_weight)]
            if self.nets.eyes is not None:
                rois.append((self.nets.eyes, _flat(eyes[:, start:stop]), self.settings.eye_weight))
            g_total, d_total, parts = g_image + vgg, d_image, {"g_image": g_image.item(), "vgg": vgg.item(),
                                                               "d_image": d_image.item()}
            for name, (discriminator, centres, weight) in zip(("mouth", "eyes"), rois):
                crops = [crop_rois(t, centres, side) for t in (current, real, fake)]
                g_roi, d_roi = self._terms(discriminator, *crops)
                g_total, d_total = g_total + weight * g_roi, d_total + d_roi
                parts |= {f"g_{name}": g_roi.item(), f"d_{name}": d_roi.item()}
            for optimizer in self.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            g_total.backward(inputs=list(self.nets.generator.parameters()))
            self.optimizers["generator"].step()
            d_total.backward(inputs=self.nets.discriminator_parameters())
            self.optimizers["discriminators"].step()
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value * (stop - start) / n
        return metrics | totals


def _fingerprint(sizes: RendererSizes, d_sizes: DiscriminatorSizes, settings: RendererTrainSettings,
                 clip_dirs: Sequence[str], vgg_weights: str | None) -> str:
    digest = hashlib.sha256(json.dumps({"sizes": asdict(sizes), "discriminators": asdict(d_sizes),
                                        "settings": asdict(settings) | {"checkpoint_every": None},
                                        "vgg": bool(vgg_weights)}, sort_keys=True).encode())
    for directory in clip_dirs:
        for path in sorted(Path(directory).iterdir()):
            digest.update(path.name.encode() + path.read_bytes())
    if vgg_weights:
        digest.update(Path(vgg_weights).read_bytes())
    return digest.hexdigest()


def train_renderer(clip_dirs: Sequence[str], sizes: RendererSizes, d_sizes: DiscriminatorSizes,
                   settings: RendererTrainSettings, vgg_weights: str | None, device: str, run_dir: str | Path,
                   out: str | Path, metrics_out: str | Path) -> Generator:
    """Train on the actor's training clip folders; write the generator as NED's ``XX_net_G.pth``."""
    if not clip_dirs:
        raise ValueError("the renderer needs at least one training clip of its actor")
    torch_device = resolve_device(device)
    clips = [RendererClip(directory) for directory in clip_dirs]
    seed_everything(settings.seed)
    nets = RendererNets(Generator(sizes), MultiscaleDiscriminator(d_sizes), MultiscaleDiscriminator(d_sizes),
                        MultiscaleDiscriminator(d_sizes) if settings.eye_weight > 0 else None)
    for module in nets.modules().values():
        module.to(torch_device)
    vgg = losses.VggLoss(vgg_weights).to(torch_device)
    betas = (settings.beta1, settings.beta2)
    optimizers = {"generator": torch.optim.Adam(nets.generator.parameters(), lr=settings.lr, betas=betas),
                  "discriminators": torch.optim.Adam(nets.discriminator_parameters(), lr=settings.lr, betas=betas)}
    loop = TrainLoop("renderer", run_dir, TrainSettings(steps=settings.steps, checkpoint_every=settings.checkpoint_every,
                                                        seed=settings.seed, device=device),
                     _fingerprint(sizes, d_sizes, settings, clip_dirs, vgg_weights),
                     modules=nets.modules(), optimizers=optimizers)
    loop.run(_Step(nets, clips, settings, vgg, optimizers, loop))
    save_network(out, nets.generator.to("cpu"))
    loop.publish_metrics(metrics_out)
    return nets.generator

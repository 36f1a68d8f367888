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

import imageio.v3 as iio
import numpy as np
import torch

from scmcl.device import resolve_device
from scmcl.io.atomic import atomic_path
from scmcl.renderer import losses
from scmcl.renderer.checkpoint import load_network, save_network
from scmcl.renderer.evaluate import sample_grid
from scmcl.renderer.images import augment_conditioning
from scmcl.renderer.networks import DiscriminatorSizes, Generator, MultiscaleDiscriminator, RendererSizes
from scmcl.renderer.sequence import generate, render_clip
from scmcl.renderer.roi import roi_side
from scmcl.renderer.windows import RendererClip, crop_rois, runs
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
    mixed_precision: bool
    seed: int
    checkpoint_every: int = field(compare=False)
    sample_every: int = field(compare=False)


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


class NedLoss:
    """NED's generator and discriminator losses on one chunk of generated frames: LSGAN and
    feature matching of the image, mouth and (optionally) eye discriminators, and the
    perceptual term. All inputs are (N, ...) frames; ``current`` is their conditioning."""

    def __init__(self, nets: RendererNets, settings: RendererTrainSettings, perceptual: torch.nn.Module) -> None:
        self.nets, self.settings, self.perceptual = nets, settings, perceptual

    def _terms(self, discriminator, current: torch.Tensor, real: torch.Tensor, fake: torch.Tensor):
        """(G adversarial + feature matching, D loss) of one discriminator."""
        real_features, fake_features = discriminator(current, real), discriminator(current, fake)
        g_term = losses.lsgan(fake_features, True) + losses.feature_matching(fake_features, real_features,
                                                                            self.settings.feat_weight)
        d_term = 0.5 * (losses.lsgan(real_features, True) + losses.lsgan(discriminator(current, fake.detach()), False))
        return g_term, d_term

    def __call__(self, current: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, mouths: torch.Tensor,
                 eyes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        g_image, d_image = self._terms(self.nets.image, current, real, fake)
        vgg = self.settings.vgg_weight * self.perceptual(fake, real)
        rois = [("mouth", self.nets.mouth, mouths, self.settings.mouth_weight)]
        if self.nets.eyes is not None:
            rois.append(("eyes", self.nets.eyes, eyes, self.settings.eye_weight))
        side = roi_side(real.shape[-1])
        g_total, d_total = g_image + vgg, d_image
        parts = {"g_image": g_image.item(), "vgg": vgg.item(), "d_image": d_image.item()}
        for name, discriminator, centres, weight in rois:
            g_roi, d_roi = self._terms(discriminator, *(crop_rois(t, centres, side) for t in (current, real, fake)))
            g_total, d_total = g_total + weight * g_roi, d_total + d_roi
            parts |= {f"g_{name}": g_roi.item(), f"d_{name}": d_roi.item()}
        return g_total, d_total, parts


class Updater:
    """One generator step and one step of every discriminator, under bfloat16 autocast on CUDA
    when mixed precision is on (bfloat16 needs no loss scaling)."""

    def __init__(self, nets: RendererNets, optimizers: dict[str, torch.optim.Optimizer], settings: RendererTrainSettings,
                 device: torch.device) -> None:
        self.nets, self.optimizers = nets, optimizers
        self.autocast = settings.mixed_precision and device.type == "cuda"
        self.device_type = device.type

    def precision(self):
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.autocast)

    def __call__(self, g_total: torch.Tensor, d_total: torch.Tensor) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        g_total.backward(inputs=list(self.nets.generator.parameters()))
        self.optimizers["generator"].step()
        d_total.backward(inputs=self.nets.discriminator_parameters())
        self.optimizers["discriminators"].step()


def clip_batch(clips: Sequence[RendererClip], chosen: np.ndarray, span: int, frames: int,
               device: torch.device) -> tuple[torch.Tensor, ...]:
    """Conditioning (B, span, 10, H, W) of runs ``[clip, first]`` and the faces (B, n, 3, H, W),
    mouth and eye centres (B, n, 2) of their ``n = span - frames + 1`` generated frames."""
    conditioning, faces, mouths, eyes = [], [], [], []
    for clip_index, first in chosen:
        clip = clips[clip_index]
        generated = np.arange(first + frames - 1, first + span)
        conditioning.append(clip.conditioning(range(first, first + span)))
        faces.append(clip.faces(generated))
        mouths.append(torch.from_numpy(clip.mouth[generated]))
        eyes.append(torch.from_numpy(clip.eyes[generated]))
    return tuple(torch.stack(items).to(device) for items in (conditioning, faces, mouths, eyes))


def augmented(conditioning: torch.Tensor, settings: RendererTrainSettings) -> torch.Tensor:
    """NED's jitter of (B, span, 10, H, W) conditioning, when on."""
    if not settings.augment:
        return conditioning
    b, s, c, h, w = conditioning.shape
    return augment_conditioning(conditioning.reshape(b, s * c, h, w)).reshape(b, s, c, h, w)


class _Step:
    def __init__(self, nets: RendererNets, clips: Sequence[RendererClip], settings: RendererTrainSettings,
                 loss: NedLoss, update: Updater, loop: TrainLoop, samples: SampleGrids) -> None:
        self.nets, self.clips, self.settings, self.loss, self.update, self.loop = nets, clips, settings, loss, update, loop
        self.samples = samples
        self.frames = nets.generator.frames
        self.shortest = min(len(clip) for clip in clips)

    def __call__(self, step: int) -> dict[str, float]:
        n = run_length(self.settings, step, self.shortest, self.frames)
        span = n + self.frames - 1
        table = runs([len(clip) for clip in self.clips], span)
        chosen = table[self.loop.rng.integers(len(table), size=self.settings.batch_size)]
        conditioning, faces, mouths, eyes = clip_batch(self.clips, chosen, span, self.frames, self.loop.device)
        conditioning = augmented(conditioning, self.settings)
        carry, totals = None, {}
        for start in range(0, n, self.settings.frames_per_update):
            stop = min(n, start + self.settings.frames_per_update)
            with self.update.precision():
                fakes, carry = generate(self.nets.generator, conditioning[:, start:stop + self.frames - 1], carry)
                current = _flat(conditioning[:, start + self.frames - 1:stop + self.frames - 1])
                g_total, d_total, parts = self.loss(current, _flat(faces[:, start:stop]), _flat(fakes),
                                                    _flat(mouths[:, start:stop]), _flat(eyes[:, start:stop]))
            self.update(g_total, d_total)
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value * (stop - start) / n
        self.samples(step)
        return {"run_frames": float(n)} | totals


class SampleGrids:
    """Every ``sample_every`` steps and after the last, a grid (NMFC | real | generated) of
    frames spread over the first training clip, rendered in sequence, under the run folder."""

    ROWS = 4

    def __init__(self, generator: Generator, clip: RendererClip, settings: RendererTrainSettings, run_dir: Path,
                 device: torch.device) -> None:
        self.generator, self.clip, self.settings, self.device = generator, clip, settings, device
        self.folder = Path(run_dir) / "samples"
        self.rows = np.linspace(0, len(clip) - 1, self.ROWS).round().astype(int)

    def grid(self) -> np.ndarray:
        conditioning = self.clip.conditioning(range(len(self.clip))).to(self.device)
        self.generator.eval()
        fake = render_clip(self.generator, conditioning)
        self.generator.train()
        return sample_grid(conditioning[self.rows], self.clip.faces(self.rows), fake[self.rows])

    def __call__(self, step: int) -> None:
        done = step + 1
        if done % self.settings.sample_every and done != self.settings.steps:
            return
        write_png(self.folder / f"step_{done:07d}.png", self.grid())


def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png")


def _fingerprint(sizes: RendererSizes, d_sizes: DiscriminatorSizes, settings: RendererTrainSettings,
                 clip_dirs: Sequence[str], files: Sequence[str | None], extra: dict) -> str:
    """What the run depends on: sizes, settings (not the checkpoint or sample cadence), every
    byte of the training clips and of the files it starts from or is judged by."""
    kept = asdict(settings) | {"checkpoint_every": None, "sample_every": None}
    digest = hashlib.sha256(json.dumps({"sizes": asdict(sizes), "discriminators": asdict(d_sizes), "settings": kept,
                                        "files": [bool(f) for f in files], "extra": extra}, sort_keys=True).encode())
    for directory in clip_dirs:
        for path in sorted(Path(directory).iterdir()):
            digest.update(path.name.encode() + path.read_bytes())
    for path in filter(None, files):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class RendererRun:
    """Where a trainer reads and writes: the actor's training clip folders, the generator it
    starts from (None: NED's initialisation), the run folder and the published files."""

    clip_dirs: tuple[str, ...]
    init: str | None
    run_dir: str
    out: str
    metrics: str
    samples: str


def build_trainer(sizes: RendererSizes, d_sizes: DiscriminatorSizes, settings: RendererTrainSettings,
                  vgg_weights: str | None, device: str, run: RendererRun, fingerprint_files: Sequence[str | None] = (),
                  extra: dict | None = None):
    """The networks (the generator strictly loaded from ``run.init`` when given), the loss, the
    updater and the resumable loop that checkpoints all of them."""
    if not run.clip_dirs:
        raise ValueError("the renderer needs at least one training clip of its actor")
    torch_device = resolve_device(device)
    clips = [RendererClip(directory) for directory in run.clip_dirs]
    seed_everything(settings.seed)
    nets = RendererNets(Generator(sizes), MultiscaleDiscriminator(d_sizes), MultiscaleDiscriminator(d_sizes),
                        MultiscaleDiscriminator(d_sizes) if settings.eye_weight > 0 else None)
    if run.init:
        load_network(run.init, nets.generator)
    for module in nets.modules().values():
        module.to(torch_device)
    betas = (settings.beta1, settings.beta2)
    optimizers = {"generator": torch.optim.Adam(nets.generator.parameters(), lr=settings.lr, betas=betas),
                  "discriminators": torch.optim.Adam(nets.discriminator_parameters(), lr=settings.lr, betas=betas)}
    fingerprint = _fingerprint(sizes, d_sizes, settings, run.clip_dirs, [vgg_weights, run.init, *fingerprint_files],
                               extra or {})
    loop = TrainLoop("renderer", run.run_dir, TrainSettings(steps=settings.steps, checkpoint_every=settings.checkpoint_every,
                                                            seed=settings.seed, device=device),
                     fingerprint, modules=nets.modules(), optimizers=optimizers)
    loss = NedLoss(nets, settings, losses.perceptual_loss(vgg_weights).to(torch_device))
    samples = SampleGrids(nets.generator, clips[0], settings, Path(run.run_dir), torch_device)
    return nets, clips, loss, Updater(nets, optimizers, settings, torch_device), loop, samples


def publish(nets: RendererNets, loop: TrainLoop, samples: SampleGrids, run: RendererRun) -> Generator:
    """The generator as NED's ``XX_net_G.pth``, the metrics and the final sample grid."""
    write_png(Path(run.samples), samples.grid())
    save_network(run.out, nets.generator.to("cpu"))
    loop.publish_metrics(run.metrics)
    return nets.generator


def train_renderer(sizes: RendererSizes, d_sizes: DiscriminatorSizes, settings: RendererTrainSettings,
                   vgg_weights: str | None, device: str, run: RendererRun) -> Generator:
    """NED's training on the actor's training clips (from ``run.init`` when given)."""
    nets, clips, loss, update, loop, samples = build_trainer(sizes, d_sizes, settings, vgg_weights, device, run)
    loop.run(_Step(nets, clips, settings, loss, update, loop, samples))
    return publish(nets, loop, samples, run)

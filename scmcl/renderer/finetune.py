"""SCMCL's renderer fine-tuning (method.md §5.3) on the shared resumable loop.

Each step draws a source window of the actor's training clips (the windows of its image-metric
distance matrices, ``scmc dists_image``, so a matrix row and a window are the same frames, defect
13), a target emotion other than its own and a pseudo-target window of that emotion with close
audio (``manipulator.pseudo``). The NED loss (``train.NedLoss``) is averaged over three passes:

1. source: the source window's last frames rendered and judged against the real ones;
2. generated: the frozen manipulator edits the source window in the pseudo-target's style; its
   expressions (jaw included) for each conditioning frame are re-rendered on the pseudo-target's
   frames (``rerender``: aligned, RGB, as the training data, defect 11), judged against the
   pseudo-target's real frames; plus the SCMC image loss: the fine-tuned image metric, attention
   path included, on the generated faces and the real faces whose audio distance is known (the
   intermediate neutral window for emotion → emotion, the source for neutral ↔ emotion, as the
   manipulator's loss; defect 14), |Scale(distance) − audio distance|; plus, with LPIPS weights,
   the paired term 1/(1 + mean distance) · LPIPS(generated, pseudo-target);
3. target: the pseudo-target's own frames.

A window without a pseudo-target has only the source pass. Frames are generated in sequence from
the renderer's own previous outputs (defect 15: SCMCL fed zeros).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from scmcl.io.clip_data import CLIP_KEY
from scmcl.manipulator.checkpoint import load_networks
from scmcl.manipulator.networks import ManipulatorNets, NetworkSizes
from scmcl.manipulator.pseudo import NONE, PseudoTargets, build_pseudo_targets
from scmcl.manipulator.windows import WindowSet, matrix_windows, training_sequences
from scmcl.renderer.lpips import Lpips
from scmcl.renderer.networks import DiscriminatorSizes, Generator, RendererSizes
from scmcl.renderer.rerender import Rerenderer
from scmcl.renderer.sequence import generate
from scmcl.renderer.train import (
    RendererRun,
    RendererTrainSettings,
    augmented,
    build_trainer,
    clip_batch,
    publish,
    run_length,
)
from scmcl.scmc.data import metric_images
from scmcl.scmc.models import encode_frames, fuse
from scmcl.scmc.train import NFRAME, JointModels

log = logging.getLogger(__name__)

#: The passes of a step, in order; a window without a pseudo-target has the first only.
PASSES = ("source", "generated", "target")


@dataclass(frozen=True)
class FinetuneInputs:
    """What fine-tuning reads beyond the clips: the actor's expression table and image-metric
    distances, the frozen manipulator and image metric, and the FLAME files to re-render."""

    expressions: str
    distances: str
    manipulator: str
    manipulator_sizes: NetworkSizes
    emotions: tuple[str, ...]
    metric: str
    flame_model: str
    flame_landmarks: str
    seq_len: int
    test_clips: tuple[str, ...]
    dist_thresh: float
    topk: int
    sim_weight: float
    paired_weight: float
    lpips_weights: str | None
    lpips_backbone: str | None


class ImageMetric(torch.nn.Module):
    """The fine-tuned SCMC image metric on NFRAME consecutive faces: the last attends to the one
    before (as in its fine-tuning and its distance matrices), then the scale layer maps embedding
    distances onto audio distances. Frozen; ``train()`` keeps it in eval mode (defect 16)."""

    def __init__(self, path: str, device: torch.device) -> None:
        super().__init__()
        models = JointModels.load(path, device)
        if models.visual != "image":
            raise ValueError(f"{path} is the fine-tuned {models.visual} metric; the renderer needs work/scmc/finetune_image.pt")
        self.encoder, self.attention, self.scale = models.visual_encoder, models.visual_attention, models.scale
        self.size, self.crop = models.image_size, models.image_crop
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ImageMetric:
        return super().train(False)

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, NFRAME, 3, H, W) masked aligned faces in [−1, 1] → (B, 128)."""
        images = metric_images(((faces.flatten(0, 1) + 1) / 2).clamp(0, 1), self.size, self.crop)
        return fuse(self.encoder, self.attention, encode_frames(self.encoder, images.unflatten(0, faces.shape[:2])))

    def distance(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return self.scale(torch.linalg.vector_norm(self.embed(fake) - self.embed(real).detach(), dim=1))


@dataclass(frozen=True)
class _Pass:
    conditioning: torch.Tensor  # (1, span, 10, H, W)
    faces: torch.Tensor  # (1, n, 3, H, W)
    mouths: torch.Tensor
    eyes: torch.Tensor


class _FinetuneStep:
    def __init__(self, trainer, windows: WindowSet, pseudo: PseudoTargets, clip_index: dict[tuple, int],
                 manipulator: ManipulatorNets, metric: ImageMetric, rerender: Rerenderer, lpips: Lpips | None,
                 settings: RendererTrainSettings, inputs: FinetuneInputs) -> None:
        self.nets, self.clips, self.loss, self.update, self.loop, self.samples = trainer
        self.windows, self.pseudo, self.clip_index = windows, pseudo, clip_index
        self.manipulator, self.metric, self.rerender, self.lpips = manipulator, metric, rerender, lpips
        self.settings, self.inputs = settings, inputs
        self.frames = self.nets.generator.frames
        self.neutral = windows.emotions.index("neutral")

    def _clip_run(self, window: int, n: int) -> tuple[int, int]:
        """(clip index, first frame) of the run of ``n`` generated frames ending the window."""
        row = self.windows.table.iloc[window]
        last = int(row.start) + self.inputs.seq_len - 1
        return self.clip_index[tuple(row[CLIP_KEY])], last - (n + self.frames - 1) + 1

    def _real_pass(self, window: int, n: int) -> _Pass:
        clip, first = self._clip_run(window, n)
        batch = clip_batch(self.clips, np.array([[clip, first]]), n + self.frames - 1, self.frames, self.loop.device)
        return _Pass(augmented(batch[0], self.settings), *batch[1:])

    def _generated_pass(self, source: int, target: int, n: int) -> _Pass:
        """The pseudo-target's frames conditioned on the edit of the source window, re-rendered."""
        frames = self.windows.frames
        with torch.no_grad():
            edited = self.manipulator.generator(frames[source:source + 1], self.manipulator.style_encoder(frames[target:target + 1]))
        clip, first = self._clip_run(target, n)
        span = n + self.frames - 1
        _, faces, mouths, eyes = clip_batch(self.clips, np.array([[clip, first]]), span, self.frames, self.loop.device)
        rendered = self.rerender.conditioning(self.clips[clip], range(first, first + span), edited[0, -span:])
        return _Pass(augmented(rendered[None], self.settings), faces, mouths, eyes)

    def _render(self, item: _Pass):
        fakes, _ = generate(self.nets.generator, item.conditioning)
        current = item.conditioning[0, self.frames - 1:]
        g, d, parts = self.loss(current, item.faces[0], fakes[0], item.mouths[0], item.eyes[0])
        return fakes, g, d, parts

    def _faces(self, window: int) -> torch.Tensor:
        """(1, NFRAME, 3, H, W) the window's last NFRAME real faces."""
        clip, first = self._clip_run(window, NFRAME)
        return self.clips[clip].faces(range(first + self.frames - 1, first + self.frames - 1 + NFRAME))[None].to(self.loop.device)

    def _scmc_terms(self, fakes, source: int, target_label: int, batch) -> dict[str, torch.Tensor]:
        """The SCMC image loss and the LPIPS paired term of the generated pass."""
        terms = {}
        one_neutral = (int(self.windows.labels[source]) == self.neutral) ^ (target_label == self.neutral)
        distance, inter, inter_distance = batch.distance[0], int(batch.inter[0]), batch.inter_distance[0]
        if self.inputs.sim_weight > 0 and (one_neutral or inter != NONE):
            real = self._faces(source if one_neutral else inter)
            wanted = distance if one_neutral else inter_distance
            terms["sim"] = self.inputs.sim_weight * (self.metric.distance(fakes[:, -NFRAME:], real) - wanted).abs().mean()
        if self.lpips is not None:
            mean = (distance + (inter_distance if inter != NONE else 0.0)) / 2
            target = self._faces(int(batch.target[0]))[:, -1]
            terms["lpips"] = self.inputs.paired_weight / (1 + mean) * self.lpips(fakes[:, -1], target).mean()
        return terms

    def _keys(self) -> list[str]:
        """Every metric a step reports (the metrics table has fixed columns): NaN when absent."""
        parts = ["g_image", "vgg", "d_image", "g_mouth", "d_mouth"] + (["g_eyes", "d_eyes"] if self.nets.eyes is not None else [])
        return [f"{key}_{name}" for name in PASSES for key in parts] + ["sim"] + (["lpips"] if self.lpips else [])

    def __call__(self, step: int) -> dict[str, float]:
        rng = self.loop.rng
        n = min(run_length(self.settings, step, self.inputs.seq_len, self.frames), self.inputs.seq_len - self.frames + 1)
        g_sum, d_sum, with_pseudo = 0.0, 0.0, 0
        sums, counts = dict.fromkeys(self._keys(), 0.0), dict.fromkeys(self._keys(), 0)
        for _ in range(self.settings.batch_size):
            source = int(rng.integers(len(self.windows)))
            label = int(self.windows.labels[source])
            others = [e for e in range(len(self.windows.emotions)) if e != label]
            target_label = others[int(rng.integers(len(others)))]
            batch = self.pseudo.draw(np.array([source]), np.array([target_label]), rng, self.loop.device)
            passes = {"source": self._real_pass(source, n)}
            if batch.mask[0] > 0:
                target = int(batch.target[0])
                passes |= {"generated": self._generated_pass(source, target, max(n, NFRAME)),
                           "target": self._real_pass(target, n)}
                with_pseudo += 1
            values = {}
            with self.update.precision():
                for name, item in passes.items():
                    fakes, g, d, parts = self._render(item)
                    values |= {f"{key}_{name}": value for key, value in parts.items()}
                    if name == "generated":
                        for key, term in self._scmc_terms(fakes, source, target_label, batch).items():
                            g = g + term
                            values[key] = term.item()
                    g_sum = g_sum + g / (len(passes) * self.settings.batch_size)
                    d_sum = d_sum + d / (len(passes) * self.settings.batch_size)
            for key, value in values.items():
                sums[key], counts[key] = sums[key] + value, counts[key] + 1
        self.update(g_sum, d_sum)
        self.samples(step)
        return {"run_frames": float(n), "pseudo_fraction": with_pseudo / self.settings.batch_size} | {
            key: sums[key] / counts[key] if counts[key] else float("nan") for key in sums}


def _windows(inputs: FinetuneInputs, train: pd.DataFrame) -> tuple[WindowSet, PseudoTargets]:
    sequences = training_sequences([inputs.expressions], inputs.emotions, inputs.test_clips)
    actor = str(train["actor"].iloc[0])
    windows = matrix_windows(sequences, {actor: str(Path(inputs.distances) / "windows.parquet")}, inputs.emotions,
                             inputs.seq_len)
    pseudo = build_pseudo_targets(windows, {actor: inputs.distances}, inputs.dist_thresh, inputs.topk)
    log.info("renderer scmcl: %d windows, pseudo-target coverage %.3f", len(windows), pseudo.coverage())
    return windows, pseudo


def finetune_renderer(sizes: RendererSizes, d_sizes: DiscriminatorSizes, settings: RendererTrainSettings,
                      vgg_weights: str | None, device: str, run: RendererRun, train: pd.DataFrame,
                      inputs: FinetuneInputs) -> Generator:
    """Fine-tune the generator of ``run.init`` (the actor's ned renderer) on the actor's
    training clips ``train`` (``windows.actor_clips``); write it as SCMCL's ``01_net_G.pth``."""
    if not run.init:
        raise ValueError("the scmcl renderer fine-tunes a trained renderer: give the ned generator (--init)")
    files = [inputs.expressions, inputs.manipulator, inputs.metric, inputs.lpips_weights, inputs.lpips_backbone,
             *sorted(str(p) for p in Path(inputs.distances).iterdir())]
    trainer = build_trainer(sizes, d_sizes, settings, vgg_weights, device, run, files,
                            {"seq_len": inputs.seq_len, "test_clips": list(inputs.test_clips), "dist_thresh": inputs.dist_thresh,
                             "topk": inputs.topk, "sim_weight": inputs.sim_weight, "paired_weight": inputs.paired_weight})
    nets, clips, _, _, loop, samples = trainer
    windows, pseudo = _windows(inputs, train)
    windows = windows.to(loop.device)
    keys = {tuple(row[CLIP_KEY]): index for index, row in train.iterrows()}
    manipulator = load_networks(inputs.manipulator, ManipulatorNets(inputs.manipulator_sizes, len(inputs.emotions)))
    manipulator = manipulator.to(loop.device).eval().requires_grad_(False)
    metric = ImageMetric(inputs.metric, loop.device)
    lpips = Lpips.from_files(inputs.lpips_weights, inputs.lpips_backbone, loop.device)
    rerender = Rerenderer(inputs.flame_model, inputs.flame_landmarks, loop.device)
    loop.run(_FinetuneStep(trainer, windows, pseudo, keys, manipulator, metric, rerender, lpips, settings, inputs))
    return publish(nets, loop, samples, run)


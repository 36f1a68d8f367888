"""Frames generated in sequence, as at inference, so that in training too the generator's
previous-output inputs are its own outputs (defect 15: SCMCL's fine-tuning fed it real frames).

NED starts every sequence from zero "previous outputs" (its ``no_first_img``, always on) and
back-propagates through the current frame only (``n_frames_backpropagate`` 1): earlier outputs
enter detached.
"""

from __future__ import annotations

import torch

from scmcl.renderer.networks import RGB, Generator


def generate(generator: Generator, conditioning: torch.Tensor, previous: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a run: ``conditioning`` (B, span, 10, H, W) of ``span`` consecutive frames gives
    ``span - frames + 1`` outputs (B, n, 3, H, W), output k conditioned on frames k … k+frames−1
    and on the outputs before it. ``previous`` (B, (frames−1)·3, H, W) continues an earlier run
    (zeros start one); returns the outputs and the ``previous`` that continues this run."""
    batch, span, _, height, width = conditioning.shape
    frames = generator.frames
    if span < frames:
        raise ValueError(f"a run of {span} frames is shorter than the generator's {frames} conditioning frames")
    if previous is None:
        previous = conditioning.new_zeros(batch, RGB * (frames - 1), height, width)
    outputs = []
    for k in range(span - frames + 1):
        fake = generator(conditioning[:, k:k + frames].flatten(1, 2), previous)
        outputs.append(fake)
        previous = torch.cat([previous[:, RGB:], fake.detach()], dim=1)
    return torch.stack(outputs, dim=1), previous


@torch.no_grad()
def render_clip(generator: Generator, conditioning: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Inference over a whole clip: (T, 10, H, W) conditioning → (T, 3, H, W) faces, one per
    frame. The first frame's conditioning is repeated before the clip so frame 0 has a full
    window (NED's test loader clamps its window the same way); ``chunk`` frames are
    generated per call, carrying the previous outputs across calls."""
    padded = torch.cat([conditioning[:1].expand(generator.frames - 1, -1, -1, -1), conditioning])[None]
    outputs, carry = [], None
    for start in range(0, len(conditioning), chunk):
        stop = min(len(conditioning), start + chunk)
        fakes, carry = generate(generator, padded[:, start:stop + generator.frames - 1], carry)
        outputs.append(fakes[0])
    return torch.cat(outputs)

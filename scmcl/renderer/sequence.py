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

"""Training: the one resumable loop every training rule runs its steps in."""

from __future__ import annotations

from scmcl.train.loop import TrainLoop, TrainSettings, load_published, seed_everything

__all__ = ["TrainLoop", "TrainSettings", "load_published", "seed_everything"]

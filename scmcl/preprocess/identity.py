"""An actor's one identity for the landmark fit: the mean of the identities fitted freely to a
few of its neutral clips.

The fit solves one identity per clip, whose prior counts like one frame's, against an
expression prior paid by every frame; so an expression held through a clip (an emotion) is
cheaper as a different face, and most of it leaves the expressions. Neutral clips hold no
emotion, so their free identities are the actor's face (plus each clip's mean speaking mouth,
which the average evens out). Every clip of the actor, neutral ones included, and the paired
ground truth of the synthetic corpus, is then fitted with this identity, so that the emotions
stay in the expressions and the edits and their truth are compared on one face.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from scmcl.io import clip_data as cd
from scmcl.io.atomic import atomic_path

#: The emotion whose clips define an actor's face.
NEUTRAL = "neutral"


def identity_clips(manifest: pd.DataFrame, actor: str, count: int, source: str) -> pd.DataFrame:
    """The actor's first ``count`` neutral clips by (level, clip); ``source`` names the manifest in errors."""
    rows = manifest[(manifest.actor == actor) & (manifest.emotion == NEUTRAL)].sort_values(["level", "clip"])
    if rows.empty:
        raise ValueError(f"{source} has no neutral clip of actor {actor}: the actor identity of the fit is averaged over "
                         "neutral clips; add the actor's neutral clips or use preprocess.reconstruction: deca")
    return rows.head(count)


def mean_identity(shapes: list[np.ndarray], frames: list[int]) -> np.ndarray:
    """The clips' fitted identities averaged with their usable frames as weights."""
    weights = np.asarray(frames, np.float64)
    return (np.stack(shapes).astype(np.float64) * weights[:, None]).sum(0) / weights.sum()


def write_identity(path: str | Path, actor: str, shape: np.ndarray, clips: list[str], fit_rms_px: list[float]) -> None:
    record = {"actor": actor, "shape": np.asarray(shape, np.float64).tolist(), "clips": clips, "fit_rms_px": fit_rms_px}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def read_identity(path: str | Path, actor: str, n_shape: int) -> np.ndarray:
    """The identity of ``actor`` in ``path`` as (n_shape,) float64; a wrong file is one error naming it."""
    fix = cd.rerun("identity", actor)
    try:
        record = json.loads(Path(path).read_text())
        shape = np.asarray(record["shape"], np.float64)
        owner = record["actor"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not an actor identity ({err}): {fix}") from None
    if owner != actor:
        raise ValueError(f"{path} is the identity of actor {owner}, not {actor}: {fix}")
    if shape.shape != (n_shape,):
        raise ValueError(f"{path} holds {shape.size} identity coefficients, the fit uses {n_shape}: {fix} "
                         "(preprocess.n_shape or the FLAME model changed)")
    return shape

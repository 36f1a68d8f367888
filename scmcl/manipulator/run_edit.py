"""One edit of ``scmcl manipulate``: a source clip's expressions, re-synthesised in a target
emotion with a label's or a reference's style, at a constant or keyframed intensity, written
as expression-table rows with a JSON record of what made it."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from scmcl.device import resolve_device
from scmcl.io.atomic import atomic_path, write_parquet
from scmcl.io.clip_data import (
    CLIP_KEY,
    EXP_COLUMNS,
    JAW_POSE_COLUMNS,
    VIEW51_COLUMNS,
    clip_id,
    expression_clips,
    expression_view51,
    read_expressions,
    read_table,
    require_finite,
    rerun,
)
from scmcl.manipulator.checkpoint import load_networks
from scmcl.manipulator.edit import (
    apply_intensity,
    edit_sequence,
    edit_table,
    intensity_curve,
    label_style,
    reference_style,
)
from scmcl.manipulator.networks import ManipulatorNets


@dataclass(frozen=True)
class EditRequest:
    """A source clip (emotion, level, clip) of ``actor`` to edit into ``emotion``; reference-driven
    when ``reference`` (an expression table) and ``reference_actor`` are given, styled by that
    actor's clips of ``emotion`` except the held-out ``test_clips`` (an intra-ID reference would
    otherwise be the source's own sentence in the target emotion, the evaluation's truth)."""

    expressions: str
    manifest: str
    actor: str
    source: tuple[str, int, str]
    emotion: str
    reference: str | None
    reference_actor: str | None
    test_clips: tuple[str, ...]
    intensity: float | list
    seed: int
    seq_len: int
    batch: int


def _clip_rows(table, key: tuple, path: str):
    rows = table[(table[CLIP_KEY] == list(key)).all(axis=1)]
    if rows.empty:
        raise ValueError(f"{path} has no clip {clip_id(*key)}: check the actor, emotion, level and clip id")
    return rows.sort_values("frame") if "frame" in rows else rows


def _finite_clips(rows, path: str) -> None:
    """Each clip's values checked finite, naming the file and the clip: a NaN edits into a blob face."""
    values = [*JAW_POSE_COLUMNS, *EXP_COLUMNS]
    for key, clip in rows.groupby(CLIP_KEY):
        require_finite(clip[values].to_numpy(), f"{path} ({clip_id(*key)})", rerun("expressions"), values, clip.frame)


def _reference_clips(request: EditRequest) -> list[np.ndarray]:
    table = read_expressions(request.reference)
    rows = table[(table.actor == request.reference_actor) & (table.emotion == request.emotion)
                 & ~table["clip"].isin(list(request.test_clips))]
    if rows.empty:
        raise ValueError(f"{request.reference} has no {request.emotion} clip of {request.reference_actor} outside test_clips "
                         f"({', '.join(request.test_clips)}): the reference style comes from the reference actor's other "
                         "clips of the target emotion")
    _finite_clips(rows, request.reference)
    return list(expression_clips(rows).values())


def run_edit(request: EditRequest, nets: ManipulatorNets, emotions: Sequence[str], weights: str, device: str,
             out: str | Path, record: str | Path) -> dict:
    """Edit the clip, write its rows to ``out`` and the record to ``record``; returns the record."""
    if request.emotion not in emotions:
        raise ValueError(f"target emotion {request.emotion} is not one of the configured emotions {', '.join(emotions)}")
    if (request.reference is None) != (request.reference_actor is None):
        raise ValueError("a reference-driven edit needs both --reference-expressions and --reference-actor")
    key = (request.actor, *request.source)
    rows = _clip_rows(read_expressions(request.expressions), key, request.expressions)
    _finite_clips(rows, request.expressions)
    manifest = read_table(request.manifest, [*CLIP_KEY, "fps"], rerun("manifest"), "the manifest")
    fps = float(_clip_rows(manifest, key, request.manifest).fps.iloc[0])
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"{request.manifest}: {clip_id(*key)} has fps {fps}: {rerun('manifest')}")
    source51 = expression_view51(rows)
    curve = intensity_curve(request.intensity, len(source51), fps)
    load_networks(weights, nets)
    nets.to(resolve_device(device))
    if request.reference is not None:
        style = reference_style(nets, _reference_clips(request), request.seq_len, request.batch)
        kind = f"reference {request.reference_actor}"
    else:
        style = label_style(nets, list(emotions).index(request.emotion), request.seed)
        kind = f"label, seed {request.seed}"
    edited51 = edit_sequence(nets.generator, source51, style, request.seq_len, request.batch)
    require_finite(edited51, f"the manipulator's edit of {clip_id(*key)} with {weights}",
                   "these networks give NaN or inf: retrain them or import a released checkpoint",
                   VIEW51_COLUMNS, rows.frame)
    write_parquet(edit_table(rows, apply_intensity(source51, edited51, curve), request.emotion), out)
    figures = {"source": clip_id(*key), "frames": len(source51), "fps": fps, "style": kind,
               "request": asdict(request), "weights": str(weights),
               "weights_sha256": hashlib.sha256(Path(weights).read_bytes()).hexdigest(),
               "style_code": torch.as_tensor(style).cpu().tolist(), "mean_intensity": float(curve.mean())}
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps(figures, indent=1) + "\n")
    return figures

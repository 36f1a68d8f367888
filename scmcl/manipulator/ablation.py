"""The manipulator's ablation table: each variant's edits of the held-out neutral clips scored
against the paired ground truth (the same sentence and timing in the target emotion, run
through the same preprocessing, so both sides are reconstructions).

Figures per edit, then averaged per (variant, emotion) and over emotions:

- ``dist_source`` / ``dist_edit``: mean over frames of the L2 distance between the 50
  expression coefficients of the source (resp. the edit) and of the paired ground truth; the
  edit should be the closer (the jaw is left out: it is the speech, which both keep);
- ``static_source`` / ``static_edit``: the same between the clips' mean expressions, the part
  an emotion shifts (the per-frame distance adds how well the speech's own expression dynamics,
  lip shapes beyond the jaw, are kept);
- ``jaw_corr``: Pearson correlation of the edit's jaw opening with the source's (speech kept);
- ``target_rate``: fraction of edited frames the expression classifier calls the target emotion;
  ``source_neutral_rate``: of source frames it calls neutral; ``truth_target_rate``: of paired
  ground-truth frames it calls the target (what a perfect edit would score);
- ``intensity0_max_abs``: largest difference from the source of the edit at intensity 0;
  ``intensity05_position``: how far the intensity-0.5 edit lies from the source, as a fraction
  of the full edit's distance (mean over frames; 0.5 lies halfway);
- ``meets_all``: whether the edit meets the four criteria of the manipulator's acceptance, closer
  to the truth than the source, jaw r >= 0.9, most edited frames called the target and most
  source frames called neutral (per emotion: the fraction of its edits that do).

The per-edit rows go to a second table, so a reader sees which clip misses which criterion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from scmcl.io.atomic import atomic_path
from scmcl.io.clip_data import expression_clips, expression_view51, find_clip, read_expressions
from scmcl.manipulator.classifier import load_classifier, predict
from scmcl.manipulator.edit import apply_intensity

FIGURES = ("dist_source", "dist_edit", "static_source", "static_edit", "jaw_corr", "target_rate", "source_neutral_rate", "truth_target_rate",
           "intensity0_max_abs", "intensity05_position", "meets_all")
MIN_JAW_CORR = 0.9


def _clips(tables: Sequence[str]) -> dict[tuple, np.ndarray]:
    clips = {}
    for path in tables:
        clips |= expression_clips(read_expressions(path))
    return clips


def expression_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frames of the L2 distance of two (T,51) clips' 50 expression values (no jaw)."""
    return float(np.linalg.norm(a[:, 1:] - b[:, 1:], axis=1).mean())


def _static_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a[:, 1:].mean(0) - b[:, 1:].mean(0)))


def score_edit(edit: np.ndarray, source: np.ndarray, truth: np.ndarray, target: str, model) -> dict[str, float]:
    """The figures of one edit ((T,51) each; the truth is cut to the common length)."""
    n = min(len(edit), len(truth))
    called = lambda frames: np.array(predict(model, frames)[0])  # noqa: E731
    full = np.linalg.norm(edit - source, axis=1)
    half = np.linalg.norm(apply_intensity(source, edit, np.full(len(edit), 0.5)) - source, axis=1)
    moved = full > 1e-9
    figures = {"dist_source": expression_distance(source[:n], truth[:n]), "dist_edit": expression_distance(edit[:n], truth[:n]),
            "static_source": _static_distance(source[:n], truth[:n]), "static_edit": _static_distance(edit[:n], truth[:n]),
            "jaw_corr": float(np.corrcoef(edit[:, 0], source[:, 0])[0, 1]),
            "target_rate": float((called(edit) == target).mean()),
            "source_neutral_rate": float((called(source) == "neutral").mean()),
            "truth_target_rate": float((called(truth) == target).mean()),
            "intensity0_max_abs": float(np.abs(apply_intensity(source, edit, np.zeros(len(edit))) - source).max()),
            "intensity05_position": float((half[moved] / full[moved]).mean()) if moved.any() else float("nan")}
    figures["meets_all"] = float(figures["dist_edit"] < figures["dist_source"] and figures["jaw_corr"] >= MIN_JAW_CORR
                                 and figures["target_rate"] > 0.5 and figures["source_neutral_rate"] > 0.5)
    return figures


def ablation_table(edits: dict[str, list[str]], expressions: Sequence[str], paired: Sequence[str], classifier: str,
                   device: str, out: str | Path, per_edit: str | Path) -> pd.DataFrame:
    """Score every edit table (by variant); write the per-(variant, emotion) means, plus a
    ``mean`` row per variant, to ``out`` and each edit's row to ``per_edit`` (TSV); returns the table."""
    model, _ = load_classifier(classifier, device)
    sources, truths = _clips(expressions), _clips(paired)
    rows = []
    for variant, paths in edits.items():
        for path in paths:
            table = read_expressions(path).sort_values("frame")
            actor, emotion, clip = table.actor.iloc[0], table.emotion.iloc[0], table["clip"].iloc[0]
            figures = score_edit(expression_view51(table), find_clip(sources, actor, "neutral", clip, "source", path),
                                 find_clip(truths, actor, emotion, clip, "paired ground-truth", path), emotion, model)
            rows.append({"variant": variant, "emotion": emotion, "actor": actor, "clip": clip, **figures})
    scores = pd.DataFrame(rows)
    per_emotion = scores.groupby(["variant", "emotion"], sort=False)[list(FIGURES)].mean().reset_index()
    overall = per_emotion.groupby("variant", sort=False)[list(FIGURES)].mean().reset_index().assign(emotion="mean")
    counts = scores.groupby(["variant", "emotion"], sort=False).size().rename("edits").reset_index()
    table = pd.concat([per_emotion.merge(counts, on=["variant", "emotion"]),
                       overall.assign(edits=scores.groupby("variant", sort=False).size().to_numpy())], ignore_index=True)
    table = table[["variant", "emotion", "edits", *FIGURES]]
    for frame, path in ((table, out), (scores, per_edit)):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return table

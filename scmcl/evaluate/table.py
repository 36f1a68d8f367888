"""The evaluation table and its plot: each row's per-video figures (``score.py``) averaged per
target emotion over the actors, and over the emotions (``mean``), in the order source, naive,
NED, NED+SCMCL, truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from scmcl.evaluate.score import FIGURES, ROWS
from scmcl.io.atomic import atomic_path

#: What each figure's axis says, and which way is better.
LABELS = {"expression_error": "expression error (lower)", "expression_accuracy": "emotion acc., expressions",
          "image_accuracy": "emotion acc., faces", "identity_similarity": "identity similarity",
          "identity_accuracy": "identity acc.", "m_lmd": "M-LMD px (lower)", "psnr": "face PSNR dB",
          "ssim": "face SSIM", "jitter": "jitter px (lower)", "sync_source": "mouth vs source r",
          "sync_audio": "mouth vs audio r"}


def evaluation_table(row_tables: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Write the per-(row, emotion) means and each row's ``mean`` line as TSV; returns it."""
    scores = pd.concat([pd.read_csv(path, sep="\t", dtype={"clip": str}) for path in row_tables], ignore_index=True)
    unknown = sorted(set(scores.row) - set(ROWS))
    if unknown:
        raise ValueError(f"unknown evaluation rows {unknown} in {', '.join(map(str, row_tables))}")
    order = [row for row in ROWS if row in set(scores.row)]
    per_emotion = scores.groupby(["row", "emotion"], sort=False)[list(FIGURES)].mean().reset_index()
    counts = scores.groupby(["row", "emotion"], sort=False).size().rename("videos").reset_index()
    per_emotion = per_emotion.merge(counts, on=["row", "emotion"])
    overall = per_emotion.groupby("row", sort=False)[list(FIGURES)].mean().reset_index()
    overall = overall.assign(emotion="mean", videos=scores.groupby("row", sort=False).size().reindex(overall.row).to_numpy())
    parts = [part[part.row == row] for row in order for part in (per_emotion, overall)]
    table = pd.concat(parts, ignore_index=True)[["row", "emotion", "videos", *FIGURES]]
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
    return table


def evaluation_plot(table: pd.DataFrame, face_report: str | Path, out: str | Path) -> None:
    """One panel per figure: each row's mean over emotions as a bar, each emotion as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    report = json.loads(Path(face_report).read_text())
    rows = list(dict.fromkeys(table.row))
    columns = 4
    fig, axes = plt.subplots(int(np.ceil(len(FIGURES) / columns)), columns, figsize=(4 * columns, 2.8 * np.ceil(len(FIGURES) / columns)))
    for ax, figure in zip(axes.flat, FIGURES):
        means = [table[(table.row == r) & (table.emotion == "mean")][figure].mean() for r in rows]
        ax.bar(range(len(rows)), means, color="#9ab")
        for i, r in enumerate(rows):
            values = table[(table.row == r) & (table.emotion != "mean")][figure].to_numpy()
            ax.plot(np.full(len(values), i), values, "k.", markersize=3)
        ax.set_xticks(range(len(rows)), rows, fontsize=8)
        ax.set_title(LABELS[figure], fontsize=9)
    for ax in list(axes.flat)[len(FIGURES):]:
        ax.axis("off")
    fig.suptitle(f"Edits of the held-out test clips against the paired ground truth (bars: mean over emotions, dots: "
                 f"emotions). Face classifier on held-out real clips: emotion {report['emotion_accuracy']:.2f}, "
                 f"actor {report['actor_accuracy']:.2f} (chance {report['chance']:.2f})", fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)

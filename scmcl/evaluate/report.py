"""What `snakemake --report` shows beside the tables: each trainer's training curves, contact
sheets of the edits (source | naive | NED | NED+SCMCL | paired truth, frame by frame), and a
page that plays the edited videos (the report shows an HTML page in a frame, and a registered
MP4 only as a download)."""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from scmcl.io.atomic import atomic_path
from scmcl.io.media import read_frames

#: Bookkeeping columns of the trainers' metrics tables, not curves.
NOT_CURVES = {"step", "seconds", "lr", "run_frames", "pseudo_fraction"}


def training_curves(metrics: str | Path, title: str, out: str | Path) -> list[str]:
    """One panel per logged term of a trainer's metrics table (a moving average over 2% of the
    steps over the raw values); returns the terms drawn."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    table = pd.read_csv(metrics, sep="\t")
    terms = [c for c in table.columns if c not in NOT_CURVES and pd.api.types.is_numeric_dtype(table[c])
             and table[c].notna().any() and table[c].abs().sum() > 0]
    if not terms:
        raise ValueError(f"{metrics} has no logged term to draw: rerun the training rule that writes it")
    columns = min(4, len(terms))
    rows = int(np.ceil(len(terms) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.3 * rows), squeeze=False)
    window = max(1, len(table) // 50)
    for ax, term in zip(axes.flat, terms):
        ax.plot(table.step, table[term], color="#ccc", linewidth=0.5)
        ax.plot(table.step, table[term].rolling(window, min_periods=1).mean(), color="#246", linewidth=1)
        ax.set_title(term, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return terms


def _labelled(frame: np.ndarray, label: str) -> np.ndarray:
    bar = np.full((18, frame.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, label, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, frame])


def contact_sheet(videos: Sequence[tuple[str, str]], rows: int, out: str | Path) -> None:
    """A PNG of ``rows`` frames spread over the clip (top to bottom), one column per
    (label, video), labelled on top; the videos must have the same frame size."""
    stacks = [read_frames(path) for _, path in videos]
    length = min(len(s) for s in stacks)
    shown = np.linspace(0, length - 1, rows).round().astype(int)
    columns = [_labelled(np.concatenate(list(stack[shown])), label) for (label, _), stack in zip(videos, stacks)]
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.concatenate(columns, axis=1), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode the contact sheet {out}")
    with atomic_path(out) as tmp:
        tmp.write_bytes(png.tobytes())


def videos_page(entries: Sequence[tuple[str, Sequence[tuple[str, str]]]], title: str, out_dir: str | Path) -> None:
    """``out_dir``/index.html playing each entry's videos side by side (a heading, then
    (label, video) pairs), with the videos copied beside it; written into a fresh sibling
    folder and moved into place, so a failure leaves no half page."""
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    body = [f"<h1>{html.escape(title)}</h1>"]
    for n, (heading, videos) in enumerate(entries):
        cells = []
        for m, (label, video) in enumerate(videos):
            name = f"{n:02d}_{m}_{Path(video).name}"
            shutil.copy2(video, staging / name)
            cells.append(f'<figure><video src="{html.escape(name)}" controls preload="metadata" width="240"></video>'
                         f"<figcaption>{html.escape(label)}</figcaption></figure>")
        body.append(f"<h2>{html.escape(heading)}</h2><div class=\"row\">{''.join(cells)}</div>")
    style = "body{font-family:sans-serif}.row{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}figcaption{font-size:12px}"
    (staging / "index.html").write_text(f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                                        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.replace(out_dir)

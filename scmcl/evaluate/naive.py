"""The naive baseline edit: the source clip's expressions plus the target emotion's mean offset.

The offset is the actor's mean 50 expression values over its training clips of the target
emotion minus those over its neutral training clips (the test clips are held out, as for every
trainer); the jaw opening, the speech, is left as it is. It is what an edit scores with no
model of how an emotion and speech interact: the floor the manipulator has to beat. Written as
``scmcl manipulate`` writes an edit, so the same renderer and video path take it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from scmcl.io.atomic import atomic_path, write_parquet
from scmcl.io.clip_data import clip_id, expression_clips, expression_view51, read_expressions
from scmcl.manipulator.edit import edit_table


def emotion_offset(table, actor: str, emotion: str, test_clips: Sequence[str], source: str) -> np.ndarray:
    """(51,) the actor's mean expression of ``emotion`` minus its neutral mean, over training
    clips; the jaw component is 0."""
    means = {}
    for wanted in ("neutral", emotion):
        clips = [frames for key, frames in expression_clips(table[(table.actor == actor) & (table.emotion == wanted)]).items()
                 if key[3] not in test_clips]
        if not clips:
            raise ValueError(f"{source} has no {wanted} training clip of {actor} (test clips {', '.join(test_clips)} are held out)")
        means[wanted] = np.concatenate(clips).mean(0)
    offset = means[emotion] - means["neutral"]
    offset[0] = 0.0
    return offset


def naive_edit(expressions: str | os.PathLike, actor: str, source: tuple[str, int, str], emotion: str,
               test_clips: Sequence[str], out: str | os.PathLike, record: str | os.PathLike) -> dict:
    """Write the naive edit of the clip ``(actor, *source)`` into ``emotion``; returns its record."""
    table = read_expressions(expressions)
    key = (actor, *source)
    rows = table[(table.actor == actor) & (table.emotion == source[0]) & (table.level == source[1]) & (table["clip"] == source[2])]
    if rows.empty:
        raise ValueError(f"{expressions} has no clip {clip_id(*key)}: check the actor and the test clip")
    rows = rows.sort_values("frame")
    offset = emotion_offset(table, actor, emotion, list(test_clips), str(expressions))
    write_parquet(edit_table(rows, expression_view51(rows) + offset, emotion), out)
    figures = {"source": clip_id(*key), "frames": len(rows), "style": "naive: the target emotion's mean offset",
               "expressions": str(expressions), "offset_norm": float(np.linalg.norm(offset)), "offset": offset.tolist()}
    with atomic_path(record) as tmp:
        Path(tmp).write_text(json.dumps(figures, indent=1) + "\n")
    return figures

"""The SPFEM papers' own metrics (peers.md §2.1, the CDRL/STCCL metric code): FAD, the emotion
CSIM and LSE-D/C of NED's and NED+SCMCL's reference-driven edits, in the intra-ID protocol (the
reference emotion from the actor's own clips) and the cross-ID one (from another actor), laid out
like the published tables: per target emotion and their mean, the methods side by side.

Each metric needs one released network the user supplies (config ``evaluate.paper.weights.<network>``,
whose description names the file and where it comes from). A missing file skips its metrics with
one line saying so, never a crash and never a zero: the feature files simply lack those entries
and the table lacks those columns.

Per video (and per actor and emotion for the real frames) one feature file is computed, so a
cluster runs them in parallel and a new weight file reruns only what it feeds; the table is
plain arithmetic over them:

* FAD: the Fréchet distance of the ArcFace features of all real vs all generated frames of
  the emotion, the test actors pooled;
* CSIM: per actor, the mean pairwise cosine of EfficientFace features of 100 real and 100
  generated frames drawn with seed 1, then the mean over actors (an expression similarity, not
  the identity CSIM of talking-head papers);
* LSE-D / LSE-C: SyncNet's distance and confidence per generated video, then the mean.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from scmcl.io.atomic import atomic_path
from scmcl.io.clip_data import FACES_ALIGNED, read_clip_stack, rerun
from scmcl.options import schema_node

log = logging.getLogger(__name__)

#: The networks, in config order, and the metrics each one gives.
NETWORKS = {"arcface": ("FAD",), "efficientface": ("CSIM",), "syncnet": ("LSE-D", "LSE-C")}
#: The published tables' methods and the direction of each metric.
METHODS = {"ned": "NED", "scmcl": "NED+SCMCL"}
LOWER_IS_BETTER = {"FAD": True, "CSIM": False, "LSE-D": True, "LSE-C": False}
#: SyncNet's audio rate.
SYNC_RATE = 16000


@dataclass(frozen=True)
class PaperWeights:
    """The three user files (config ``evaluate.paper.weights``; ``""``: not configured)."""

    arcface: str
    efficientface: str
    syncnet: str

    def present(self) -> dict[str, str]:
        """The networks whose file exists, and its path."""
        return {name: path for name, path in vars(self).items() if path and Path(path).is_file()}

    def skipped(self, networks: Sequence[str] = tuple(NETWORKS)) -> list[str]:
        """One line per network of ``networks`` whose file is missing: its metrics, the file, where
        it comes from."""
        lines = []
        for name, path in vars(self).items():
            if name in networks and name not in self.present():
                where = f"{path} does not exist" if path else f"evaluate.paper.weights.{name} is not set"
                lines.append(f"{' and '.join(NETWORKS[name])} skipped ({where}): "
                             f"{schema_node(f'evaluate.paper.weights.{name}')['description']}")
        return lines


def _networks(weights: PaperWeights, networks: Sequence[str], device: str) -> dict[str, object]:
    from scmcl.evaluate.csim import load_efficientface
    from scmcl.evaluate.fad import load_arcface
    from scmcl.evaluate.lse import load_syncnet

    loaders = {"arcface": load_arcface, "efficientface": load_efficientface, "syncnet": load_syncnet}
    return {name: loaders[name](path, device) for name, path in weights.present().items() if name in networks}


def video_faces(video: str | os.PathLike, clip_dir: str | os.PathLike) -> np.ndarray:
    """A generated video's aligned, masked faces, cut with its source clip's crops and alignment."""
    from scmcl.evaluate.faces import clip_faces
    from scmcl.io.media import read_frames

    return clip_faces(read_frames(video), clip_dir)[0]


def real_faces(clip_dirs: Sequence[str | os.PathLike]) -> np.ndarray:
    """The preprocessed aligned, masked faces of real clips, one after the other."""
    if not clip_dirs:
        raise ValueError("no real clip: the actor has no test clip (test_clips) in this emotion")
    return np.concatenate([read_clip_stack(d, FACES_ALIGNED, rerun("shard")) for d in clip_dirs])


def paper_features(faces: np.ndarray, weights: PaperWeights, device: str, out: str | Path,
                   video: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The features of one frame set for every present network, written to ``out`` (npz):
    ``arcface`` (T, 512), ``efficientface`` (T, 1024) and, for a generated ``video`` (its
    audio track and frame rate), ``lse`` = [LSE-D, LSE-C, offset]."""
    from scmcl.evaluate.csim import emotion_features
    from scmcl.evaluate.fad import arcface_features

    networks = tuple(NETWORKS) if video is not None else ("arcface", "efficientface")  # real frames: no lip sync
    for line in weights.skipped(networks):
        log.warning(line)
    nets = _networks(weights, networks, device)
    features: dict[str, np.ndarray] = {"frames": np.array(len(faces))}
    if "arcface" in nets:
        features["arcface"] = arcface_features(nets["arcface"], faces, device)
    if "efficientface" in nets:
        features["efficientface"] = emotion_features(nets["efficientface"], faces, device)
    if "syncnet" in nets:
        from scmcl.evaluate.lse import lse
        from scmcl.io.media import probe, read_audio

        wave = read_audio(video, SYNC_RATE)
        features["lse"] = np.array(lse(nets["syncnet"], faces, wave, SYNC_RATE, probe(video).fps, device), float)
    with atomic_path(out) as tmp, tmp.open("wb") as file:
        np.savez(file, **features)
    return features


@dataclass(frozen=True)
class Entry:
    """One feature file of the protocol: a method's edit (``method`` ned/scmcl) or the real frames
    (``method`` "real") of ``actor`` in ``emotion``."""

    method: str
    actor: str
    emotion: str
    path: str


def _read(entry: Entry) -> dict[str, np.ndarray]:
    with np.load(entry.path) as data:
        return {key: data[key] for key in data.files}


def _cell(metric: str, real: list[dict], generated: list[dict]) -> float | None:
    """One metric of one method and emotion; None when a file lacks the network's features."""
    from scmcl.evaluate.csim import emotion_csim
    from scmcl.evaluate.fad import frechet_distance

    if metric == "FAD":
        if not all("arcface" in f for f in real + generated):
            return None
        return frechet_distance(np.concatenate([f["arcface"] for f in real]), np.concatenate([f["arcface"] for f in generated]))
    if metric == "CSIM":
        if not all("efficientface" in f for f in real + generated):
            return None
        actors = sorted({f["actor"] for f in generated})
        return emotion_csim({a: (np.concatenate([f["efficientface"] for f in real if f["actor"] == a]),
                                 np.concatenate([f["efficientface"] for f in generated if f["actor"] == a])) for a in actors})
    if not all("lse" in f for f in generated):
        return None
    return float(np.mean([f["lse"][0 if metric == "LSE-D" else 1] for f in generated]))


def paper_table(entries: Sequence[Entry], out: str | Path) -> pd.DataFrame:
    """The protocol's table (TSV): one row per target emotion in the entries' order and ``mean``;
    columns ``<method> <metric>`` per method and per metric every feature file has."""
    loaded = [(entry, {**_read(entry), "actor": entry.actor}) for entry in entries]
    emotions = list(dict.fromkeys(e.emotion for e in entries))
    methods = [m for m in METHODS if any(e.method == m for e in entries)]
    rows = []
    for emotion in emotions:
        real = [f for e, f in loaded if e.method == "real" and e.emotion == emotion]
        row: dict[str, object] = {"emotion": emotion}
        for method in methods:
            generated = [f for e, f in loaded if e.method == method and e.emotion == emotion]
            missing = sorted({f["actor"] for f in generated} - {f["actor"] for f in real})
            if missing:
                raise ValueError(f"no real frames of {', '.join(missing)} in {emotion}: give their real feature files")
            for metric in LOWER_IS_BETTER:
                value = _cell(metric, real, generated)
                if value is not None:
                    row[f"{METHODS[method]} {metric}"] = value
        rows.append(row)
    table = pd.DataFrame(rows)
    table = pd.concat([table, pd.DataFrame([{"emotion": "mean", **table.drop(columns="emotion").mean().to_dict()}])],
                      ignore_index=True)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    return table

"""A preprocessing shard: every clip of one (actor, emotion), resumable clip by clip.

Per-clip outputs live under ``<clip_root>/level_<n>/<clip>/`` and are published atomically;
``progress.json`` records each finished clip with the settings fingerprint, so a rerun after
a kill (SLURM time-out, Ctrl-C) skips finished clips and redoes only the rest. The shard
table, the rule's declared output, is written last.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from scmcl.corpus.layout import ClipKey, groundtruth_path
from scmcl.device import resolve_device
from scmcl.face3d.flame import FlameLayer
from scmcl.face3d.flame_file import load_flame_model, load_landmark_embedding
from scmcl.io import clip_data as cd
from scmcl.io.atomic import atomic_path, write_parquet
from scmcl.io.media import read_frames
from scmcl.preprocess.align import landmark_template, load_template
from scmcl.preprocess.clip import process_clip
from scmcl.preprocess.identity import identity_clips, mean_identity, write_identity
from scmcl.preprocess.masks import SegmentationMasker
from scmcl.preprocess.reconstruct import Reconstruction, make_reconstructor
from scmcl.preprocess.settings import PreprocessSettings
from scmcl.preprocess.tracking import SyntheticTracker, TrackedClip, make_tracker, track_clip

log = logging.getLogger(__name__)
PROGRESS = "progress.json"
#: Manifest columns a shard reads, checked before its first clip.
MANIFEST_COLUMNS = ("actor", "emotion", "level", "clip", "video", "fps")
#: Shard table columns the expression table reads.
SHARD_COLUMNS = (*cd.CLIP_KEY, "directory")


def clip_dir(clip_root: Path, level: int, clip: str) -> Path:
    return clip_root / f"level_{level}" / clip


def _load_progress(path: Path, fingerprint: str) -> dict[str, dict]:
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    return state["clips"] if state.get("fingerprint") == fingerprint else {}


def _save_progress(path: Path, fingerprint: str, clips: dict[str, dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "clips": clips}, indent=1))


def _complete(directory: Path) -> bool:
    return all(path.is_file() for path in cd.clip_files(directory))


class ShardRunner:
    """Loads the models once and preprocesses the clips of one shard."""

    def __init__(self, settings: PreprocessSettings, model_path: str, landmarks_path: str, data_root: str,
                 identity: np.ndarray | None = None):
        """``identity``: the actor's (``scmcl.preprocess.identity``), kept by every fit; ``None``
        fits one per clip."""
        self.settings = settings
        self.device = resolve_device(settings.device)
        model = load_flame_model(model_path)
        self.layer = FlameLayer(model, landmarks=load_landmark_embedding(landmarks_path),
                                n_shape=min(settings.n_shape, model.num_shape),
                                n_exp=min(settings.n_exp, model.num_expression)).to(self.device)
        self.template = load_template(settings.template) if settings.template else landmark_template(self.layer, settings.crop_size)
        self.reconstructor = make_reconstructor(settings.reconstruction, self.layer, self.device, settings.crop_size,
                                                settings.deca_model, settings.fit_iterations,
                                                settings.fit_expression_prior, identity)
        self.masker = SegmentationMasker(settings.segmentation_weights, self.device) if settings.mask == "fsgan" else None
        self.data_root = data_root
        self._shared = None
        self.identity = identity
        self.fingerprint = settings.fingerprint(model_path, identity)

    def _tracker(self, actor: str, key: ClipKey):
        if self.settings.tracker == "synthetic":
            return make_tracker("synthetic", groundtruth=groundtruth_path(self.data_root, actor, key),
                                noise_px=self.settings.tracker_noise_px)
        if self._shared is None:  # detector backends are built once per shard
            self._shared = make_tracker(self.settings.tracker, device=str(self.device))
        return self._shared

    def check_inputs(self, rows: pd.DataFrame) -> None:
        """Fail on a missing or incomplete input of any clip before the first one is processed."""
        if self.settings.tracker == "synthetic":
            for row in rows.itertuples(index=False):
                SyntheticTracker.check_input(groundtruth_path(self.data_root, row.actor, ClipKey(row.emotion, int(row.level), row.clip)))

    def reconstruct_clip(self, row, clock: _StageClock | None = None) -> tuple[TrackedClip, Reconstruction]:
        """Decode, track and reconstruct one manifest row (a namedtuple of the clip table)."""
        clock = clock or _StageClock()
        frames = read_frames(row.video)
        clock.lap("decode")
        key = ClipKey(row.emotion, int(row.level), row.clip)
        tracked = track_clip(frames, self._tracker(row.actor, key), self.settings.crop_size, self.settings.margin,
                             self.settings.smooth_window, cd.clip_id(row.actor, row.emotion, row.level, row.clip))
        clock.lap("track")
        recon = self.reconstructor.reconstruct(tracked.crops, tracked.landmarks_crop, tracked.found)
        clock.lap("reconstruct")
        return tracked, recon

    def run_clip(self, row, directory: Path) -> dict:
        """Preprocess one manifest row (a namedtuple of the clip table) into ``directory``."""
        name = cd.clip_id(row.actor, row.emotion, row.level, row.clip)
        clock = _StageClock()
        tracked, recon = self.reconstruct_clip(row, clock)
        outputs = process_clip(tracked, recon, self.layer, self.template, self.settings.eye_points, self.device,
                               self.masker)
        clock.lap("align_render")
        cd.write_clip(directory, outputs.table, outputs.stacks)
        clock.lap("write")
        n = len(tracked.found)
        log.info("%s: %d frames, fit rms %.2f px; frames/s per stage: %s", name, n,
                 float(np.nanmean(recon.per_frame_rms)), clock.rates(n))
        return {"frames": n, "found": int(tracked.found.sum()), "filled": int(tracked.filled.sum()),
                "fit_rms_px": float(np.nanmean(recon.per_frame_rms)), "seconds": clock.total,
                **{f"seconds_{stage}": s for stage, s in clock.laps.items()}}


class _StageClock:
    """Wall time per preprocessing stage, for the log and the shard table (benchmark figures)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = now - self._last
        self._last = now

    @property
    def total(self) -> float:
        return sum(self.laps.values())

    def rates(self, frames: int) -> str:
        return ", ".join(f"{stage} {frames / max(s, 1e-9):.1f}" for stage, s in self.laps.items())


def run_shard(manifest: pd.DataFrame | Path, actor: str, emotion: str, clip_root: Path, out: Path,
              runner: ShardRunner) -> pd.DataFrame:
    """Preprocess every clip of (actor, emotion) not yet finished; write the shard table.

    ``manifest`` is the table or its file (then errors name the file); its columns and every
    clip's inputs are checked before the first clip."""
    manifest = cd.read_table(manifest, MANIFEST_COLUMNS, cd.rerun("manifest"), "the manifest")
    rows = manifest[(manifest.actor == actor) & (manifest.emotion == emotion)]
    if rows.empty:
        raise ValueError(f"the manifest has no clips of actor {actor}, emotion {emotion}: check `actors`/`emotions` in the config")
    runner.check_inputs(rows)
    progress_path = clip_root / PROGRESS
    done = _load_progress(progress_path, runner.fingerprint)
    records = []
    for row in rows.itertuples(index=False):
        directory = clip_dir(clip_root, int(row.level), row.clip)
        ident = f"level_{row.level}/{row.clip}"
        if ident in done and _complete(directory):
            log.info("%s: finished before, skipped", ident)
        else:
            done[ident] = runner.run_clip(row, directory)
            _save_progress(progress_path, runner.fingerprint, done)
        records.append({"actor": actor, "emotion": emotion, "level": int(row.level), "clip": row.clip,
                        "fps": float(row.fps), "directory": str(directory), **done[ident]})
    table = pd.DataFrame(records)
    write_parquet(table, out)
    return table


def fit_actor_identity(manifest: pd.DataFrame | Path, actor: str, count: int, out: Path, runner: ShardRunner) -> dict:
    """Fit the actor's first ``count`` neutral clips, each with an identity of its own
    (``runner`` keeps none), and write their frame-weighted mean to ``out``
    (``scmcl.preprocess.identity``); returns what it wrote."""
    if runner.identity is not None:
        raise ValueError("an actor identity is fitted with a free identity per clip: build the runner without one")
    source = str(manifest) if isinstance(manifest, Path) else "the manifest"
    manifest = cd.read_table(manifest, MANIFEST_COLUMNS, cd.rerun("manifest"), "the manifest")
    rows = identity_clips(manifest, actor, count, source)
    runner.check_inputs(rows)
    shapes, frames, names, rms = [], [], [], []
    for row in rows.itertuples(index=False):
        tracked, recon = runner.reconstruct_clip(row)
        shapes.append(recon.shape)
        frames.append(int(tracked.found.sum()))
        names.append(cd.clip_id(row.actor, row.emotion, row.level, row.clip))
        rms.append(float(np.nanmean(recon.per_frame_rms)))
        log.info("%s: identity fitted on %d frames, fit rms %.2f px", names[-1], frames[-1], rms[-1])
    shape = mean_identity(shapes, frames)
    write_identity(out, actor, shape, names, rms)
    return {"actor": actor, "clips": names, "shape": shape}


def expression_table(shards: list[Path]) -> pd.DataFrame:
    """Per-actor expression sequences (``scmcl.io.clip_data.EXPRESSION_COLUMNS``): the jaw pose
    and the expression of every frame of every clip of the shards."""
    parts = []
    for shard in shards:
        for clip in cd.read_table(shard, SHARD_COLUMNS, cd.rerun("shard")).itertuples(index=False):
            frames = cd.read_clip_frames(clip.directory, cd.rerun("shard", f"{clip.actor}/{clip.emotion}"))
            key = (clip.actor, clip.emotion, clip.level, clip.clip)
            parts.append(cd.expression_rows(key, frames.column("frame"), frames.block("pose")[:, cd.JAW], frames.block("exp")))
    return pd.concat(parts, ignore_index=True)

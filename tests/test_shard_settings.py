"""A preprocessing shard rerun with changed settings redoes every clip with the new settings;
a rerun that changes only the device keeps the finished clips."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scmcl.corpus.layout import ClipKey, groundtruth_path
from scmcl.corpus.manifest import scan_mead
from scmcl.options import schema_default
from scmcl.preprocess.settings import PreprocessSettings
from scmcl.preprocess.shard import PROGRESS, ShardRunner, run_shard
from tests.conftest import ACTOR

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EMOTION = "happy"


def _landmark_noise(directory: str, truth_path) -> float:
    """RMS per axis of the stored tracked landmarks about the clip's true landmarks."""
    frames, truth = pd.read_parquet(f"{directory}/frames.parquet"), pd.read_parquet(truth_path)
    columns = [f"lmk_{axis}_{j:02d}" for axis in "xy" for j in range(68)]
    return float(np.sqrt(np.mean((frames[columns].to_numpy() - truth[columns].to_numpy()) ** 2)))


def test_changed_settings_redo_every_clip(head_files, corpus, tmp_path, monkeypatch):
    manifest = scan_mead(corpus, actors=[ACTOR], emotions=[EMOTION], levels=[3])
    clip_root, out = tmp_path / EMOTION, tmp_path / f"{EMOTION}.parquet"

    def shard(noise_px: float, device: str = "cpu"):
        """Run the shard as the rule does; return the runner, the clips it processed and the table."""
        settings = {**schema_default("preprocess"), "crop_size": 64, "fit_iterations": 20}
        runner = ShardRunner(PreprocessSettings(**{**settings, "tracker_noise_px": noise_px, "device": device}),
                             str(head_files[0]), str(head_files[1]), str(corpus))
        processed, run_clip = [], runner.run_clip
        monkeypatch.setattr(runner, "run_clip", lambda row, directory: processed.append(row.clip) or run_clip(row, directory))
        return runner, processed, run_shard(manifest, ACTOR, EMOTION, clip_root, out, runner)

    def noise(table: pd.DataFrame) -> list[float]:
        return [_landmark_noise(row.directory, groundtruth_path(corpus, ACTOR, ClipKey(EMOTION, row.level, row.clip)))
                for row in table.itertuples(index=False)]

    clips = manifest["clip"].tolist()
    _, processed, table = shard(noise_px=0.5)
    assert processed == clips
    assert all(0.4 < rms < 0.6 for rms in noise(table))

    runner, processed, table = shard(noise_px=2.0)
    assert processed == clips, "clips made with the old settings were reused"
    assert all(1.8 < rms < 2.2 for rms in noise(table)), "the clips do not hold the new settings' results"
    assert json.loads((clip_root / PROGRESS).read_text())["fingerprint"] == runner.fingerprint
    assert pd.read_parquet(out).fit_rms_px.tolist() == table.fit_rms_px.tolist()

    _, processed, again = shard(noise_px=2.0, device="auto")  # the device does not change the results
    assert processed == [] and again.fit_rms_px.tolist() == table.fit_rms_px.tolist()

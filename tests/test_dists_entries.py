"""Offline SCMC distances: entry [i, j] of an emotion's matrix is the distance between neutral
window i and that emotion's window j of windows.parquet, each embedded on its own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from scmcl.corpus.manifest import scan_mead
from scmcl.io.media import read_audio
from scmcl.scmc.dists import actor_distances
from scmcl.scmc.train import JointModels
from tests.conftest import ACTOR, EMOTIONS
from tests.helpers import assert_float32_close

RATE = 16000


def _frame_audio(manifest: pd.DataFrame, windows: pd.DataFrame) -> torch.Tensor:
    """(N,2,1,L): the audio of each window's last two video frames, cut straight from its clip."""
    clips = {(c.emotion, c.level, c.clip): c for c in manifest.itertuples(index=False)}
    waves = {path: read_audio(path, RATE) for path in manifest.audio}
    out = []
    for window in windows.itertuples(index=False):
        clip = clips[(window.emotion, window.level, window.clip)]
        length = round(RATE / clip.fps)
        starts = [round(frame * RATE / clip.fps) for frame in (window.last - 1, window.last)]
        out.append([waves[clip.audio][start:start + length] for start in starts])
    return torch.from_numpy(np.array(out, np.float32))[:, :, None]


def _calibrate(encoder: nn.Module, inputs: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``inputs``."""
    for module in encoder.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: one batch gives its own statistics
    with torch.no_grad():
        encoder.train().encode(inputs)
    encoder.eval()


@pytest.fixture(scope="module")
def distances(corpus, tmp_path_factory):
    """A random metric whose BatchNorm statistics are those of the corpus audio (so embeddings
    spread as a trained one's do), and the files the `scmc_dists` rule writes with it."""
    out = tmp_path_factory.mktemp("dists")
    manifest = scan_mead(corpus, actors=[ACTOR], emotions=EMOTIONS, levels=[3])
    torch.manual_seed(0)
    models = JointModels("expression").eval()
    run = lambda: actor_distances(models, manifest, out, RATE, seq_len=10, hop=2, batch=16, chunk=7,  # noqa: E731
                                  device=torch.device("cpu"))
    run()  # enumerates the windows
    frames = _frame_audio(manifest, pd.read_parquet(out / "windows.parquet"))
    _calibrate(models.audio_encoder, frames.flatten(0, 1))
    run()
    return models, frames, pd.read_parquet(out / "windows.parquet"), out


def test_every_entry_is_the_distance_of_its_two_windows(distances):
    models, frames, stored, out = distances
    assert list(stored.columns) == ["emotion", "level", "clip", "start", "last", "row"]
    with torch.no_grad():  # embed's inputs are (B, 2 sides x 2 frames): here both sides are the window
        embedded = models.embed("audio", torch.cat([frames, frames], dim=1))[:, 0].double()
    assert embedded.norm(dim=1).min() > 0.5, "embeddings spread out, so a wrong index shows"
    neutral = (stored.emotion == "neutral").to_numpy()
    assert stored.row[neutral].tolist() == list(range(neutral.sum()))
    for emotion in EMOTIONS[1:]:
        own = (stored.emotion == emotion).to_numpy()
        assert stored.row[own].tolist() == list(range(own.sum()))
        matrix = np.load(out / f"{emotion}.npy")
        assert matrix.dtype == np.float32 and matrix.shape == (neutral.sum(), own.sum())
        direct = torch.cdist(embedded[torch.tensor(neutral)], embedded[torch.tensor(own)])
        assert direct.min() < 0.5 * direct.max()
        assert_float32_close(torch.from_numpy(matrix), direct)

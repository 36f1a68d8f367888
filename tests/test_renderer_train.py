"""NED's renderer training on per-clip stores: its losses move, and a killed run resumes to
the weights of an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import torch

import scmcl.renderer.train as renderer_train
from scmcl.renderer.checkpoint import load_network, save_network
from scmcl.renderer.networks import DiscriminatorSizes, Generator, RendererSizes
from scmcl.renderer.train import RendererRun, RendererTrainSettings, run_length, train_renderer
from tests.conftest import run_cmd
from tests.helpers import write_renderer_clip

SIZES = RendererSizes(ngf=4, downsample=1, blocks=1, frames=3)
D_SIZES = DiscriminatorSizes(ndf=4, layers=1, scales=1)


def _settings(**overrides) -> RendererTrainSettings:
    values = dict(steps=6, batch_size=2, run_frames=2, grow_every=3, frames_per_update=2, lr=2e-4, beta1=0.5, beta2=0.999,
                  feat_weight=10.0, vgg_weight=10.0, mouth_weight=1.0, eye_weight=1.0, augment=True, seed=3,
                  mixed_precision=False, checkpoint_every=2, sample_every=4)
    return RendererTrainSettings(**(values | overrides))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("renderer_clips")
    for seed, name in enumerate(("001", "002")):
        write_renderer_clip(root / name, seed=seed)
    return [str(root / "001"), str(root / "002")]


def test_run_length_doubles_and_is_capped_by_the_clips() -> None:
    settings = _settings(run_frames=2, grow_every=3)
    assert [run_length(settings, step, shortest=10, frames=3) for step in (0, 2, 3, 6, 9)] == [2, 2, 4, 8, 8]


def _run(clips, folder: Path, init: str | None = None) -> RendererRun:
    return RendererRun(tuple(clips), init, str(folder / "run"), str(folder / "01_net_G.pth"), str(folder / "metrics.tsv"),
                       str(folder / "samples.png"))


def _train(clips, folder: Path, settings=None, init: str | None = None) -> Generator:
    return train_renderer(SIZES, D_SIZES, settings or _settings(), None, "cpu", _run(clips, folder, init))


def test_training_writes_neds_generator_file_and_per_step_metrics(clips, tmp_path: Path) -> None:
    _train(clips, tmp_path)
    loaded = load_network(tmp_path / "01_net_G.pth", Generator(SIZES))  # NED's bare state dict, strictly
    assert isinstance(loaded, Generator)
    metrics = pd.read_csv(tmp_path / "metrics.tsv", sep="\t")
    assert list(metrics.step) == list(range(6))
    assert {"g_image", "vgg", "d_image", "g_mouth", "d_mouth", "g_eyes", "d_eyes"} <= set(metrics.columns)
    assert list(metrics.run_frames) == [2, 2, 2, 4, 4, 4]  # 6-frame clips: 4 generated frames at most
    assert metrics.drop(columns=["step", "seconds", "run_frames"]).notna().all().all()
    grid = iio.imread(tmp_path / "samples.png")  # NMFC | real | generated, four frames of the first clip
    assert grid.shape == (4 * 16, 3 * 16, 3) and grid.dtype == np.uint8
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step_0000004.png", "step_0000006.png"]


def test_training_starts_from_a_given_generator(clips, tmp_path: Path) -> None:
    torch.manual_seed(9)
    start = Generator(SIZES)
    save_network(tmp_path / "init.pth", start)
    trained = _train(clips, tmp_path / "from_init", _settings(steps=1, lr=1e-12), init=str(tmp_path / "init.pth"))
    for key, value in start.state_dict().items():
        if "running" not in key and "num_batches" not in key:
            assert torch.allclose(trained.state_dict()[key], value, atol=1e-6), key


def test_a_killed_training_resumes_to_the_uninterrupted_weights(clips, tmp_path: Path, monkeypatch) -> None:
    straight = _train(clips, tmp_path / "straight")
    original = renderer_train._Step.__call__

    def dying(self, step):
        if step == 5:
            raise RuntimeError("killed")
        return original(self, step)

    monkeypatch.setattr(renderer_train._Step, "__call__", dying)
    with pytest.raises(RuntimeError, match="killed"):
        _train(clips, tmp_path / "killed")
    assert not (tmp_path / "killed" / "01_net_G.pth").exists()
    assert (tmp_path / "killed" / "run" / "checkpoint.pt").exists()
    done = []

    def counting(self, step):
        done.append(step)
        return original(self, step)

    monkeypatch.setattr(renderer_train._Step, "__call__", counting)
    resumed = _train(clips, tmp_path / "killed")
    assert done == [4, 5]  # continued from the step-4 checkpoint, not from the start
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def _size_flags(sizes: RendererSizes = SIZES) -> list[str]:
    return ["--ngf", str(sizes.ngf), "--downsample", str(sizes.downsample), "--blocks", str(sizes.blocks)]


def test_a_released_generator_is_validated_and_copied(tmp_path: Path) -> None:
    torch.manual_seed(2)
    released = tmp_path / "05_net_G.pth"
    save_network(released, Generator(SIZES))
    ok = run_cmd(["scmcl", "renderer", "import", "ned", str(released), *_size_flags(), "--out", str(tmp_path / "ned.pth")])
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ned.pth").read_bytes() == released.read_bytes()
    wrong = run_cmd(["scmcl", "renderer", "import", "ned", str(released), "--out", str(tmp_path / "other.pth")])  # NED's sizes
    assert wrong.returncode != 0 and not (tmp_path / "other.pth").exists()
    assert str(released) in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1

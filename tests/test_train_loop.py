"""The shared training loop resumes exactly where a killed, failed or interrupted run stopped."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from scmcl.train import TrainLoop, TrainSettings, load_published, seed_everything
from scmcl.train.loop import CheckpointError, Contents, WeightFileError

REPO = Path(__file__).resolve().parent.parent
TRUE_WEIGHT = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
TOY = Contents("toy", "model", "regression")


class Boom(RuntimeError):
    pass


def train(
    run_dir: Path,
    steps: int = 12,
    checkpoint_every: int = 3,
    fail_at: int | None = None,
    sleep: float = 0.0,
    fingerprint: str = "v1",
    on_step=None,
) -> TrainLoop:
    """A tiny regression trainer built the way every real trainer is: seed, build, loop."""
    seed_everything(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.3)
    settings = TrainSettings(steps=steps, checkpoint_every=checkpoint_every, seed=0, device="cpu")
    loop = TrainLoop("toy", run_dir, settings, fingerprint, modules={"model": model}, optimizers={"model": optimizer})

    def step_fn(step: int) -> dict[str, float]:
        if step == fail_at:
            raise Boom(f"failure at step {step}")
        x = torch.from_numpy(loop.rng.standard_normal((8, 4), dtype=np.float32))
        y = x @ TRUE_WEIGHT.T + 0.1 * torch.randn(8, 1)  # torch RNG must resume too
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step)
        time.sleep(sleep)
        return {"loss": loss.item(), "lr": 0.3}

    loop.run(step_fn)
    loop.publish(Path(run_dir) / "model.pt", TOY, {"model": model.state_dict()})
    return loop


def metric_steps(run_dir: Path) -> list[int]:
    return pd.read_csv(run_dir / "metrics.tsv", sep="\t")["step"].tolist()


def checkpoint_step(run_dir: Path) -> int:
    path = run_dir / "checkpoint.pt"
    return torch.load(path, weights_only=True)["step"] if path.exists() else 0


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_published(a)["model"], load_published(b)["model"]
    assert all(torch.equal(wa[key], wb[key]) for key in wa)


def test_failed_run_resumes_bit_for_bit(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="scmcl.train.loop")
    train(tmp_path / "reference")

    with pytest.raises(Boom):
        train(tmp_path / "resumed", fail_at=7)
    assert checkpoint_step(tmp_path / "resumed") == 6
    loop = train(tmp_path / "resumed")

    assert loop.start_step == 6
    assert sum("resuming toy from step 6" in message for message in caplog.messages) == 1
    assert_same_weights(tmp_path / "reference" / "model.pt", tmp_path / "resumed" / "model.pt")
    assert metric_steps(tmp_path / "resumed") == list(range(12))
    table = pd.read_csv(tmp_path / "resumed" / "metrics.tsv", sep="\t")
    assert list(table.columns) == ["step", "seconds", "loss", "lr"]
    assert table["loss"].iloc[-1] < table["loss"].iloc[0]


def test_finished_run_does_no_more_steps(tmp_path, caplog):
    train(tmp_path, steps=4)
    caplog.set_level(logging.INFO, logger="scmcl.train.loop")
    calls: list[int] = []
    loop = train(tmp_path, steps=4, on_step=calls.append)
    assert calls == [] and loop.start_step == 4
    assert "resuming toy from step 4" in caplog.text
    assert metric_steps(tmp_path) == [0, 1, 2, 3]


def test_changed_fingerprint_starts_again(tmp_path, caplog):
    train(tmp_path, steps=4, fingerprint="v1")
    caplog.set_level(logging.INFO, logger="scmcl.train.loop")
    loop = train(tmp_path, steps=4, fingerprint="v2")
    assert loop.start_step == 0
    assert "settings changed" in caplog.text and "starting toy at step 0" in caplog.text
    assert metric_steps(tmp_path) == [0, 1, 2, 3]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["fingerprint"] == "v2"


def test_ctrl_c_checkpoints_the_current_step_and_restores_handlers(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="scmcl.train.loop")
    previous = signal.getsignal(signal.SIGINT)

    def press_ctrl_c(step: int) -> None:
        if step == 4:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", checkpoint_every=100, on_step=press_ctrl_c)
    assert signal.getsignal(signal.SIGINT) is previous
    assert "interrupted at step 5, checkpoint saved" in caplog.text
    assert checkpoint_step(tmp_path / "run") == 5 and metric_steps(tmp_path / "run") == [0, 1, 2, 3, 4]

    train(tmp_path / "run")
    train(tmp_path / "reference")
    assert_same_weights(tmp_path / "reference" / "model.pt", tmp_path / "run" / "model.pt")


SCRIPT = """
import logging, sys
sys.path.insert(0, {repo!r})
logging.basicConfig(level=logging.INFO)
from tests.test_train_loop import train
train({run_dir!r}, steps=24, checkpoint_every=2, sleep=0.05)
"""


def start_trainer(tmp_path: Path, run_dir: Path) -> subprocess.Popen:
    script = tmp_path / "trainer.py"
    script.write_text(SCRIPT.format(repo=str(REPO), run_dir=str(run_dir)))
    return subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(process: subprocess.Popen, run_dir: Path, step: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while checkpoint_step(run_dir) < step:
        assert process.poll() is None, "trainer ended before it could be killed"
        assert time.monotonic() < deadline, f"no checkpoint at step {step} within {timeout} s"
        time.sleep(0.02)


def test_sigkill_then_rerun_completes(tmp_path, caplog):
    run_dir = tmp_path / "run"
    process = start_trainer(tmp_path, run_dir)
    wait_for_checkpoint(process, run_dir, 4)
    process.kill()
    process.communicate(timeout=60)
    killed_at = checkpoint_step(run_dir)
    assert 4 <= killed_at < 24

    caplog.set_level(logging.INFO, logger="scmcl.train.loop")
    train(run_dir, steps=24, checkpoint_every=2)  # the rerun, in this process to keep the test fast
    assert f"resuming toy from step {killed_at}" in caplog.text
    assert metric_steps(run_dir) == list(range(24))
    train(tmp_path / "reference", steps=24, checkpoint_every=2)
    assert_same_weights(tmp_path / "reference" / "model.pt", run_dir / "model.pt")


def test_sigterm_checkpoints_and_exits_143(tmp_path, caplog):
    run_dir = tmp_path / "run"
    process = start_trainer(tmp_path, run_dir)
    wait_for_checkpoint(process, run_dir, 4)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 143, stderr
    stopped_at = checkpoint_step(run_dir)
    assert f"interrupted at step {stopped_at}, checkpoint saved" in stderr
    assert metric_steps(run_dir) == list(range(stopped_at))  # the step in flight finished and was kept

    caplog.set_level(logging.INFO, logger="scmcl.train.loop")
    train(run_dir, steps=24, checkpoint_every=2)
    assert f"resuming toy from step {stopped_at}" in caplog.text
    assert metric_steps(run_dir) == list(range(24))


def test_published_payload_loads_safely(tmp_path):
    loop = train(tmp_path / "run", steps=2)
    loop.publish(tmp_path / "out" / "weights.pt", TOY, {"weight": torch.ones(2), "steps": 2, "names": ["a"]})
    payload = load_published(tmp_path / "out" / "weights.pt", TOY)
    assert torch.equal(payload["weight"], torch.ones(2)) and payload["steps"] == 2 and payload["names"] == ["a"]
    assert (payload["stage"], payload["kind"], payload["modality"], payload["fingerprint"]) == ("toy", "model", "regression", "v1")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "weights.pt"]  # no temp file left

    loop.publish_metrics(tmp_path / "out" / "metrics.tsv")
    assert (tmp_path / "out" / "metrics.tsv").read_text() == (tmp_path / "run" / "metrics.tsv").read_text()

    missing = tmp_path / "out" / "absent.pt"
    with pytest.raises(FileNotFoundError, match="absent.pt is missing"):
        load_published(missing)


def test_weight_file_header_is_checked(tmp_path):
    loop = train(tmp_path, steps=2)
    weights = tmp_path / "model.pt"
    assert load_published(weights, Contents("toy", "model", None))["modality"] == "regression"  # any modality
    with pytest.raises(WeightFileError) as err:
        load_published(weights, Contents("toy", "model", "audio"), "check --weights")
    assert str(err.value) == f"{weights} holds the toy regression model, expected the toy audio model: check --weights"
    with pytest.raises(ValueError, match="would overwrite the weight file header"):
        loop.publish(tmp_path / "bad.pt", TOY, {"kind": "other"})

    torch.save({"model": {}}, tmp_path / "bare.pt")  # a torch file, but not one TrainLoop.publish wrote
    with pytest.raises(WeightFileError, match="bare.pt has no scmcl weight header"):
        load_published(tmp_path / "bare.pt")


def damage(path: Path, how: str) -> None:
    """Leave ``path`` empty, cut in half (a kill while copying), or overwritten by text."""
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_text("version https://git-lfs.github.com/spec/v1\n")


@pytest.mark.parametrize("how", ["empty", "truncated", "text"])
def test_damaged_weight_file_is_a_one_line_error(tmp_path, how):
    train(tmp_path, steps=2)
    weights = tmp_path / "model.pt"
    damage(weights, how)
    with pytest.raises(WeightFileError) as err:  # a ValueError: ``scmcl`` prints its one line
        load_published(weights, TOY)
    assert str(err.value) == (f"{weights} is not a readable scmcl weight file (empty/truncated/not a torch file): "
                              "rerun the rule that writes it")


@pytest.mark.parametrize("how", ["empty", "truncated", "text"])
def test_damaged_checkpoint_is_a_one_line_error_and_kept(tmp_path, how):
    train(tmp_path, steps=4, checkpoint_every=2)
    checkpoint = tmp_path / "checkpoint.pt"
    damage(checkpoint, how)
    damaged = checkpoint.read_bytes()
    with pytest.raises(CheckpointError) as err:  # a RuntimeError: ``scmcl`` prints its one line
        train(tmp_path, steps=8, checkpoint_every=2)
    assert str(err.value) == (f"{checkpoint} is not a readable checkpoint (empty/truncated/not a torch file): "
                              "delete it to restart toy from step 0")
    assert checkpoint.read_bytes() == damaged and metric_steps(tmp_path) == [0, 1, 2, 3]  # nothing lost or redone


class Generator(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def linear_decay(steps: int):
    """NED's schedule: constant for the first half, then linearly down towards zero."""
    half = steps // 2
    return lambda step: 1.0 - max(0, step - half) / (half + 1)


def train_gan(run_dir: Path, steps: int = 12, checkpoint_every: int = 3, fail_at: int | None = None,
              on_step=None) -> dict[str, dict]:
    """A tiny GAN fitting a shifted Gaussian: G and D, two Adam optimizers, a linear LR decay on each."""
    seed_everything(0)
    generator = Generator()
    discriminator = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.LeakyReLU(0.2), torch.nn.Linear(8, 1))
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, linear_decay(steps))
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, linear_decay(steps))
    settings = TrainSettings(steps=steps, checkpoint_every=checkpoint_every, seed=0, device="cpu")
    loop = TrainLoop("gan", run_dir, settings, "gan-v1", modules={"generator": generator, "discriminator": discriminator},
                     optimizers={"generator": opt_g, "discriminator": opt_d},
                     schedulers={"generator": sched_g, "discriminator": sched_d})
    bce = torch.nn.BCEWithLogitsLoss()

    def step_fn(step: int) -> dict[str, float]:
        if step == fail_at:
            raise Boom(f"failure at step {step}")
        real = torch.from_numpy(loop.rng.standard_normal((16, 2), dtype=np.float32)) + 3.0
        fake = generator(torch.randn(16, 2))
        loss_d = bce(discriminator(real), torch.ones(16, 1)) + bce(discriminator(fake.detach()), torch.zeros(16, 1))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = bce(discriminator(fake), torch.ones(16, 1))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        sched_g.step()
        sched_d.step()
        if on_step is not None:
            on_step(step)
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "lr_g": sched_g.get_last_lr()[0]}

    loop.run(step_fn)
    return {"modules": {"generator": generator.state_dict(), "discriminator": discriminator.state_dict()},
            "optimizers": {"generator": opt_g.state_dict(), "discriminator": opt_d.state_dict()},
            "last_lr": {"generator": torch.tensor(sched_g.get_last_lr(), dtype=torch.float64),
                        "discriminator": torch.tensor(sched_d.get_last_lr(), dtype=torch.float64)}}


def assert_identical(a, b) -> None:
    """Nested state dicts equal bit for bit: tensors by ``torch.equal``, everything else by ``==``."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_identical(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_identical(x, y)
    else:
        assert a == b


def press_ctrl_c_at(stop_step: int):
    def on_step(step: int) -> None:
        if step == stop_step:
            signal.raise_signal(signal.SIGINT)
    return on_step


@pytest.mark.parametrize("interruption", ["failure", "ctrl_c"])
def test_gan_with_two_optimizers_and_schedulers_resumes_bit_for_bit(tmp_path, caplog, interruption):
    caplog.set_level(logging.INFO, logger="scmcl.train.loop")
    reference = train_gan(tmp_path / "reference")
    assert reference["last_lr"]["generator"].item() < 2e-3  # the decay ran

    if interruption == "failure":  # halfway, after the checkpoint at step 6
        with pytest.raises(Boom):
            train_gan(tmp_path / "resumed", fail_at=7)
    else:  # during step 5, which finishes and is checkpointed
        with pytest.raises(KeyboardInterrupt):
            train_gan(tmp_path / "resumed", checkpoint_every=100, on_step=press_ctrl_c_at(5))
    assert checkpoint_step(tmp_path / "resumed") == 6
    state = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert sorted(state["optimizers"]) == sorted(state["schedulers"]) == ["discriminator", "generator"]

    resumed = train_gan(tmp_path / "resumed")
    assert "resuming gan from step 6" in caplog.text
    assert_identical(reference, resumed)
    assert metric_steps(tmp_path / "resumed") == list(range(12))
    lr = pd.read_csv(tmp_path / "resumed" / "metrics.tsv", sep="\t")["lr_g"]
    assert lr.equals(pd.read_csv(tmp_path / "reference" / "metrics.tsv", sep="\t")["lr_g"])


def test_checkpoint_of_another_trainer_layout_starts_again(tmp_path, caplog):
    train_gan(tmp_path, steps=4)
    caplog.set_level(logging.INFO, logger="scmcl.train.loop")
    seed_everything(0)
    generator = Generator()
    optimizer = torch.optim.Adam(generator.parameters())
    settings = TrainSettings(steps=4, checkpoint_every=2, seed=0, device="cpu")
    loop = TrainLoop("gan", tmp_path, settings, "gan-v1", modules={"generator": generator}, optimizers={"generator": optimizer})
    loop.run(lambda step: {"loss": 0.0})
    assert loop.start_step == 0 and "settings changed" in caplog.text


def test_checkpoint_of_an_older_layout_starts_again(tmp_path, caplog):
    train(tmp_path, steps=4)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["optimizer"] = state.pop("optimizers")["model"]  # one optimizer, as before GAN training
    del state["schedulers"]
    torch.save(state, tmp_path / "checkpoint.pt")
    caplog.set_level(logging.INFO, logger="scmcl.train.loop")
    assert train(tmp_path, steps=4).start_step == 0
    assert "settings changed" in caplog.text

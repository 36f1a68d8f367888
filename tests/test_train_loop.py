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

REPO = Path(__file__).resolve().parent.parent
TRUE_WEIGHT = torch.tensor([[1.0, -2.0, 0.5, 3.0]])


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
    settings = TrainSettings(steps=steps, checkpoint_every=checkpoint_every, seed=0)
    loop = TrainLoop("toy", run_dir, settings, {"model": model}, optimizer, fingerprint)

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
    loop.publish(Path(run_dir) / "model.pt", {"model": model.state_dict()})
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
    loop.publish(tmp_path / "out" / "weights.pt", {"weight": torch.ones(2), "steps": 2, "names": ["a"]})
    payload = load_published(tmp_path / "out" / "weights.pt")
    assert torch.equal(payload["weight"], torch.ones(2)) and payload["steps"] == 2 and payload["names"] == ["a"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "weights.pt"]  # no temp file left

    loop.publish_metrics(tmp_path / "out" / "metrics.tsv")
    assert (tmp_path / "out" / "metrics.tsv").read_text() == (tmp_path / "run" / "metrics.tsv").read_text()

    missing = tmp_path / "out" / "absent.pt"
    with pytest.raises(FileNotFoundError, match="absent.pt is missing"):
        load_published(missing)

"""A resumable training loop: a killed, timed-out or interrupted job continues where it stopped.

The run directory (``checkpoint.pt``, ``metrics.tsv``) is deliberately not a Snakemake output,
because Snakemake deletes the outputs of failed jobs; only what ``publish`` writes is. Every
published file carries a header saying what it holds, which ``load_published`` checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, TextIO

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from scmcl.device import resolve_device
from scmcl.io.atomic import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.tsv"
#: Keys every published weight file starts with (``Contents`` plus the settings fingerprint).
HEADER = ("stage", "kind", "modality", "fingerprint")


class WeightFileError(ValueError):
    """A published weight file that cannot be read or holds something else than expected."""


class CheckpointError(RuntimeError):
    """A ``checkpoint.pt`` that cannot be read; never deleted for the user, as it may hold a long run."""


@dataclass(frozen=True)
class TrainSettings:
    """What a training rule reads from the config; the caller folds it into the fingerprint.
    No defaults: the config schema is the one place a setting's default lives."""

    steps: int
    checkpoint_every: int
    seed: int
    device: str


@dataclass(frozen=True)
class Contents:
    """What a published weight file holds, e.g. the scmc audio encoder; in an expectation,
    ``modality=None`` accepts any modality."""

    stage: str
    kind: str
    modality: str | None

    def describe(self) -> str:
        return "the " + " ".join(word for word in (self.stage, self.modality, self.kind) if word)

    def accepts(self, held: Contents) -> bool:
        return (self.stage, self.kind) == (held.stage, held.kind) and self.modality in (None, held.modality)


def table_digest(frame: pd.DataFrame) -> bytes:
    """Column names, dtypes and every row's values: a table's content, not how its file stores
    it, for the fingerprints of trainers that read tables."""
    columns = json.dumps([[str(name), str(dtype)] for name, dtype in frame.dtypes.items()]).encode()
    return hashlib.sha256(columns + pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).digest()


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, torch (and CUDA) so a fresh run is reproducible; numpy gets a generator
    of its own instead of global state, so its position can be checkpointed."""
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return np.random.default_rng(seed)


class UnreadableTorchFile(ValueError):
    """The bytes of a file do not deserialise as a weights-only torch file; the message is the
    name of torch's exception, for the caller's own one-line error."""


def read_torch(path: Path, device: str | torch.device) -> object:
    """``torch.load`` without pickled code, for every weight file the package reads. Opening it
    first keeps real I/O errors (permissions) apart from damage, for which torch raises EOFError,
    KeyError, OSError, RuntimeError or UnpicklingError depending on the bytes: all of those
    become ``UnreadableTorchFile``."""
    with path.open("rb") as file:
        try:
            return torch.load(file, map_location=device, weights_only=True)
        except Exception as err:  # noqa: BLE001 - every way a damaged file fails to deserialise
            raise UnreadableTorchFile(type(err).__name__) from err


def publish_weights(path: str | Path, contents: Contents, fingerprint: str, payload: dict) -> None:
    """``torch.save`` a Snakemake output atomically, so a kill never leaves a half-written file,
    headed by what it holds and the fingerprint of what made it; keep the payload to tensors and
    plain Python values so ``load_published`` can load it safely."""
    if clash := sorted(set(HEADER) & payload.keys()):
        raise ValueError(f"payload keys {clash} would overwrite the weight file header")
    with atomic_path(path) as tmp:
        torch.save({**asdict(contents), "fingerprint": fingerprint, **payload}, tmp)


def publish_model(path: str | Path, contents: Contents, model: torch.nn.Module, shape: dict, report: dict) -> None:
    """A trained model as a published weight file: its weights, ``shape`` (its constructor's
    keyword arguments, so ``load_model`` rebuilds it) and the ``report`` it was trained with,
    fingerprinted by shape and weights."""
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode())
    for value in state.values():
        digest.update(value.numpy().tobytes())
    publish_weights(path, contents, digest.hexdigest(), {**shape, "state_dict": state, "report": report})


def load_model(path: str | Path, contents: Contents, build: Callable[..., torch.nn.Module], shape_keys: tuple[str, ...],
               what: str, hint: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """The model (eval mode, on ``device``) and report of ``publish_model``'s file, rebuilt by
    ``build(**shape)``; a file of anything else is one ``WeightFileError`` naming it."""
    payload = load_published(path, contents, hint)
    try:
        model = build(**{key: payload[key] for key in shape_keys})
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, RuntimeError, TypeError) as err:
        raise WeightFileError(f"{Path(path)} is {what} file that does not load "
                              f"({type(err).__name__}: {str(err).splitlines()[0]})") from err
    return model.to(resolve_device(device)).eval(), payload["report"]


def load_published(path: str | Path, expect: Contents | None = None, hint: str = "",
                   device: str | torch.device = "cpu") -> dict:
    """Load what ``TrainLoop.publish`` wrote, checking its header against ``expect``; each fault
    is a one-line ``WeightFileError`` naming the file (``hint`` says which flag to check)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the training rule that writes it")
    try:
        payload = read_torch(path, device)
    except UnreadableTorchFile:
        raise WeightFileError(f"{path} is not a readable scmcl weight file (empty/truncated/not a torch file): "
                              "rerun the rule that writes it") from None
    if not isinstance(payload, dict) or not set(HEADER) <= payload.keys():
        raise WeightFileError(f"{path} has no scmcl weight header (stage, kind, modality, fingerprint): "
                              "rerun the rule that writes it")
    held = Contents(payload["stage"], payload["kind"], payload["modality"])
    if expect is not None and not expect.accepts(held):
        raise WeightFileError(f"{path} holds {held.describe()}, expected {expect.describe()}" + (f": {hint}" if hint else ""))
    return payload


class _MetricsLog:
    """``metrics.tsv``, one row per completed step, flushed at once so a running job can be plotted."""

    def __init__(self, path: Path, start: int) -> None:
        self.keys = self._keep_before(path, start)
        self.file: TextIO = path.open("a")

    @staticmethod
    def _keep_before(path: Path, start: int) -> list[str] | None:
        """Drop rows from ``start`` on (written after the checkpoint, about to be redone) and any
        line cut short by a kill, so each step appears exactly once; return the metric keys."""
        if start == 0 or not path.exists():
            path.unlink(missing_ok=True)
            return None
        header, *rows = path.read_text().splitlines()
        columns = header.split("\t")
        kept = [row for row in rows if len(fields := row.split("\t")) == len(columns) and int(fields[0]) < start]
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join([header, *kept]) + "\n")
        return columns[2:]

    def write(self, step: int, seconds: float, metrics: dict[str, float]) -> None:
        if self.keys is None:
            self.keys = list(metrics)
            self.file.write("\t".join(["step", "seconds", *self.keys]) + "\n")
        values = [f"{float(metrics[key]):.7g}" for key in self.keys]
        self.file.write("\t".join([str(step), f"{seconds:.4f}", *values]) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


@contextmanager
def _stop_requests() -> Iterator[list[int]]:
    """Turn SIGTERM (SLURM time limit) and SIGINT (Ctrl-C) into a request honoured between steps,
    so the step in flight finishes and is checkpointed; previous handlers come back on exit."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signal.signal only works there
        yield received
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for sig in previous:
            signal.signal(sig, lambda signum, frame: received.append(signum))
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


class TrainLoop:
    """Runs ``step_fn`` for each step, checkpointing modules, optimizers, schedulers and every RNG
    so a rerun with the same fingerprint continues bit-for-bit where the last checkpoint left off.

    The caller builds the named ``modules`` (already on ``device``), ``optimizers`` and
    ``schedulers`` (e.g. a GAN's generator and discriminator) identically each run; on resume
    their state is overwritten from the checkpoint. ``step_fn`` steps the optimizers and
    schedulers itself, draws its batches from ``rng`` and any other randomness from torch,
    whose states are checkpointed too.
    """

    def __init__(
        self,
        name: str,
        run_dir: str | Path,
        settings: TrainSettings,
        fingerprint: str,
        *,
        modules: dict[str, torch.nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] | None = None,
    ) -> None:
        self.name = name
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.fingerprint = fingerprint
        self.modules = modules
        self.optimizers = optimizers
        self.schedulers = schedulers or {}
        self.device = resolve_device(settings.device)
        self.rng = np.random.default_rng(settings.seed)
        self.start_step = 0

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS

    def run(self, step_fn: Callable[[int], dict[str, float]]) -> None:
        """Run the remaining steps; on SIGTERM/SIGINT checkpoint after the current step and raise
        ``SystemExit(143)`` / ``KeyboardInterrupt``. An exception from ``step_fn`` writes nothing,
        as the step may have left the modules half-updated: the rerun redoes it from the checkpoint."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.start_step = self._restore()
        with _stop_requests() as stop:
            next_step = self._run_steps(step_fn, stop)
        if stop:
            log.warning("%s: interrupted at step %d, checkpoint saved", self.name, next_step)
            if stop[0] == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signal.SIGTERM)

    def _run_steps(self, step_fn: Callable[[int], dict[str, float]], stop: list[int]) -> int:
        """Steps from ``start_step`` until done or a stop is requested; return the next step to run."""
        steps = self.settings.steps
        log_every = max(1, steps // 20)
        next_step = self.start_step
        for module in self.modules.values():
            module.train()
        metrics_log = _MetricsLog(self.metrics_path, self.start_step)
        interval = 0.1 if sys.stderr.isatty() else 10  # keep cluster log files small
        bar = tqdm(total=steps, initial=self.start_step, desc=self.name, file=sys.stderr, mininterval=interval)
        try:
            for step in range(self.start_step, steps):
                started = time.perf_counter()
                metrics = step_fn(step)
                metrics_log.write(step, time.perf_counter() - started, metrics)
                next_step = step + 1
                shown = {key: f"{float(value):.4g}" for key, value in metrics.items()}
                bar.set_postfix(shown, refresh=False)
                bar.update()
                if next_step % log_every == 0 or next_step == steps:
                    log.info("%s step %d/%d %s", self.name, next_step, steps, " ".join(f"{k}={v}" for k, v in shown.items()))
                if next_step % self.settings.checkpoint_every == 0 or next_step == steps or stop:
                    self._save_checkpoint(next_step)
                if stop:
                    break
        finally:
            bar.close()
            metrics_log.close()
        return next_step

    def publish(self, path: str | Path, contents: Contents, payload: dict) -> None:
        """``publish_weights`` with the fingerprint of the settings that trained it."""
        publish_weights(path, contents, self.fingerprint, payload)

    def publish_metrics(self, path: str | Path) -> None:
        """Copy the run's metrics table to a Snakemake output, atomically."""
        with atomic_path(path) as tmp:
            shutil.copyfile(self.metrics_path, tmp)

    def _parts(self) -> dict[str, dict]:
        """What the checkpoint holds a state dict of, by name."""
        return {"modules": self.modules, "optimizers": self.optimizers, "schedulers": self.schedulers}

    def _read_checkpoint(self) -> dict:
        """The checkpoint's state, or a one-line ``CheckpointError`` when it is damaged."""
        try:
            state = read_torch(self.checkpoint_path, "cpu")
        except UnreadableTorchFile:
            state = None
        if not isinstance(state, dict) or not {"fingerprint", "step"} <= state.keys():
            raise CheckpointError(f"{self.checkpoint_path} is not a readable checkpoint (empty/truncated/not a torch file): "
                                  f"delete it to restart {self.name} from step 0")
        return state

    def _fits(self, state: dict) -> bool:
        """Written with these settings by a trainer with the same named parts (a checkpoint of an
        older layout has other keys), and not past the last step."""
        return (state["fingerprint"] == self.fingerprint and state["step"] <= self.settings.steps
                and all(sorted(state.get(part, ())) == sorted(objects) for part, objects in self._parts().items()))

    def _restore(self) -> int:
        """Load the checkpoint when it fits this trainer; otherwise seed a fresh run."""
        if self.checkpoint_path.exists():
            state = self._read_checkpoint()
            if self._fits(state):
                for part, objects in self._parts().items():
                    for name, obj in objects.items():
                        obj.load_state_dict(state[part][name])
                self.rng.bit_generator.state = state["numpy_rng"]
                random.setstate(state["python_rng"])
                torch.set_rng_state(state["torch_rng"])
                if state["cuda_rng"] is not None and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(state["cuda_rng"])
                log.info("resuming %s from step %d", self.name, state["step"])
                return state["step"]
            log.warning(
                "%s: settings changed since %s was written (fingerprint, fewer steps, or other modules, optimizers "
                "or schedulers), starting again from step 0",
                self.name,
                self.checkpoint_path,
            )
        # Reseed in place: a step_fn may already hold a reference to ``self.rng``.
        self.rng.bit_generator.state = seed_everything(self.settings.seed).bit_generator.state
        log.info("starting %s at step 0", self.name)
        return 0

    def _save_checkpoint(self, next_step: int) -> None:
        state = {
            "fingerprint": self.fingerprint,
            "step": next_step,
            **{part: {name: obj.state_dict() for name, obj in objects.items()} for part, objects in self._parts().items()},
            "numpy_rng": self.rng.bit_generator.state,  # PCG64: plain ints and str, weights_only-safe
            "python_rng": random.getstate(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

"""Checks of a weight file's state dict against the network it should load into, phrased for
one-line errors: which keys are missing or unexpected, which tensors have the wrong shape.
Shared by every loader of released checkpoints (manipulator, renderer)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from scmcl.train.loop import UnreadableTorchFile, read_torch

_SHOWN = 3
_DATA_PARALLEL = "module."


def read_weights(path: Path, what: str, error: type[ValueError]) -> object:
    """The content of a weights-only torch file on the CPU; a missing file is FileNotFoundError
    naming ``what``, an unreadable one ``error`` saying what it may be."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        return read_torch(path, "cpu")
    except UnreadableTorchFile as err:
        raise error(f"{path} cannot be read as a weights-only torch file (empty, truncated, not written by torch.save, "
                    f"or holding pickled objects; {err})") from err


def unwrap_data_parallel(state: Mapping) -> dict:
    """Drop the ``module.`` prefix of a state dict saved from an ``nn.DataParallel`` wrapper
    (``net.state_dict()`` of the wrapper instead of ``net.module.state_dict()``)."""
    if state and all(str(key).startswith(_DATA_PARALLEL) for key in state):
        return {key[len(_DATA_PARALLEL):]: value for key, value in state.items()}
    return dict(state)


def _some(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > _SHOWN else ''})"


def _shape(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


def layout_problems(name: str, expected: Mapping[str, torch.Tensor], state: Mapping) -> list[str]:
    """``["<name> has missing N (k1, k2, ...) and unexpected M (...) parameters"]``, or nothing."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    return [f"{name} has {' and '.join(problems)} parameters"] if problems else []


def shape_problems(name: str, expected: Mapping[str, torch.Tensor], state: Mapping) -> list[str]:
    """One ``"<name>.<key> is (file shape) in the file but (shape) here"`` per misshaped tensor."""
    return [f"{name}.{key} is {_shape(state[key])} in the file but {tuple(value.shape)} here"
            for key, value in expected.items()
            if key in state and not (isinstance(state[key], torch.Tensor) and state[key].shape == value.shape)]


def read_strict_state(path: Path, expected: Mapping[str, torch.Tensor], what: str, error: type[ValueError], *,
                      under: str | None = None, drop: str | None = None, may_lack: tuple[str, ...] = ()) -> dict:
    """A user's weight file as a state dict that fits ``expected`` key for key and shape for
    shape, ready for ``load_state_dict(strict=True)``; any misfit is one ``error`` naming the
    file and ``what`` it should be. ``under``: the container key the state dict sits under
    (``{'state_dict': ...}``); a ``module.`` prefix (``nn.DataParallel``) is dropped; ``drop``:
    a key prefix the file carries that is not used here (VGG's classifier); ``may_lack``: key
    suffixes the official loaders let a file lack (BatchNorm's ``num_batches_tracked`` in old
    releases), taken from ``expected`` then."""
    state = read_weights(path, what, error)
    if under is not None:
        if not isinstance(state, dict) or under not in state:
            raise error(f"{path} has no '{under}' entry: it is not {what}")
        state = state[under]
    if not isinstance(state, dict):
        raise error(f"{path} holds a {type(state).__name__}, not {what}")
    state = unwrap_data_parallel(state)
    if drop:
        state = {key: value for key, value in state.items() if not str(key).startswith(drop)}
    for key, value in expected.items():
        if key not in state and key.endswith(may_lack):
            state[key] = value
    problems = layout_problems(what, expected, state) + shape_problems(what, expected, state)
    if problems:
        raise error(f"{path} is not {what}: {problems[0]}")
    return state

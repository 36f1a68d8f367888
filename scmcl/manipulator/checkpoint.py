"""NED's and SCMCL's manipulator weight files, ``XX_nets.pth`` / ``XX_nets_finetuned.pth``.

The file is ``torch.save({'generator': sd, 'mapping_network': sd, 'style_encoder': sd,
'discriminator': sd})`` of plain state dicts (NED's ``CheckpointIO``). Files are read
weights-only and loaded strictly; a file that does not fit is one ``ManipulatorWeightsError``
naming it and what is wrong, checked before any network is touched.

Our files add two entries, which NED's loader, reading the four networks by name, ignores:
``generator_residual`` (a bool; a file without it is NED's absolute-output generator) and
``generator_padding``, the frame columns the generator passes through (the zero padding of the
training data's face model, ``networks.padded_columns``; a file without it has none).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

import torch

from scmcl.io.atomic import atomic_path
from scmcl.io.state_dicts import layout_problems, read_weights, shape_problems, unwrap_data_parallel
from scmcl.manipulator.networks import FRAME_SIZE, NETWORK_KEYS, ManipulatorNets

log = logging.getLogger(__name__)

#: Our entry beside NED's four: whether the generator's output is a residual (absent: NED's absolute output).
RESIDUAL_KEY = "generator_residual"
#: Our entry for the columns the generator passes through (absent: none, as NED's).
PADDING_KEY = "generator_padding"


class ManipulatorWeightsError(ValueError):
    """A manipulator weight file that cannot be read or does not fit the configured networks."""


def save_networks(path: str | os.PathLike, nets: ManipulatorNets) -> None:
    """Write the official container atomically, so NED's own code can load what we train."""
    with atomic_path(path) as tmp:
        torch.save({name: net.state_dict() for name, net in nets.networks().items()}
                   | {RESIDUAL_KEY: nets.generator.residual,
                      PADDING_KEY: nets.generator.padding.nonzero().flatten().tolist()}, tmp)


def _read(path: Path) -> dict:
    payload = read_weights(path, "manipulator weights", ManipulatorWeightsError)
    if not isinstance(payload, Mapping):
        raise ManipulatorWeightsError(f"{path} holds a {type(payload).__name__}, not the manipulator's dict of "
                                      f"state dicts ({', '.join(NETWORK_KEYS)})")
    missing = [name for name in NETWORK_KEYS if name not in payload]
    if missing:
        raise ManipulatorWeightsError(f"{path} is not a manipulator XX_nets.pth: it lacks {', '.join(missing)} "
                                      f"(it has {', '.join(sorted(map(str, payload))[:8]) or 'nothing'})")
    for name in NETWORK_KEYS:
        entry = payload[name]
        if not isinstance(entry, Mapping):
            raise ManipulatorWeightsError(f"{path}: {name} is a {type(entry).__name__}, not a state dict")
        if {"state", "param_groups"} <= entry.keys():
            raise ManipulatorWeightsError(f"{path} holds optimizer states (an XX_optims.pth), not network weights")
    if not isinstance(payload.get(RESIDUAL_KEY, False), bool):
        raise ManipulatorWeightsError(f"{path}: {RESIDUAL_KEY} is {payload[RESIDUAL_KEY]!r}, not true or false")
    padding = payload.get(PADDING_KEY, [])
    if not (isinstance(padding, list) and all(isinstance(i, int) and 0 <= i < FRAME_SIZE for i in padding)):
        raise ManipulatorWeightsError(f"{path}: {PADDING_KEY} is {padding!r}, not a list of frame columns 0..{FRAME_SIZE - 1}")
    return payload


def load_networks(path: str | os.PathLike, nets: ManipulatorNets) -> ManipulatorNets:
    """Load an official-layout file (or a DataParallel-prefixed one) into ``nets`` with
    strict=True; every network is checked first, so a bad file leaves ``nets`` untouched. The
    generator takes the file's output mode, whatever ``nets`` was built with: the weights were
    trained for it."""
    path = Path(path)
    payload = _read(path)
    states = {name: unwrap_data_parallel(payload[name]) for name in NETWORK_KEYS}
    expected = {name: net.state_dict() for name, net in nets.networks().items()}
    layout = [problem for name in NETWORK_KEYS for problem in layout_problems(name, expected[name], states[name])]
    if layout:
        raise ManipulatorWeightsError(f"{path} does not have NED's manipulator layout: {'; '.join(layout)}; the number "
                                      "of emotions, manipulator.networks.lstm_layers and the lengths of its width lists "
                                      "must match the checkpoint's")
    shapes = [problem for name in NETWORK_KEYS for problem in shape_problems(name, expected[name], states[name])]
    if shapes:
        more = f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else ""
        raise ManipulatorWeightsError(f"{path} does not fit the configured networks: {shapes[0]}{more}; the "
                                      "manipulator.networks sizes and the number of emotions must match the checkpoint's")
    for name, net in nets.networks().items():
        net.load_state_dict(states[name], strict=True)
    residual = payload.get(RESIDUAL_KEY, False)
    if residual != nets.generator.residual:
        log.info("%s: its generator is %s, as it was trained; manipulator.networks.generator_residual applies to "
                 "training from scratch only", path, "residual" if residual else "absolute (NED's)")
    nets.generator.residual = residual
    padding = torch.zeros(FRAME_SIZE, dtype=torch.bool)
    padding[payload.get(PADDING_KEY, [])] = True
    nets.generator.set_padding(padding)
    return nets

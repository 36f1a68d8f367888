"""NED's and SCMCL's renderer generator files: ``XX_net_G.pth`` (NED, per actor or the
meta-renderer) and ``export/01_net_G.pth`` (SCMCL), a bare state dict saved from the CPU.
Read weights-only and loaded strictly; a file that does not fit is one
``RendererWeightsError`` naming it, checked before the generator is touched."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

from scmcl.io.atomic import atomic_path
from scmcl.io.state_dicts import layout_problems, read_weights, shape_problems, unwrap_data_parallel
from scmcl.renderer.networks import Generator

#: SCMCL's ``%02d_nets.pth`` holds the renderer as ``rendererG`` with ``netG.``-prefixed keys.
_SCMCL_BUNDLE = "rendererG"


class RendererWeightsError(ValueError):
    """A renderer weight file that cannot be read or does not fit the configured generator."""


def save_generator(path: str | os.PathLike, generator: Generator) -> None:
    """Write the bare state dict atomically, as NED's ``save_network`` does."""
    with atomic_path(path) as tmp:
        torch.save({key: value.cpu() for key, value in generator.state_dict().items()}, tmp)


def _read(path: Path) -> Mapping:
    state = read_weights(path, "renderer weights", RendererWeightsError)
    if not isinstance(state, Mapping):
        raise RendererWeightsError(f"{path} holds a {type(state).__name__}, not the generator's state dict")
    if _SCMCL_BUNDLE in state:
        raise RendererWeightsError(f"{path} is SCMCL's bundle of every network (%02d_nets.pth); use the generator "
                                   "it exports, export/01_net_G.pth")
    return state


def load_generator(path: str | os.PathLike, generator: Generator) -> Generator:
    """Load a released (or our own) generator file into ``generator`` with strict=True."""
    path = Path(path)
    state = unwrap_data_parallel(_read(path))
    expected = generator.state_dict()
    layout = layout_problems("the generator", expected, state)
    if layout:
        raise RendererWeightsError(f"{path} does not have NED's renderer generator layout: {layout[0]}; the number of "
                                   "ResNet blocks, downsamplings and frames must match the checkpoint's")
    shapes = shape_problems("generator", expected, state)
    if shapes:
        more = f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else ""
        raise RendererWeightsError(f"{path} does not fit the configured generator: {shapes[0]}{more}; its ngf and "
                                   "frames must match the checkpoint's")
    generator.load_state_dict(state, strict=True)
    return generator

"""NED's and SCMCL's renderer files: ``XX_net_G.pth`` (NED, per actor or the meta-renderer),
``export/01_net_G.pth`` (SCMCL) and the discriminators' ``XX_net_D.pth`` / ``_Dm`` / ``_De``,
each a bare state dict saved from the CPU. Read weights-only and loaded strictly; a file that
does not fit is one ``RendererWeightsError`` naming it, checked before the network is touched."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

from scmcl.io.atomic import atomic_path
from scmcl.io.state_dicts import layout_problems, read_weights, shape_problems, unwrap_data_parallel
from scmcl.renderer.networks import Generator, MultiscaleDiscriminator

#: What must match a file, per kind of network: (name, layout hint, shape hint).
_HINTS = {Generator: ("generator", "the number of ResNet blocks, downsamplings and frames", "its ngf and frames"),
          MultiscaleDiscriminator: ("discriminator", "its number of layers and scales", "its ndf")}
#: SCMCL's ``%02d_nets.pth`` holds the renderer as ``rendererG`` with ``netG.``-prefixed keys.
_SCMCL_BUNDLE = "rendererG"


class RendererWeightsError(ValueError):
    """A renderer weight file that cannot be read or does not fit the configured generator."""


def save_network(path: str | os.PathLike, network: Generator | MultiscaleDiscriminator) -> None:
    """Write the bare state dict atomically, as NED's ``save_network`` does."""
    with atomic_path(path) as tmp:
        torch.save({key: value.cpu() for key, value in network.state_dict().items()}, tmp)


def _read(path: Path) -> Mapping:
    state = read_weights(path, "renderer weights", RendererWeightsError)
    if not isinstance(state, Mapping):
        raise RendererWeightsError(f"{path} holds a {type(state).__name__}, not a network's state dict")
    if _SCMCL_BUNDLE in state:
        raise RendererWeightsError(f"{path} is SCMCL's bundle of every network (%02d_nets.pth); use the generator "
                                   "it exports, export/01_net_G.pth")
    return state


def load_network(path: str | os.PathLike, network: Generator | MultiscaleDiscriminator):
    """Load a released (or our own) file into ``network`` with strict=True; returns it."""
    path = Path(path)
    name, layout_hint, shape_hint = _HINTS[type(network)]
    state = unwrap_data_parallel(_read(path))
    expected = network.state_dict()
    layout = layout_problems(f"the {name}", expected, state)
    if layout:
        raise RendererWeightsError(f"{path} does not have NED's renderer {name} layout: {layout[0]}; {layout_hint} "
                                   "must match the checkpoint's")
    shapes = shape_problems(name, expected, state)
    if shapes:
        more = f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else ""
        raise RendererWeightsError(f"{path} does not fit the configured {name}: {shapes[0]}{more}; {shape_hint} "
                                   "must match the checkpoint's")
    network.load_state_dict(state, strict=True)
    return network

"""Expression manipulator: NED's networks and their released weight files (method.md §4)."""

from __future__ import annotations

from scmcl.manipulator.checkpoint import (
                                        ManipulatorWeightsError,
                                        load_networks,
                                        save_networks,
)
from scmcl.manipulator.networks import (
                                        FRAME_SIZE,
                                        NETWORK_KEYS,
                                        Discriminator,
                                        Generator,
                                        ManipulatorNets,
                                        MappingNetwork,
                                        NetworkSizes,
                                        StyleEncoder,
)

__all__ = ["FRAME_SIZE", "NETWORK_KEYS", "Discriminator", "Generator", "ManipulatorNets", "ManipulatorWeightsError",
           "MappingNetwork", "NetworkSizes", "StyleEncoder", "load_networks", "save_networks"]

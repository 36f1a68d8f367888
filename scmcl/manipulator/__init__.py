"""Expression manipulator (method.md §4): NED's networks and their released weight files, the
training windows and pseudo-targets, both trainers, the edits and the classifier that judges them."""

from __future__ import annotations

from scmcl.manipulator.checkpoint import ManipulatorWeightsError, load_networks, save_networks
from scmcl.manipulator.edit import (apply_intensity, edit_sequence, edit_table, geometric_median, intensity_curve,
                                    label_style, overlap_add, reference_style)
from scmcl.manipulator.networks import (FRAME_SIZE, NETWORK_KEYS, Discriminator, Generator, ManipulatorNets,
                                        MappingNetwork, NetworkSizes, StyleEncoder)

__all__ = ["FRAME_SIZE", "NETWORK_KEYS", "Discriminator", "Generator", "ManipulatorNets", "ManipulatorWeightsError",
           "MappingNetwork", "NetworkSizes", "StyleEncoder", "apply_intensity", "edit_sequence", "edit_table",
           "geometric_median", "intensity_curve", "label_style", "load_networks", "overlap_add", "reference_style",
           "save_networks"]

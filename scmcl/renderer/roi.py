"""The side of the renderer's mouth and eye crops, without torch: the trainer cuts them and the
config validation checks the discriminators can run on them."""

from __future__ import annotations

#: NED's ROI side (72 px) as a fraction of its 256 px frames; scaled to ours.
ROI_FRACTION = 72 / 256


def roi_side(size: int) -> int:
    """NED's 72 px ROI at our resolution, even so it centres on a pixel."""
    return max(2, 2 * round(ROI_FRACTION * size / 2))

"""Preprocessing settings (config key ``preprocess``) and their fingerprint.

The fingerprint is stored with every finished clip, so a shard rerun skips a clip only when
it was produced with the same settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PreprocessSettings:
    """The ``preprocess`` config section plus the device; no defaults here: the schema has them."""

    tracker: str
    tracker_noise_px: float
    crop_size: int
    margin: float
    smooth_window: int
    reconstruction: str
    fit_iterations: int
    fit_expression_prior: float
    identity_clips: int
    deca_model: str
    n_shape: int
    n_exp: int
    mask: str
    segmentation_weights: str
    template: str
    eye_points: int
    device: str

    def fingerprint(self, model_path: str, identity: np.ndarray | None = None) -> str:
        """Of the settings (not the device: CPU and GPU give the same result), the model and the
        actor identity the fits keep (a new one redoes every clip)."""
        fields = {k: v for k, v in asdict(self).items() if k != "device"}
        kept = None if identity is None else np.asarray(identity, np.float32).round(6).tolist()
        payload = json.dumps({**fields, "model": model_path, "identity": kept}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

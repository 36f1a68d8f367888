"""Preprocessing settings (config key ``preprocess``) and their fingerprint.

The fingerprint is stored with every finished clip, so a shard rerun skips a clip only when
it was produced with the same settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PreprocessSettings:
    tracker: str = "synthetic"
    tracker_noise_px: float = 0.5
    crop_size: int = 256
    margin: float = 70 / 186
    smooth_window: int = 49
    reconstruction: str = "fit"
    fit_iterations: int = 200
    deca_model: str = ""
    n_shape: int = 100
    n_exp: int = 50
    mask: str = "raster"
    segmentation_weights: str = ""
    template: str = ""
    eye_points: int = 34
    device: str = "cpu"

    def fingerprint(self, model_path: str) -> str:
        fields = {k: v for k, v in asdict(self).items() if k != "device"}  # same result on CPU and GPU
        payload = json.dumps({**fields, "model": model_path}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

"""Reconstruction backends behind one interface; `deca` on a weight file of the official
structure (random weights), and its camera re-expressed in the crop frame."""

from __future__ import annotations

import numpy as np
import torch

from scmcl.face3d.camera import orthographic
from scmcl.face3d.deca import DecaEncoder
from scmcl.face3d.flame import FlameLayer
from scmcl.face3d.flame_file import load_flame_model, load_landmark_embedding
from scmcl.preprocess.reconstruct import deca_cam_to_crop, deca_crop_transform, make_reconstructor
from tests.helpers import save_deca_like


def test_deca_camera_lands_on_the_same_crop_pixels():
    rng = np.random.default_rng(0)
    points = torch.tensor(rng.normal(0, 0.05, (3, 20, 3)), dtype=torch.float32)
    landmarks = rng.uniform(20, 80, (3, 68, 2))
    matrices = deca_crop_transform(landmarks)
    cam = np.array([[9.0, 0.01, -0.02], [8.0, -0.03, 0.0], [10.0, 0.0, 0.05]])
    in_deca = orthographic(points, torch.tensor(cam, dtype=torch.float32), 224, 224)[..., :2].numpy()
    k, b = matrices[:, 0, 0], matrices[:, :, 2]
    expected = (in_deca - b[:, None]) / k[:, None, None]
    crop_cam = torch.tensor(deca_cam_to_crop(cam, matrices, 96), dtype=torch.float32)
    got = orthographic(points, crop_cam, 96, 96)[..., :2].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_deca_backend_runs_on_official_structure(tmp_path, head_files):
    weights = tmp_path / "deca_model.tar"
    save_deca_like(weights, DecaEncoder())
    layer = FlameLayer(load_flame_model(head_files[0]), landmarks=load_landmark_embedding(head_files[1]))
    backend = make_reconstructor("deca", layer, torch.device("cpu"), 96, deca_model=str(weights), fit_iterations=10,
                                 fit_expression_prior=10.0)
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 255, (3, 96, 96, 3), dtype=np.uint8)
    landmarks = rng.uniform(25, 70, (3, 68, 2))
    recon = backend.reconstruct(crops, landmarks, np.array([True, False, True]))
    assert recon.shape.shape == (layer.n_shape,)
    assert recon.exp.shape == (3, layer.n_exp) and recon.pose.shape == (3, 6) and recon.cam.shape == (3, 3)
    assert np.isfinite(recon.per_frame_rms).all()

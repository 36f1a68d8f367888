"""The renderer's training windows from per-clip stores: runs inside one clip, conditioning
channels in NED's order, ROI centres and crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scmcl.io.clip_data import (
    EYES_ALIGNED,
    FACES_ALIGNED,
    MASKS_ALIGNED,
    NMFC_ALIGNED,
    SHAPE_ALIGNED,
)
from scmcl.renderer.roi import roi_side
from scmcl.renderer.windows import RendererClip, crop_rois, runs
from tests.helpers import RENDERER_CLIP_FRAMES as FRAMES
from tests.helpers import RENDERER_CLIP_SIZE as SIZE
from tests.helpers import write_renderer_clip


def test_runs_stay_inside_one_clip_and_never_wrap() -> None:
    assert runs([5, 2, 4], span=3).tolist() == [[0, 0], [0, 1], [0, 2], [2, 0], [2, 1]]
    lengths = [7, 3, 9, 1]
    for clip, first in runs(lengths, span=4):
        assert 0 <= first and first + 4 <= lengths[clip]
    assert runs([2, 2], span=3).shape == (0, 2)


def test_a_clip_gives_neds_conditioning_faces_and_centres(tmp_path: Path) -> None:
    written = write_renderer_clip(tmp_path / "001")
    clip = RendererClip(tmp_path / "001")
    assert len(clip) == FRAMES
    conditioning = clip.conditioning([1, 2, 3])
    assert conditioning.shape == (3, 10, SIZE, SIZE) and 0 <= conditioning.min() and conditioning.max() <= 1
    for channels, name in ((slice(0, 3), NMFC_ALIGNED), (slice(3, 6), EYES_ALIGNED), (slice(6, 9), SHAPE_ALIGNED)):
        expected = torch.from_numpy(written[name][[1, 2, 3]]).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(conditioning[:, channels], expected), name
    assert torch.equal(conditioning[:, 9], torch.from_numpy(written[MASKS_ALIGNED][[1, 2, 3]]).float() / 255)
    faces = clip.faces([0])
    assert faces.shape == (1, 3, SIZE, SIZE) and -1 <= faces.min() and faces.max() <= 1
    assert torch.allclose((faces + 1) * 127.5, torch.from_numpy(written[FACES_ALIGNED][[0]]).permute(0, 3, 1, 2).float())
    points = written["eyes"].astype(np.float32).astype(np.float64)  # the table stores float32
    np.testing.assert_array_equal(clip.mouth, np.median(points[:, 14:], axis=1).astype(np.int64))
    np.testing.assert_array_equal(clip.eyes, np.median(points[:, :14], axis=1).astype(np.int64))


def test_a_clip_without_mouth_points_is_one_clear_error(tmp_path: Path) -> None:
    write_renderer_clip(tmp_path / "002", points=14)
    with pytest.raises(ValueError, match=r"002: the renderer's mouth discriminator needs the 34 eye and mouth points; "
                                         r"this clip has 14 \(preprocess with preprocess.eye_points 34\)"):
        RendererClip(tmp_path / "002")


def test_rois_are_neds_size_and_stay_inside_the_frame() -> None:
    assert roi_side(256) == 72 and roi_side(128) == 36
    images = torch.arange(2 * 1 * 20 * 20, dtype=torch.float32).reshape(2, 1, 20, 20)
    crops = crop_rois(images, torch.tensor([[10, 10], [1, 19]]), side=8)
    assert crops.shape == (2, 1, 8, 8)
    assert torch.equal(crops[0], images[0, :, 6:14, 6:14])
    assert torch.equal(crops[1], images[1, :, 12:20, 0:8])  # moved in from the corner


def test_baselines_mean_face_and_nmfc_retrieval(tmp_path: Path) -> None:
    from scmcl.renderer.baselines import mean_face, nearest_frames, nmfc_thumbnails

    clips = []
    for seed, name in enumerate(("001", "002")):
        write_renderer_clip(tmp_path / name, seed=seed)
        clips.append(RendererClip(tmp_path / name))
    every = torch.cat([clip.faces(range(len(clip))) for clip in clips])
    assert torch.allclose(mean_face(clips), every.mean(0), atol=1e-6)
    train = torch.cat([nmfc_thumbnails(clip, range(len(clip))) for clip in clips])
    assert train.shape == (2 * FRAMES, 3 * 32 * 32)
    queries = nmfc_thumbnails(clips[1], [4, 0]) + 1e-3  # near copies of training frames 6 + 4 and 6 + 0
    assert nearest_frames(train, queries).tolist() == [FRAMES + 4, FRAMES]

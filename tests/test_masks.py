"""Face masks (method.md §2.4): FSGAN U-Net layout, checkpoint loading, soft erosion, components.

The expected key names and shapes come from FSGAN's ``models/simple_unet.py`` (YuvalNirkin/fsgan,
commit e6da240; NED copies it as ``preprocessing/segmentation/simple_unet.py``) built as NED's
``segment_face.py`` does, ``UNet(n_classes=3, feature_scale=1)``: encoder ``UnetConv2`` blocks of
``Sequential(Conv2d, BatchNorm2d, ReLU)`` named ``conv1``/``conv2``; decoder ``UnetUp`` with ``conv``
(a ``UnetConv2`` without BatchNorm) and ``conv1d`` (1x1, weight (out, in, 1, 1)); ``final`` 1x1.
The gan_latent copy of the same file (``fsgan/models/simple_unet.py``) strict-loads the real
``lfw_figaro_unet_256_2_0_segmentation_v1.pth`` with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scmcl.preprocess.masks import WEIGHTS_NAME, SegmentationMasker, SoftErosion, UNet, fill_empty, largest_component
from tests.helpers import assert_float32_close, save_unet_like

KNOWN_KEYS = {
    "conv1.conv1.0.weight": (64, 3, 3, 3),
    "conv1.conv1.1.running_var": (64,),
    "conv1.conv1.1.num_batches_tracked": (),
    "conv4.conv2.0.weight": (512, 512, 3, 3),
    "center.conv1.0.weight": (1024, 512, 3, 3),
    "center.conv2.1.weight": (1024,),
    "up_concat4.conv1d.weight": (512, 1024, 1, 1),
    "up_concat4.conv.conv1.0.weight": (512, 1024, 3, 3),
    "up_concat1.conv.conv2.0.bias": (64,),
    "final.weight": (3, 64, 1, 1),
    "final.bias": (3,),
}
# 5 encoder blocks x 2 stages x (conv w,b + BN w,b,mean,var,count) + 4 decoder x (2 convs + conv1d) x 2 + final.
KEY_COUNT = 5 * 2 * 7 + 4 * 3 * 2 + 2


def _randomised_unet(seed: int = 0) -> UNet:
    """A U-Net whose BatchNorm statistics are not the defaults, so eval mode is visible in outputs."""
    torch.manual_seed(seed)
    model = UNet(n_classes=3, feature_scale=1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> UNet:
    return _randomised_unet()


@pytest.fixture(scope="module")
def weights(tmp_path_factory, model) -> Path:
    path = tmp_path_factory.mktemp("seg") / WEIGHTS_NAME
    save_unet_like(path, model)
    return path


def _save_state(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"state_dict": state}, path)
    return path


def test_unet_matches_official_key_names_and_shapes(model):
    state = model.state_dict()
    assert len(state) == KEY_COUNT
    for key, shape in KNOWN_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("up_concat") and ".1." in k for k in state), "decoder convs carry no BatchNorm"
    assert not any("maxpool" in k or ".up." in k for k in state), "pooling/upsampling have no parameters"


def _inputs() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_save_load_round_trip_reproduces_outputs(weights, model):
    masker = SegmentationMasker(weights, "cpu")
    with torch.inference_mode():
        assert_float32_close(masker.net(_inputs()), model(_inputs()))
    assert not masker.net.training
    saved = torch.load(weights, weights_only=True)
    assert set(saved) == {"state_dict"} and set(saved["state_dict"]) == set(model.state_dict())


def test_checkpoint_without_batch_counters_still_loads(tmp_path, model):
    """Checkpoints older than BatchNorm's counter load with every weight and running statistic."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    masker = SegmentationMasker(_save_state(tmp_path / "old.pth", state), "cpu")
    assert not masker.net.training
    loaded = masker.net.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    with torch.inference_mode():
        assert_float32_close(masker.net(_inputs()), model(_inputs()))


def test_missing_weights_error_names_file_and_source(tmp_path):
    path = tmp_path / "nowhere" / WEIGHTS_NAME
    with pytest.raises(FileNotFoundError) as err:
        SegmentationMasker(path, "cpu")
    assert str(path) in str(err.value) and "FSGAN" in str(err.value) and "README" in str(err.value)


def test_wrong_key_is_rejected_by_name(tmp_path, model):
    state = dict(model.state_dict())
    state["classifier.weight"] = state.pop("final.weight")
    with pytest.raises(ValueError, match=r"missing: final\.weight.*unexpected: classifier\.weight"):
        SegmentationMasker(_save_state(tmp_path / "renamed.pth", state), "cpu")


def test_wrong_shape_and_layout_are_rejected(tmp_path):
    four_classes = UNet(n_classes=4).state_dict()
    with pytest.raises(ValueError, match=r"wrong shape: final\.weight \(4, 64, 1, 1\) != \(3, 64, 1, 1\)"):
        SegmentationMasker(_save_state(tmp_path / "four.pth", four_classes), "cpu")
    torch.save(four_classes, tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="'state_dict'"):
        SegmentationMasker(tmp_path / "bare.pth", "cpu")


def test_soft_erosion_shrinks_a_disc():
    size, radius = 128, 30.0
    yy, xx = np.mgrid[:size, :size] + 0.5
    dist = np.hypot(yy - size / 2, xx - size / 2)
    disc = dist <= radius
    soft, hard = SoftErosion(kernel_size=21, threshold=0.6)(torch.from_numpy(disc)[None, None])
    soft, hard = soft[0, 0].numpy(), hard[0, 0].numpy()
    assert hard.dtype == bool and hard.any()
    assert not (hard & ~disc).any() and hard.sum() < disc.sum()
    inner, outer = dist[hard].max(), dist[~hard].min()
    assert inner < radius - 0.5 and inner - outer < 1.5, "the hard mask is a disc, concentric and smaller"
    # The kernel's support is the 21x21 square: nothing reaches past radius + 10·√2.
    assert np.all(soft[dist <= radius - 15] == 1.0) and np.all(soft[dist >= radius + 15] == 0.0)
    assert soft.min() >= 0.0 and soft.max() <= 1.0
    assert np.all(soft[hard] == 1.0)
    assert np.isclose(soft[~hard].max(), 1.0), "below the threshold the response is rescaled to peak at 1, as NED"
    assert soft[(dist > radius) & (dist < radius + 15)].max() < soft[~hard & disc].min(), "the ramp falls outwards"


def test_soft_erosion_treats_the_border_as_background():
    _, hard = SoftErosion()(torch.ones(1, 1, 256, 256, dtype=torch.bool))
    hard = hard[0, 0].numpy()
    assert not hard[0].any() and not hard[-1].any() and not hard[:, 0].any() and not hard[:, -1].any()
    assert hard[1:-1, 128].all() and hard[128, 1:-1].all(), "a straight edge loses one pixel at 256 px"
    assert not hard[:4, :4].any(), "corners lose more"


def test_largest_component_drops_a_small_blob():
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:25, 5:25] = True
    mask[30:33, 30:33] = True
    kept = largest_component(mask)
    assert kept[5:25, 5:25].all() and kept.sum() == 400
    assert not largest_component(np.zeros((4, 4), dtype=bool)).any()


def test_empty_frames_reuse_the_previous_mask():
    masks = np.zeros((4, 3, 3), dtype=bool)
    masks[1, 1, 1] = True
    filled = fill_empty(masks.copy())
    assert not filled[0].any() and all(filled[t, 1, 1] and filled[t].sum() == 1 for t in (1, 2, 3))


def test_masks_shape_and_dtype_with_random_weights(weights):
    crops = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    masks = SegmentationMasker(weights, "cpu").masks(crops)
    assert masks.shape == (2, 96, 96) and masks.dtype == bool
    with pytest.raises(ValueError):
        SegmentationMasker(weights, "cpu").masks(crops[..., 0])


def test_forced_face_class_gives_an_eroded_full_mask(weights):
    masker = SegmentationMasker(weights, "cpu", chunk=1)
    with torch.no_grad():
        masker.net.final.weight.zero_()
        masker.net.final.bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    crops = np.random.default_rng(1).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    masks = masker.masks(crops)
    assert masks.shape == (2, 96, 96)
    # Erosion happens at the network's 256 px: one pixel on straight edges (under half a pixel at
    # 96 px, so it vanishes in the resize), a few pixels at the corners.
    for mask in masks:
        assert mask[5:-5, 5:-5].all() and mask[:, 48].all() and mask[48, :].all()
        assert not (mask[0, 0] or mask[0, -1] or mask[-1, 0] or mask[-1, -1])
        assert mask.sum() < mask.size

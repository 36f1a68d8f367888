"""NED's renderer losses: LSGAN over scales, feature matching, the VGG-19 perceptual loss."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision

from scmcl.renderer.losses import VggLoss, VggWeightsError, feature_matching, lsgan, perceptual_loss


def _features(value: float, scales: int = 2, stages: int = 5) -> list[list[torch.Tensor]]:
    return [[torch.full((1, 4, 6 - s, 6 - s), value) for s in range(stages)] for _ in range(scales)]


def test_lsgan_sums_the_scales() -> None:
    assert lsgan(_features(1.0), real=True).item() == 0.0
    assert lsgan(_features(1.0), real=False).item() == pytest.approx(2.0)  # (1 − 0)² on each of 2 scales
    assert lsgan(_features(0.5), real=True).item() == pytest.approx(0.5)


def test_feature_matching_weights_are_neds() -> None:
    real = _features(0.0)
    fake = [[stage.clone().requires_grad_(True) for stage in stages] for stages in _features(0.5)]
    # 2 scales × 4 non-logit stages × (10 / 2 scales · 4 / (3 layers + 1)) × L1 0.5
    loss = feature_matching(fake, real, weight=10.0)
    assert loss.item() == pytest.approx(2 * 4 * 5.0 * 0.5)
    loss.backward()
    assert fake[0][-1].grad is None and fake[0][0].grad is not None  # the logits are not matched
    assert feature_matching(real, real, weight=10.0).item() == 0.0


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1, torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1


def test_without_vgg_weights_the_perceptual_term_is_a_logged_pixel_l1(images, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="scmcl.renderer.losses"):
        loss = perceptual_loss(None)
    assert "no VGG-19 ImageNet weights given" in caplog.text and "L1 loss on the pixels" in caplog.text
    fake, real = images
    fake = fake.clone().requires_grad_(True)
    value = loss(fake, real)
    assert value.item() == pytest.approx((fake - real).abs().mean().item(), rel=1e-6)
    value.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_the_user_vgg_loss_is_frozen_and_zero_on_equal_images(images, tmp_path: Path) -> None:
    torch.manual_seed(4)
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save({f"features.{key}": value for key, value in torchvision.models.vgg19(weights=None).features.state_dict().items()}, path)
    loss = perceptual_loss(str(path))
    assert isinstance(loss, VggLoss)
    assert not any(p.requires_grad for p in loss.parameters()) and not loss.train().training
    fake, real = images
    fake = fake.clone().requires_grad_(True)
    value = loss(fake, real)
    assert value.item() > 0 and loss(real, real).item() == 0.0
    value.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_user_vgg_file_loads_strictly(images, tmp_path: Path) -> None:
    torch.manual_seed(5)
    features = torchvision.models.vgg19(weights=None).features
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save({f"features.{key}": value for key, value in features.state_dict().items()}, path)
    loss = VggLoss(str(path))
    assert torch.equal(loss.slices[0][0].weight, features[0].weight)
    assert torch.equal(loss.slices[4][-2].weight, features[28].weight)  # conv5_1, the last layer NED uses
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wrong)
    with pytest.raises(VggWeightsError) as info:
        VggLoss(str(wrong))
    text = str(info.value)
    assert text.startswith(f"{wrong} is not torchvision's VGG-19") and "missing 32" in text and "\n" not in text

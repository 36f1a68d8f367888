"""LPIPS from the two files a user supplies, in their official layouts, strictly."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision

from scmcl.renderer.lpips import CHANNELS, Lpips, LpipsWeightsError


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), folder / "vgg16-397923af.pth")  # features + classifier
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(CHANNELS)}, folder / "vgg.pth")
    return folder / "vgg.pth", folder / "vgg16-397923af.pth"


def test_lpips_loads_the_official_files_and_is_a_distance(files) -> None:
    lpips = Lpips(str(files[0]), str(files[1]))
    linear = torch.load(files[0], weights_only=True)
    assert torch.equal(lpips.lins["lin3"].model[1].weight, linear["lin3.model.1.weight"])
    generator = torch.Generator().manual_seed(1)
    x, y = (torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1 for _ in range(2))
    same, different = lpips(x, x), lpips(x, y)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-6)
    assert (different > 0).all()
    assert not lpips.train().training  # frozen, no dropout


def test_a_wrong_lpips_file_is_one_clear_error(files, tmp_path: Path) -> None:
    wrong = tmp_path / "alex.pth"
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, 3, 1, 1) for k in range(5)}, wrong)
    with pytest.raises(LpipsWeightsError) as info:
        Lpips(str(wrong), str(files[1]))
    assert str(info.value).startswith(f"{wrong} is not the lpips package's vgg.pth") and "\n" not in str(info.value)


def test_without_both_files_the_term_is_skipped_and_said(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="scmcl.renderer.lpips"):
        assert Lpips.from_files(None, None, torch.device("cpu")) is None
    assert "LPIPS-weighted paired term is skipped" in caplog.text

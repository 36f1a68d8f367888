"""The renderer's kornia image operations: NED's augmentation, face-region PSNR and SSIM."""

from __future__ import annotations

import pytest
import torch

from scmcl.renderer.images import augment_conditioning, face_psnr_ssim


def test_augmentation_jitters_each_image_and_keeps_the_masks() -> None:
    size = 128  # 1% is 1.3 px: a shift nearest resampling shows
    base = torch.zeros(2, 30, size, size)
    base[:, :, 40:88, 32:96] = 1.0  # one bright block, the same in every channel
    mask = (torch.rand(2, size, size, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    for frame in range(3):
        base[:, frame * 10 + 9] = mask
    torch.manual_seed(1)
    out = augment_conditioning(base)
    assert out.shape == base.shape and set(out.unique().tolist()) <= {0.0, 1.0}  # nearest, zero fill
    images = [out[b, f * 10 + i * 3:f * 10 + i * 3 + 3] for b in range(2) for f in range(3) for i in range(3)]
    for image in images:  # one affine per image: its three channels move together
        assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    assert len({image[0].sum().item() for image in images}) > 3  # and each image has its own
    for frame in range(3):
        assert torch.equal(out[:, frame * 10 + 9], mask)  # masks untouched
    torch.manual_seed(1)
    assert torch.equal(augment_conditioning(base), out)  # seeded by torch's RNG


def test_face_psnr_and_ssim_are_on_the_face_region() -> None:
    torch.manual_seed(0)
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    masks = torch.zeros(2, 32, 32)
    masks[:, 8:24, 8:24] = 1
    psnr, ssim = face_psnr_ssim(real, real, masks)
    assert torch.isinf(psnr).all() or (psnr > 80).all()
    assert torch.allclose(ssim, torch.ones(2), atol=1e-4)
    background_only = real.clone()
    background_only[:, :, :8] = -1  # outside every mask: no effect on the face figures
    assert torch.allclose(face_psnr_ssim(background_only, real, masks)[1], ssim)
    noisy = real + 0.2 * torch.randn_like(real)
    noisy_psnr, noisy_ssim = face_psnr_ssim(noisy, real, masks)
    # Gaussian noise of std 0.1 on [0, 1] images (a little less after clipping): PSNR ≈ 20 dB
    assert noisy_psnr.mean().item() == pytest.approx(20.0, abs=1.5) and (noisy_ssim < 0.95).all()
    small = torch.zeros(2, 32, 32)
    small[:, 4:14, 4:14] = 1  # a 10 px face: SSIM's window shrinks to 9
    assert torch.allclose(face_psnr_ssim(real, real, small)[1], torch.ones(2), atol=1e-4)
    with pytest.raises(ValueError, match="empty face mask"):
        face_psnr_ssim(real, real, torch.zeros(2, 32, 32))

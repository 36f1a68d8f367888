"""Sequential generation: the previous-output inputs are the generator's own outputs."""

from __future__ import annotations

import pytest
import torch

from scmcl.renderer.networks import Generator, RendererSizes
from scmcl.renderer.sequence import generate


class _Recording(Generator):
    """The generator, recording the previous outputs it is given."""

    def __init__(self) -> None:
        super().__init__(RendererSizes(ngf=4, downsample=1, blocks=1, frames=3))
        self.seen: list[torch.Tensor] = []

    def forward(self, conditioning: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        self.seen.append(previous)
        return super().forward(conditioning, previous)


def test_each_frame_sees_the_two_outputs_before_it_detached() -> None:
    torch.manual_seed(0)
    generator = _Recording()
    conditioning = torch.rand(2, 6, 10, 8, 8)
    conditioning[:, :, 9] = 1.0  # full masks
    outputs, carry = generate(generator, conditioning)
    assert outputs.shape == (2, 4, 3, 8, 8)  # 6 frames, 3 per output: 4 outputs
    assert torch.equal(generator.seen[0], torch.zeros(2, 6, 8, 8))  # a run starts from zeros, as NED
    assert torch.equal(generator.seen[1][:, 3:], outputs[:, 0].detach())
    assert torch.equal(generator.seen[1][:, :3], torch.zeros(2, 3, 8, 8))
    for k in range(2, 4):
        assert torch.equal(generator.seen[k], torch.cat([outputs[:, k - 2], outputs[:, k - 1]], dim=1).detach())
        assert not generator.seen[k].requires_grad
    assert torch.equal(carry, torch.cat([outputs[:, 2], outputs[:, 3]], dim=1).detach())
    outputs[:, -1].sum().backward()  # the loss reaches the generator through the current frame
    assert generator.model_final_img[1].weight.grad is not None
    generator.seen.clear()
    generate(generator, conditioning[:, :3], previous=carry)  # a continued run starts from the carry
    assert torch.equal(generator.seen[0], carry)
    with pytest.raises(ValueError, match="a run of 2 frames is shorter than the generator's 3"):
        generate(generator, conditioning[:, :2])

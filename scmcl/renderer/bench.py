"""``scmcl bench renderer``: generator training iterations/s and inference frames/s at the demo
and paper sizes on the chosen device, and the loading rate of training windows (3 frames of
face, mask, NMFC, shape and eye image) from our per-clip stores beside the same frames in NED's
per-frame PNG layout. Printed, never asserted; the data is random, written to a temporary folder."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from scmcl.device import resolve_device
from scmcl.io import clip_data as cd
from scmcl.renderer.networks import DiscriminatorSizes, RendererSizes
from scmcl.renderer.sequence import render_clip
from scmcl.renderer.train import RendererRun, RendererTrainSettings, _Step, build_trainer
from scmcl.renderer.windows import RendererClip

#: (name, frame side, generator sizes, discriminator sizes): the demo config's and NED's.
SIZES = (("demo", 128, RendererSizes(16, 3, 4, 3), DiscriminatorSizes(16, 3, 2)),
         ("paper", 256, RendererSizes(64, 3, 9, 3), DiscriminatorSizes(64, 3, 2)))
#: NED's per-frame folders of one window's images (``<celeb>/<kind>/<frame>.png``).
NED_KINDS = ("faces_aligned", "masks_aligned", "nmfcs_aligned", "shapes_aligned", "eye_landmarks_aligned")
STORE_KINDS = (cd.FACES_ALIGNED, cd.MASKS_ALIGNED, cd.NMFC_ALIGNED, cd.SHAPE_ALIGNED, cd.EYES_ALIGNED)


def write_random_clip(directory: Path, frames: int, size: int, seed: int = 0) -> None:
    """A clip folder of random aligned stacks with a centred face mask and 34 eye and mouth points."""
    rng = np.random.default_rng(seed)
    stacks = {name: rng.integers(0, 256, size=(frames, size, size, 3), dtype=np.uint8) for name in cd.STACKS}
    mask = np.zeros((frames, size, size), np.uint8)
    mask[:, size // 8:-size // 8, size // 8:-size // 8] = 255
    stacks[cd.MASKS] = stacks[cd.MASKS_ALIGNED] = mask
    eyes = rng.uniform(size / 4, 3 * size / 4, size=(frames, 34, 2))
    cd.write_clip(directory, cd.frames_table({"eyes": eyes}), stacks)


def _settings(steps: int) -> RendererTrainSettings:
    return RendererTrainSettings(steps=steps, batch_size=1, run_frames=4, grow_every=10**9, frames_per_update=4, lr=2e-4,
                                 beta1=0.5, beta2=0.999, feat_weight=10.0, vgg_weight=10.0, mouth_weight=1.0,
                                 eye_weight=0.0, augment=True, mixed_precision=False, seed=0, checkpoint_every=10**9,
                                 sample_every=10**9)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _speed(folder: Path, size: int, sizes: RendererSizes, d_sizes: DiscriminatorSizes, device: torch.device,
           iterations: int, mixed_precision: bool) -> tuple[float, float]:
    """(training iterations/s, inference frames/s); an iteration renders and updates 4 frames."""
    clip_dir = folder / f"clip_{size}"
    write_random_clip(clip_dir, 24, size)
    settings = _settings(iterations + 1)
    settings = RendererTrainSettings(**{**settings.__dict__, "mixed_precision": mixed_precision})
    run = RendererRun((str(clip_dir),), None, str(folder / f"run_{size}"), "", "", "")
    nets, clips, loss, update, loop, samples = build_trainer(sizes, d_sizes, settings, None, str(device), run)
    step = _Step(nets, clips, settings, loss, update, loop, lambda _: None)
    step(0)  # warm-up: kernels chosen, memory allocated
    _sync(device)
    start = time.perf_counter()
    for index in range(1, iterations + 1):
        step(index)
    _sync(device)
    train_rate = iterations / (time.perf_counter() - start)
    conditioning = clips[0].conditioning(range(len(clips[0]))).to(device)
    nets.generator.eval()
    with update.precision():
        render_clip(nets.generator, conditioning[:4])
        _sync(device)
        start = time.perf_counter()
        render_clip(nets.generator, conditioning)
        _sync(device)
    return train_rate, len(conditioning) / (time.perf_counter() - start)


def _loading(folder: Path, size: int, windows: int) -> tuple[float, float]:
    """Training windows/s read from our memory-mapped stores and from NED's per-frame PNGs."""
    clip_dir, ned_dir = folder / "store", folder / "ned"
    write_random_clip(clip_dir, 50, size, seed=1)
    clip = RendererClip(clip_dir)
    for kind, name in zip(NED_KINDS, STORE_KINDS):
        (ned_dir / kind).mkdir(parents=True)
        for frame, image in enumerate(clip.stacks[name]):
            iio.imwrite(ned_dir / kind / f"{frame:06d}.png", np.asarray(image))
    starts = np.random.default_rng(0).integers(0, len(clip) - 3, size=windows)
    start = time.perf_counter()
    for first in starts:
        frames = range(first, first + 3)
        clip.conditioning(frames), clip.faces(frames)
    ours = windows / (time.perf_counter() - start)
    start = time.perf_counter()
    for first in starts:
        [iio.imread(ned_dir / kind / f"{frame:06d}.png") for kind in NED_KINDS for frame in range(first, first + 3)]
    return ours, windows / (time.perf_counter() - start)


def run_renderer_bench(device: str, iterations: int, windows: int, mixed_precision: bool) -> str:
    """The figures as printable lines."""
    torch_device = resolve_device(device)
    lines = [f"renderer bench on {torch_device} ({'bfloat16 autocast' if mixed_precision else 'float32'}); "
             f"an iteration renders and updates 4 frames"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, size, sizes, d_sizes in SIZES:
            train, infer = _speed(folder, size, sizes, d_sizes, torch_device, iterations, mixed_precision)
            lines.append(f"{name:5s} {size} px ngf {sizes.ngf} blocks {sizes.blocks}: training {train:.2f} it/s, "
                         f"inference {infer:.1f} frames/s")
        ours, ned = _loading(folder, 256, windows)
        lines.append(f"training windows (3 frames x face, mask, NMFC, shape, eye image at 256 px, page cache warm): "
                     f"per-clip stores {ours:.0f}/s, NED's per-frame PNGs {ned:.0f}/s ({ours / ned:.1f}x)")
    return "\n".join(lines)

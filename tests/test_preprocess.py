"""Preprocessing on the built-in corpus, checked against its ground truth: the fitted jaw,
the NMFC/mask overlay on the aligned face, the storage layout and the resumable shard."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from scmcl.corpus.layout import ClipKey, groundtruth_path
from scmcl.corpus.manifest import scan_mead
from scmcl.face3d.camera import orthographic
from scmcl.face3d.flame import FlameLayer
from scmcl.face3d.flame_file import load_flame_model, load_landmark_embedding
from scmcl.face3d.raster import rasterize
from scmcl.preprocess.clip import STACKS, TABLE
from scmcl.preprocess.settings import PreprocessSettings
from scmcl.preprocess.shard import PROGRESS, ShardRunner, expression_table, expression_view51, run_shard
from tests.conftest import ACTOR, SETTINGS

CROP = 96


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Preprocessing runs on one torch thread per job (see rules/preprocess.smk)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runner(head_files, corpus):
    settings = PreprocessSettings(crop_size=CROP, tracker="synthetic", tracker_noise_px=0.5)
    return ShardRunner(settings, str(head_files[0]), str(head_files[1]), str(corpus))


@pytest.fixture(scope="module")
def shard(runner, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    manifest = scan_mead(corpus, actors=[ACTOR], emotions=["neutral"], levels=[3])
    table = run_shard(manifest, ACTOR, "neutral", out / "neutral", out / "neutral.parquet", runner)
    return out, table


def test_clip_outputs_are_one_table_and_stacks(shard):
    out, table = shard
    directory = out / "neutral" / "level_1" / "001"
    names = sorted(p.name for p in directory.iterdir())
    assert names == sorted([TABLE, *(f"{s}.npy" for s in STACKS)])
    frames = pd.read_parquet(directory / TABLE)
    assert len(frames) == table.frames.iloc[0]
    for name in STACKS:
        stack = np.load(directory / f"{name}.npy", mmap_mode="r")
        assert stack.dtype == np.uint8 and stack.shape[:3] == (len(frames), CROP, CROP)


def test_fit_recovers_ground_truth_jaw(shard, corpus):
    out, _ = shard
    frames = pd.read_parquet(out / "neutral" / "level_1" / "001" / TABLE)
    truth = pd.read_parquet(groundtruth_path(corpus, ACTOR, ClipKey("neutral", 1, "001")))
    r = np.corrcoef(frames["pose_03"], truth["jaw_open"])[0, 1]
    assert r >= 0.95, f"jaw correlation {r:.3f}"


def _compose(align: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """frame → aligned as (T,2,3): align ∘ crop."""
    a = np.concatenate([align, np.tile([[[0, 0, 1.0]]], (len(align), 1, 1))], axis=1)
    c = np.concatenate([crop, np.tile([[[0, 0, 1.0]]], (len(crop), 1, 1))], axis=1)
    return (a @ c)[:, :2]


def test_rendered_mask_overlays_true_face_in_aligned_crop(shard, corpus, head_files):
    """The ground-truth head, rendered into the aligned crop, covers the same pixels as the
    reconstructed mesh's mask (which also cuts out the NMFC and shape images)."""
    out, _ = shard
    directory = out / "neutral" / "level_1" / "001"
    frames = pd.read_parquet(directory / TABLE)
    truth = pd.read_parquet(groundtruth_path(corpus, ACTOR, ClipKey("neutral", 1, "001")))
    model = load_flame_model(head_files[0])
    layer = FlameLayer(model, landmarks=load_landmark_embedding(head_files[1]))
    block = lambda t, p: torch.tensor(t.filter(regex=f"^{p}_\\d+$").to_numpy(), dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        mesh = layer(shape=block(truth, "shape"), exp=block(truth, "exp"), pose=block(truth, "pose"),
                     neck_pose=block(truth, "neck_pose"), eye_pose=block(truth, "eye_pose"))
    screen = orthographic(mesh.vertices, block(truth, "cam"), SETTINGS.resolution, SETTINGS.resolution)
    matrix = _compose(frames.filter(like="align_matrix").to_numpy().reshape(-1, 2, 3),
                      frames.filter(like="crop_matrix").to_numpy().reshape(-1, 2, 3))
    m = torch.tensor(matrix, dtype=torch.float32)
    xy = torch.einsum("tij,tvj->tvi", m[:, :, :2], screen[..., :2]) + m[:, None, :, 2]
    aligned = torch.cat([xy, screen[..., 2:]], dim=-1)
    truth_mask = rasterize(aligned, layer.faces, CROP, CROP).mask.numpy()
    mask = np.load(directory / "masks_aligned.npy") > 0
    iou = (truth_mask & mask).sum(axis=(1, 2)) / (truth_mask | mask).sum(axis=(1, 2))
    assert np.median(iou) > 0.9, f"median IoU {np.median(iou):.3f}"
    nmfc = np.load(directory / "nmfc_aligned.npy")
    assert ((nmfc.max(axis=-1) > 0) <= mask).all(), "NMFC drawn outside the face mask"


def test_expression_table_has_53_columns(shard):
    out, _ = shard
    table = expression_table([out / "neutral.parquet"])
    assert [c for c in table.columns if c.startswith(("jaw_pose_", "exp_"))] == \
        [f"jaw_pose_{j}" for j in range(3)] + [f"exp_{j:02d}" for j in range(50)]
    view = expression_view51(table)
    assert view.shape == (len(table), 51)
    np.testing.assert_array_equal(view[:, 0], table["jaw_pose_0"].to_numpy(np.float32))


def test_rerun_skips_finished_clips(shard, runner, corpus, monkeypatch):
    out, table = shard
    calls = []
    monkeypatch.setattr(runner, "run_clip", lambda row, directory: calls.append(row.clip))
    manifest = scan_mead(corpus, actors=[ACTOR], emotions=["neutral"], levels=[3])
    again = run_shard(manifest, ACTOR, "neutral", out / "neutral", out / "neutral.parquet", runner)
    assert calls == [], "a finished clip was processed again"
    assert again.frames.tolist() == table.frames.tolist()
    assert (out / "neutral" / PROGRESS).is_file()


def test_changed_settings_redo_clips(shard, runner, head_files):
    """A rerun with other settings must not reuse clips made with the old ones."""
    out, _ = shard
    changed = PreprocessSettings(crop_size=CROP, tracker="synthetic", tracker_noise_px=1.0)
    same_on_gpu = PreprocessSettings(crop_size=CROP, tracker="synthetic", tracker_noise_px=0.5, device="cuda")
    assert changed.fingerprint(str(head_files[0])) != runner.fingerprint
    assert same_on_gpu.fingerprint(str(head_files[0])) == runner.fingerprint


def test_segmentation_masks_replace_the_rasterized_ones(shard, runner, tmp_path):
    """With mask: fsgan, the U-Net's mask (here forced to 'face' everywhere, so the whole
    eroded crop) cuts the aligned face, instead of the mesh's rasterized region."""
    from scmcl.preprocess.align import transform_points
    from scmcl.preprocess.clip import process_clip
    from scmcl.preprocess.masks import SegmentationMasker, UNet, save_unet_like
    from scmcl.preprocess.reconstruct import Reconstruction
    from scmcl.preprocess.tracking import TrackedClip

    out, _ = shard
    directory = out / "neutral" / "level_1" / "001"
    frames = pd.read_parquet(directory / TABLE).iloc[:2]
    n = len(frames)
    block = lambda p: frames.filter(regex=f"^{p}_\\d+$").to_numpy()  # noqa: E731
    crop_m = block("crop_matrix").reshape(n, 2, 3)
    lmk = np.stack([block("lmk_x"), block("lmk_y")], axis=-1)
    lmk_crop = transform_points(lmk, crop_m)
    tracked = TrackedClip(np.load(directory / "crops.npy")[:n], block("box"), lmk, lmk_crop,
                          frames["found"].to_numpy(), frames["filled"].to_numpy(), crop_m)
    recon = Reconstruction(block("shape")[0], block("exp"), block("pose"), block("cam"), frames["fit_rms_px"].to_numpy())
    weights = tmp_path / "unet.pth"
    save_unet_like(weights, UNet())
    masker = SegmentationMasker(weights, "cpu")
    with torch.no_grad():  # the 'face' class wins at every pixel
        masker.net.final.weight.zero_()
        masker.net.final.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    outputs = process_clip(tracked, recon, runner.layer, runner.template, 34, torch.device("cpu"), masker)
    masks = outputs.stacks["masks"] > 0
    assert masks.mean() > 0.5, "the forced-face network should mask most of the crop"
    raster = np.load(directory / "masks.npy")[:n] > 0
    assert (masks != raster).mean() > 0.05, "masks still come from the rasterized mesh"
    aligned = outputs.stacks["faces_aligned"].max(axis=-1) > 0
    assert (aligned <= (outputs.stacks["masks_aligned"] > 0)).all()

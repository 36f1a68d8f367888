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
from scmcl.io import clip_data as cd
from scmcl.options import schema_default
from scmcl.preprocess.settings import PreprocessSettings
from scmcl.preprocess.identity import identity_clips, mean_identity, read_identity, write_identity
from scmcl.preprocess.shard import PROGRESS, ShardRunner, expression_table, fit_actor_identity, run_shard
from tests.conftest import ACTOR, SETTINGS

CROP = 96


def _settings(**overrides) -> PreprocessSettings:
    """The schema's preprocessing settings at the test's crop size, with test overrides."""
    return PreprocessSettings(**{**schema_default("preprocess"), "crop_size": CROP, "device": "cpu", **overrides})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runner(head_files, corpus):
    settings = _settings(tracker="synthetic", tracker_noise_px=0.5)
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
    assert sorted(directory.iterdir()) == sorted(cd.clip_files(directory))
    frames = cd.read_clip_frames(directory)
    assert len(frames) == table.frames.iloc[0]
    for name in cd.STACKS:
        stack = cd.read_clip_stack(directory, name)
        assert stack.dtype == np.uint8 and stack.shape[:3] == (len(frames), CROP, CROP)
    shapes = {name: frames.block(name).shape for name in ("box", "landmarks", "crop_matrix", "align_matrix", "eyes", "pose", "cam")}
    n = len(frames)
    assert shapes == {"box": (n, 4), "landmarks": (n, 68, 2), "crop_matrix": (n, 2, 3), "align_matrix": (n, 2, 3),
                      "eyes": (n, 34, 2), "pose": (n, 6), "cam": (n, 3)}


def test_fit_recovers_ground_truth_jaw(shard, corpus):
    out, _ = shard
    frames = cd.read_clip_frames(out / "neutral" / "level_1" / "001")
    truth = cd.read_frame_table(groundtruth_path(corpus, ACTOR, ClipKey("neutral", 1, "001")))
    r = np.corrcoef(frames.block("pose")[:, cd.JAW][:, 0], truth.column("jaw_open"))[0, 1]
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
    frames = cd.read_clip_frames(directory)
    truth = cd.read_frame_table(groundtruth_path(corpus, ACTOR, ClipKey("neutral", 1, "001")))
    model = load_flame_model(head_files[0])
    layer = FlameLayer(model, landmarks=load_landmark_embedding(head_files[1]))
    true = {name: torch.tensor(truth.block(name), dtype=torch.float32) for name in ("shape", "exp", "pose", "neck_pose", "eye_pose", "cam")}
    with torch.no_grad():
        mesh = layer(shape=true["shape"], exp=true["exp"], pose=true["pose"], neck_pose=true["neck_pose"], eye_pose=true["eye_pose"])
    screen = orthographic(mesh.vertices, true["cam"], SETTINGS.resolution, SETTINGS.resolution)
    m = torch.tensor(_compose(frames.block("align_matrix"), frames.block("crop_matrix")), dtype=torch.float32)
    xy = torch.einsum("tij,tvj->tvi", m[:, :, :2], screen[..., :2]) + m[:, None, :, 2]
    aligned = torch.cat([xy, screen[..., 2:]], dim=-1)
    truth_mask = rasterize(aligned, layer.faces, CROP, CROP).mask.numpy()
    mask = cd.read_clip_stack(directory, cd.MASKS_ALIGNED) > 0
    iou = (truth_mask & mask).sum(axis=(1, 2)) / (truth_mask | mask).sum(axis=(1, 2))
    assert np.median(iou) > 0.9, f"median IoU {np.median(iou):.3f}"
    nmfc = cd.read_clip_stack(directory, cd.NMFC_ALIGNED)
    assert ((nmfc.max(axis=-1) > 0) <= mask).all(), "NMFC drawn outside the face mask"


def test_expression_table_has_53_columns(shard):
    out, _ = shard
    table = expression_table([out / "neutral.parquet"])
    assert list(table.columns) == ["actor", "emotion", "level", "clip", "frame"] + \
        [f"jaw_pose_{j}" for j in range(3)] + [f"exp_{j:02d}" for j in range(50)]
    frames = cd.read_clip_frames(out / "neutral" / "level_1" / "001")
    exp = frames.block("exp")
    assert exp.shape[1] < 50  # the built-in head: fewer components, zero-padded to FLAME's 50
    np.testing.assert_array_equal(table[[f"exp_{j:02d}" for j in range(exp.shape[1])]].to_numpy(), exp.astype(np.float32))
    assert (table[[f"exp_{j:02d}" for j in range(exp.shape[1], 50)]].to_numpy() == 0).all()
    view = cd.expression_view51(table)
    assert view.shape == (len(table), 51)
    np.testing.assert_array_equal(view[:, 0], frames.block("pose")[:, 3].astype(np.float32))


def test_rerun_skips_finished_clips(shard, runner, corpus, monkeypatch):
    out, table = shard
    calls = []
    monkeypatch.setattr(runner, "run_clip", lambda row, directory: calls.append(row.clip))
    manifest = scan_mead(corpus, actors=[ACTOR], emotions=["neutral"], levels=[3])
    again = run_shard(manifest, ACTOR, "neutral", out / "neutral", out / "neutral.parquet", runner)
    assert calls == [], "a finished clip was processed again"
    assert again.frames.tolist() == table.frames.tolist()
    assert (out / "neutral" / PROGRESS).is_file()


def test_segmentation_masks_replace_the_rasterized_ones(shard, runner, tmp_path):
    """With mask: fsgan, the U-Net's mask (here forced to 'face' everywhere, so the whole
    eroded crop) cuts the aligned face, instead of the mesh's rasterized region."""
    from scmcl.preprocess.align import transform_points
    from scmcl.preprocess.clip import process_clip
    from scmcl.preprocess.masks import SegmentationMasker, UNet
    from tests.helpers import save_unet_like
    from scmcl.preprocess.reconstruct import Reconstruction
    from scmcl.preprocess.tracking import TrackedClip

    out, _ = shard
    directory = out / "neutral" / "level_1" / "001"
    frames = cd.read_clip_frames(directory)
    n = 2
    crop_m, lmk = frames.block("crop_matrix")[:n], frames.block("landmarks")[:n]
    crops = np.array(cd.read_clip_stack(directory, cd.CROPS)[:n])  # in memory: the U-Net takes writable arrays
    tracked = TrackedClip(crops, frames.block("box")[:n], lmk, transform_points(lmk, crop_m),
                          frames.column("found")[:n], frames.column("filled")[:n], crop_m)
    recon = Reconstruction(frames.block("shape")[0], frames.block("exp")[:n], frames.block("pose")[:n], frames.block("cam")[:n],
                           frames.column("fit_rms_px")[:n])
    weights = tmp_path / "unet.pth"
    save_unet_like(weights, UNet())
    masker = SegmentationMasker(weights, "cpu")
    with torch.no_grad():  # the 'face' class wins at every pixel
        masker.net.final.weight.zero_()
        masker.net.final.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    outputs = process_clip(tracked, recon, runner.layer, runner.template, 34, torch.device("cpu"), masker)
    masks = outputs.stacks[cd.MASKS] > 0
    assert masks.mean() > 0.5, "the forced-face network should mask most of the crop"
    raster = cd.read_clip_stack(directory, cd.MASKS)[:n] > 0
    assert (masks != raster).mean() > 0.05, "masks still come from the rasterized mesh"
    aligned = outputs.stacks[cd.FACES_ALIGNED].max(axis=-1) > 0
    assert (aligned <= (outputs.stacks[cd.MASKS_ALIGNED] > 0)).all()


def _recorded_runs(runner, monkeypatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(runner, "run_clip", lambda row, directory: calls.append(row.clip))
    return calls


def test_manifest_without_a_column_fails_before_any_clip(runner, corpus, tmp_path, monkeypatch):
    calls = _recorded_runs(runner, monkeypatch)
    path = tmp_path / "manifest.parquet"
    scan_mead(corpus, actors=[ACTOR], emotions=["neutral"], levels=[3]).drop(columns="fps").to_parquet(path)
    with pytest.raises(cd.ClipDataError, match=rf"^{path} has no column fps: rerun corpus_manifest \(scmcl corpus scan\)$"):
        run_shard(path, ACTOR, "neutral", tmp_path / "neutral", tmp_path / "neutral.parquet", runner)
    with pytest.raises(cd.ClipDataError, match=r"^the manifest has no column fps"):
        run_shard(pd.read_parquet(path), ACTOR, "neutral", tmp_path / "neutral", tmp_path / "neutral.parquet", runner)
    assert calls == [] and not (tmp_path / "neutral.parquet").exists()


def test_groundtruth_without_landmarks_fails_before_any_clip(runner, corpus, tmp_path, monkeypatch):
    """The synthetic tracker's input of every clip is checked from its schema up front."""
    calls = _recorded_runs(runner, monkeypatch)
    key = ClipKey("neutral", 1, "001")
    broken = groundtruth_path(tmp_path / "root", ACTOR, key)
    broken.parent.mkdir(parents=True)
    pd.read_parquet(groundtruth_path(corpus, ACTOR, key)).drop(columns="lmk_x_10").to_parquet(broken)
    monkeypatch.setattr(runner, "data_root", str(tmp_path / "root"))
    manifest = scan_mead(corpus, actors=[ACTOR], emotions=["neutral"], levels=[3])
    with pytest.raises(cd.ClipDataError, match=rf"^{broken} has no column lmk_x_10: rerun synth_corpus \(scmcl corpus synth\)$"):
        run_shard(manifest, ACTOR, "neutral", tmp_path / "neutral", tmp_path / "neutral.parquet", runner)
    broken.unlink()
    with pytest.raises(cd.MissingInput, match=rf"^{broken} is missing: rerun synth_corpus"):
        run_shard(manifest, ACTOR, "neutral", tmp_path / "neutral", tmp_path / "neutral.parquet", runner)
    assert calls == []


def test_expression_table_inputs_say_which_rule_writes_them(shard, tmp_path):
    out, _ = shard
    missing = tmp_path / "SYN01" / "happy.parquet"
    with pytest.raises(cd.MissingInput, match=rf"^{missing} is missing: rerun preprocess_shard \(scmcl preprocess shard\)$"):
        expression_table([missing])
    # A clip folder whose table lost a column (a gap in the expression block is not a shorter block).
    table = pd.read_parquet(out / "neutral.parquet")
    clip = tmp_path / "clip"
    clip.mkdir()
    cd.read_clip_frames(table.directory.iloc[0]).data.drop(columns="exp_00").to_parquet(clip / cd.FRAMES_TABLE)
    table.assign(directory=str(clip)).to_parquet(tmp_path / "neutral.parquet")
    with pytest.raises(cd.ClipDataError, match=rf"^{clip / cd.FRAMES_TABLE} has no column exp_00: "
                                               rf"rerun preprocess_shard for {ACTOR}/neutral \(scmcl preprocess shard\)$"):
        expression_table([tmp_path / "neutral.parquet"])


def test_every_fit_of_an_actor_keeps_its_identity(runner, head_files, corpus, tmp_path):
    """``scmcl preprocess identity`` averages the free identities of the actor's neutral clips; a
    shard given it keeps it in every clip (and its fingerprint differs, so no clip fitted
    without it is skipped)."""
    manifest = scan_mead(corpus, actors=[ACTOR], emotions=["neutral", "happy"], levels=[3])
    record = fit_actor_identity(manifest, ACTOR, 4, tmp_path / "identity.json", runner)
    assert record["clips"] == [f"{ACTOR}/neutral/level_1/001"]
    identity = read_identity(tmp_path / "identity.json", ACTOR, runner.layer.n_shape)
    np.testing.assert_allclose(identity, record["shape"])
    kept = ShardRunner(runner.settings, str(head_files[0]), str(head_files[1]), str(corpus), identity)
    assert kept.fingerprint != runner.fingerprint
    table = run_shard(manifest, ACTOR, "happy", tmp_path / "happy", tmp_path / "happy.parquet", kept)
    shapes = cd.read_clip_frames(table.directory.iloc[0]).block("shape")
    np.testing.assert_allclose(shapes, np.broadcast_to(identity, shapes.shape), rtol=1e-5, atol=1e-6)


def test_a_wrong_identity_file_is_one_clear_error(tmp_path):
    path = tmp_path / "identity.json"
    write_identity(path, ACTOR, np.zeros(3), [f"{ACTOR}/neutral/level_1/001"], [0.5])
    with pytest.raises(ValueError, match=f"identity of actor {ACTOR}, not SYN09: rerun actor_identity"):
        read_identity(path, "SYN09", 3)
    with pytest.raises(ValueError, match="holds 3 identity coefficients, the fit uses 100"):
        read_identity(path, ACTOR, 100)
    path.write_text("{")
    with pytest.raises(ValueError, match="is not an actor identity"):
        read_identity(path, ACTOR, 3)
    manifest = pd.DataFrame({"actor": [ACTOR], "emotion": ["happy"], "level": [3], "clip": ["001"]})
    with pytest.raises(ValueError, match="manifest.parquet has no neutral clip of actor"):
        identity_clips(manifest, ACTOR, 4, "manifest.parquet")


def test_clips_are_averaged_by_their_frames():
    np.testing.assert_allclose(mean_identity([np.zeros(2), np.ones(2)], [1, 3]), [0.75, 0.75])

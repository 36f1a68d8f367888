"""The edited video: conditioning of an edit, the faces put back into the frames, the MP4 with
the source's frames, duration and audio."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from scmcl.cli import main
from scmcl.corpus.layout import ClipKey, video_path
from scmcl.edit.composite import PYRAMID_LEVELS, aligned_to_frame, composite, inside_crop, pyramid_blend
from scmcl.edit.conditioning import edited_conditioning, moved_eye_points, own_expressions
from scmcl.edit.video import render_edit
from scmcl.io.clip_data import expression_rows
from scmcl.io.media import probe, read_frames
from scmcl.preprocess.align import transform_points
from scmcl.renderer.checkpoint import save_network
from scmcl.renderer.networks import Generator, RendererSizes
from scmcl.renderer.rerender import Rerenderer
from scmcl.renderer.windows import RendererClip, actor_clips
from tests.conftest import ACTOR

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def source(preprocessed):
    """The first preprocessed clip's row: its key and folder."""
    return actor_clips(preprocessed, [])[0].iloc[0]


@pytest.fixture(scope="module")
def clip(source) -> RendererClip:
    return RendererClip(source.directory)


@pytest.fixture(scope="module")
def rerender(head_files) -> Rerenderer:
    return Rerenderer(str(head_files[0]), str(head_files[1]), torch.device("cpu"))


def test_the_unedited_expressions_give_back_the_stored_conditioning(clip, rerender) -> None:
    ours, stored = edited_conditioning(rerender, clip, own_expressions(clip)), clip.conditioning(range(len(clip)))
    assert ours.shape == stored.shape
    assert (ours[:, :3] - stored[:, :3]).abs().max() <= 1.5 / 255 and (ours[:, 6:9] - stored[:, 6:9]).abs().max() <= 1.5 / 255
    assert (ours[:, 3:6] != stored[:, 3:6]).float().mean() < 0.001  # the eye discs: the same up to edge pixels
    assert torch.equal(ours[:, 9], stored[:, 9])


def test_eye_points_move_with_the_mesh_eyelids_and_pupils_with_their_eye() -> None:
    points = torch.zeros(1, 34, 2)
    source, edited = torch.zeros(1, 12, 2), torch.zeros(1, 12, 2)
    edited[:, :6, 1] = 2.0  # the first eye's lids move down 2 px, the second's do not
    moved = moved_eye_points(points, source, edited)
    assert torch.equal(moved[0, :6, 1], torch.full((6,), 2.0)) and not moved[0, 6:12].any()
    assert moved[0, 12].tolist() == [0.0, 2.0] and moved[0, 13].tolist() == [0.0, 0.0]
    assert not moved[0, 14:].any()  # the mouth points stay


def test_aligned_to_frame_inverts_frame_to_crop_to_aligned(clip) -> None:
    crop, align = clip.table.block("crop_matrix"), clip.table.block("align_matrix")
    frame_points = np.array([[[40.0, 50.0], [90.0, 120.0]]]).repeat(len(crop), 0)
    aligned = transform_points(transform_points(frame_points, crop), align)
    np.testing.assert_allclose(transform_points(aligned, aligned_to_frame(crop, align)), frame_points, atol=1e-3)


def test_blends_take_the_face_inside_the_mask_and_the_frame_outside() -> None:
    generator = torch.Generator().manual_seed(0)
    face, frame = torch.rand(1, 3, 64, 64, generator=generator), torch.rand(1, 3, 64, 64, generator=generator)
    ones, zeros = torch.ones(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    assert torch.allclose(pyramid_blend(face, frame, ones, PYRAMID_LEVELS), face, atol=1e-5)
    assert torch.allclose(pyramid_blend(face, frame, zeros, PYRAMID_LEVELS), frame, atol=1e-5)
    identity = np.array([[[1.0, 0, 0], [0, 1.0, 0]]])
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    for method in ("pyramid", "copy_paste", "poisson"):
        out = composite(face * 2 - 1, mask, frame, identity, method)
        assert torch.allclose(out[..., :8, :], frame[..., :8, :], atol=1e-2), method  # far outside the mask
        if method != "poisson":  # Poisson cloning keeps the face's gradients, not its values
            assert torch.allclose(out[..., 30:34, 30:34], face[..., 30:34, 30:34], atol=2e-2), method
    with pytest.raises(ValueError, match="unknown blend 'feather'"):
        composite(face, mask, frame, identity, "feather")


def test_inside_crop_marks_what_the_alignment_brings_from_the_crop() -> None:
    shift = np.array([[[1.0, 0, 10.0], [0, 1.0, 0]]])  # crop → aligned moves right by 10 px
    inside = inside_crop(shift, 32, torch.device("cpu"))
    assert not inside[0, 0, :, :10].any() and inside[0, 0, :, 10:].all()


def _write_edit(clip: RendererClip, source, path) -> None:
    """An edit table of the clip with a strong expression change, as ``scmcl manipulate`` writes it."""
    edited51 = own_expressions(clip)
    edited51[:, 1:4] += 1.0
    table = expression_rows((ACTOR, "sad", int(source.level), source["clip"]), np.arange(len(clip)), np.zeros((len(clip), 3)), edited51[:, 1:])
    table["jaw_pose_0"] = edited51[:, 0]
    table["source_frame"] = np.arange(len(clip))
    table.to_parquet(path)


def _source_video(corpus, source):
    return video_path(corpus, ACTOR, ClipKey(source.emotion, int(source.level), source["clip"]))


def test_an_edited_video_keeps_the_source_frames_duration_and_audio(clip, source, rerender, corpus, tmp_path) -> None:
    torch.manual_seed(0)
    generator = Generator(RendererSizes(4, 1, 2, 3))
    _write_edit(clip, source, tmp_path / "edit.parquet")
    video = _source_video(corpus, source)
    figures = render_edit(tmp_path / "edit.parquet", clip.directory, video, generator, rerender, "pyramid", tmp_path / "e.mp4")
    ours, theirs = probe(tmp_path / "e.mp4"), probe(video)
    assert figures["frames"] == ours.frames == theirs.frames and ours.fps == theirs.fps
    assert (ours.width, ours.height) == (theirs.width, theirs.height)
    assert ours.audio_duration == pytest.approx(theirs.audio_duration, abs=1 / theirs.fps)
    assert ours.video_duration == pytest.approx(theirs.video_duration, abs=1 / theirs.fps)
    edited, original = read_frames(tmp_path / "e.mp4").astype(float), read_frames(video).astype(float)
    face = np.zeros(original.shape[1:3], bool)
    boxes = clip.table.block("box")
    x0, y0, x1, y1 = boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()
    face[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True
    assert np.abs(edited - original)[:, ~face].mean() < 2.0  # the background is the source's, up to the codec
    assert np.abs(edited - original)[:, face].mean() > 2.0  # the face is the (untrained) renderer's


def _edit_video(tmp_path, clip, head_files, video, capsys, edit=None, renderer=None) -> tuple[int, str, str]:
    """``scmcl edit video`` on the clip with a small seeded renderer: (exit status, stdout, stderr)."""
    if renderer is None:
        torch.manual_seed(0)
        renderer = tmp_path / "renderer.pth"
        save_network(renderer, Generator(RendererSizes(4, 1, 2, 3)))
    (tmp_path / "edit.json").write_text("{}")
    code = main(["edit", "video", "--edit", str(edit or tmp_path / "edit.parquet"), "--edit-record", str(tmp_path / "edit.json"),
                 "--renderer", str(renderer), "--clip-dir", clip.directory, "--video", str(video), "--model", str(head_files[0]),
                 "--landmarks", str(head_files[1]), "--ngf", "4", "--downsample", "1", "--blocks", "2", "--frames", "3",
                 "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "e.mp4"), "--record", str(tmp_path / "e.json")])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_silent_source_gives_a_silent_video_said_in_the_log_and_record(clip, source, corpus, head_files, tmp_path,
                                                                         capsys) -> None:
    silent = tmp_path / "silent.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(_source_video(corpus, source)), "-an", "-c:v", "copy", str(silent)],
                   check=True)
    _write_edit(clip, source, tmp_path / "edit.parquet")
    code, out, err = _edit_video(tmp_path, clip, head_files, silent, capsys)
    assert code == 0, err
    assert out.strip().endswith(f", silent: {silent} has no audio stream") and len(out.strip().splitlines()) == 1
    assert json.loads((tmp_path / "e.json").read_text())["audio"] is False
    ours = probe(tmp_path / "e.mp4")
    assert ours.sample_rate is None and ours.frames == len(clip)


def test_non_finite_edits_and_renderer_outputs_name_the_file_column_and_frames(clip, source, corpus, head_files, tmp_path,
                                                                               capsys) -> None:
    video = _source_video(corpus, source)
    _write_edit(clip, source, tmp_path / "edit.parquet")
    table = pd.read_parquet(tmp_path / "edit.parquet")
    table.loc[[4, 5, 6, 9], "exp_03"] = np.nan
    table.loc[2, "exp_07"] = np.inf
    table.to_parquet(tmp_path / "nan.parquet")
    code, _, err = _edit_video(tmp_path, clip, head_files, video, capsys, edit=tmp_path / "nan.parquet")
    assert code == 1 and err == (f"scmcl edit: error: {tmp_path / 'nan.parquet'}: column exp_03 is not finite at frames 4-6, 9: "
                                 "rerun the manipulate rule on this clip\n")
    torch.manual_seed(0)
    broken = Generator(RendererSizes(4, 1, 2, 3))
    next(broken.parameters()).data.fill_(float("nan"))
    save_network(tmp_path / "broken.pth", broken)
    code, _, err = _edit_video(tmp_path, clip, head_files, video, capsys, renderer=tmp_path / "broken.pth")
    assert code == 1 and err.startswith("scmcl edit: error: the renderer's output is not finite at frames 0-")
    assert "retrain the actor's renderer" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "e.mp4").exists() and not (tmp_path / "e.json").exists()

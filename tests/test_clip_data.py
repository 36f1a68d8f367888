"""The per-clip data contract: blocks round-trip with their shapes under the stored column
names, a clip folder is complete or absent, and every missing piece is one line naming the
file, the column or stack, and the rule that writes it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scmcl.io import clip_data as cd


def _values(name: str, frames: int, size: int | None = None, seed: int = 0) -> np.ndarray:
    shape = cd.BLOCKS[name].shape
    shape = (size if shape[0] is None else shape[0], *shape[1:])
    return np.random.default_rng(seed).normal(size=(frames, *shape))


@pytest.mark.parametrize("name, size", [("box", None), ("landmarks", None), ("crop_matrix", None), ("align_matrix", None),
                                        ("eyes", 14), ("eyes", 34), ("shape", 100), ("exp", 7), ("pose", None), ("cam", None)])
def test_blocks_round_trip_with_their_shapes(tmp_path, name, size):
    values = _values(name, 5, size)
    path = tmp_path / "frames.parquet"
    cd.frames_table({name: values}, found=np.ones(5, bool)).to_parquet(path)
    back = cd.read_frame_table(path).block(name)
    assert back.shape == values.shape
    np.testing.assert_array_equal(back, values.astype(np.float32))  # stored as float32


def test_stored_column_names():
    landmarks, matrix = _values("landmarks", 2), _values("crop_matrix", 2)
    table = cd.frames_table({"box": _values("box", 2), "landmarks": landmarks, "crop_matrix": matrix})
    points = [f"lmk_{axis}_{j:02d}" for axis in "xy" for j in range(68)]
    assert list(table.columns) == ["frame", "box_00", "box_01", "box_02", "box_03", *points, *(f"crop_matrix_{j:02d}" for j in range(6))]
    np.testing.assert_array_equal(table["lmk_y_05"], landmarks[:, 5, 1].astype(np.float32))
    np.testing.assert_array_equal(table["crop_matrix_03"], matrix[:, 1, 0].astype(np.float32))  # row by row
    assert table.frame.tolist() == [0, 1]


def test_write_block_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match=r"block landmarks takes \(T, 68, 2\) values, got \(3, 67, 2\)"):
        cd.write_block({}, "landmarks", np.zeros((3, 67, 2)))


def test_missing_columns_name_the_file_and_the_fix(tmp_path):
    path = tmp_path / "frames.parquet"
    table = cd.frames_table({"exp": _values("exp", 3, 10), "pose": _values("pose", 3)})
    table.drop(columns=["exp_04", "pose_05"]).to_parquet(path)
    frames = cd.read_frame_table(path, cd.rerun("shard", "SYN01/happy"))
    fix = r"rerun preprocess_shard for SYN01/happy \(scmcl preprocess shard\)$"
    with pytest.raises(cd.ClipDataError, match=rf"^{path} has no column pose_05: {fix}"):
        frames.block("pose")
    with pytest.raises(cd.ClipDataError, match=rf"^{path} has no column exp_04: {fix}"):  # a gap, not a shorter block
        frames.block("exp")
    with pytest.raises(cd.ClipDataError, match=rf"^{path} has no column cam_00: {fix}"):
        frames.block("cam")
    with pytest.raises(cd.ClipDataError, match=rf"^{path} has no column fit_rms_px: {fix}"):
        frames.column("fit_rms_px")


def test_missing_tables_say_which_rule_writes_them(tmp_path):
    manifest = tmp_path / "manifest.parquet"
    with pytest.raises(cd.MissingInput, match=rf"^{manifest} is missing: rerun corpus_manifest \(scmcl corpus scan\)$"):
        cd.read_table(manifest, ["actor"], cd.rerun("manifest"))
    pd.DataFrame({"actor": ["SYN01"]}).to_parquet(manifest)
    with pytest.raises(cd.ClipDataError, match=rf"^{manifest} has no column video: rerun corpus_manifest"):
        cd.check_table(manifest, ["actor", "video"], cd.rerun("manifest"))
    with pytest.raises(cd.ClipDataError, match="^the manifest has no column video: rerun corpus_manifest"):
        cd.read_table(pd.DataFrame({"actor": ["SYN01"]}), ["video"], cd.rerun("manifest"), "the manifest")
    with pytest.raises(cd.MissingInput, match=r"expressions\.parquet is missing: rerun expression_table \(scmcl preprocess expressions\)$"):
        cd.read_expressions(tmp_path / "expressions.parquet")


def test_non_finite_blocks_and_unreadable_tables_are_one_line_naming_the_file(tmp_path):
    path = tmp_path / "frames.parquet"
    eyes = _values("eyes", 30, 14)
    eyes[[3, 4, 5, 8], 5, 1] = np.nan
    eyes[20, 6, 0] = np.inf
    cd.frames_table({"eyes": eyes, "pose": _values("pose", 30)}).to_parquet(path)
    frames = cd.read_frame_table(path, cd.rerun("shard"))
    frames.check_finite(["pose"])
    with pytest.raises(cd.ClipDataError, match=rf"^{path}: column eye_x_06 is not finite at frames 20: rerun preprocess_shard"):
        frames.check_finite(["pose", "eyes"])  # the first bad column in storage order: the x block, then the y block
    with pytest.raises(cd.ClipDataError, match=r"^the renderer's output is not finite at frames 0, 2, 4, 6, 8, 10, 12, 14, "
                                               r"\.\.\. \(10 frames\): retrain$"):
        cd.require_finite(np.where(np.arange(20)[:, None] % 2, 0.0, np.nan), "the renderer's output", "retrain")
    path.write_bytes(b"not a table")
    for read in (lambda: cd.read_expressions(path), lambda: cd.read_frame_table(path, cd.rerun("shard"))):
        with pytest.raises(cd.ClipDataError, match=rf"^{path} is not a readable Parquet table \(.*magic bytes.*\): it is "
                                                   "truncated or another format; rerun"):
            read()


def _clip(frames: int = 3, size: int = 8) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    stacks = {name: rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8) for name in cd.STACKS}
    return cd.frames_table({"box": _values("box", frames)}), stacks


def test_clip_folder_round_trip(tmp_path):
    table, stacks = _clip()
    written = cd.write_clip(tmp_path / "001", table, stacks)
    assert written == cd.clip_files(tmp_path / "001") and written[-1].name == cd.FRAMES_TABLE
    assert sorted((tmp_path / "001").iterdir()) == sorted(written)  # no partial files left
    for name in cd.STACKS:
        stack = cd.read_clip_stack(tmp_path / "001", name)
        assert isinstance(stack, np.memmap)
        np.testing.assert_array_equal(stack, stacks[name])
    np.testing.assert_array_equal(cd.read_clip_frames(tmp_path / "001").block("box"), table[cd.BLOCKS["box"].columns()].to_numpy())


def test_incomplete_clips_are_refused_and_missing_stacks_named(tmp_path):
    table, stacks = _clip()
    with pytest.raises(ValueError, match="a clip has the stacks"):
        cd.write_clip(tmp_path / "a", table, {k: v for k, v in stacks.items() if k != cd.EYES_ALIGNED})
    with pytest.raises(ValueError, match="stack masks: expected 3 uint8 images"):
        cd.write_clip(tmp_path / "a", table, stacks | {cd.MASKS: stacks[cd.MASKS][:2]})
    assert not (tmp_path / "a" / cd.FRAMES_TABLE).exists()
    nmfc = tmp_path / "a" / "nmfc_aligned.npy"
    with pytest.raises(cd.MissingInput, match=rf"^{nmfc} is missing: rerun preprocess_shard for SYN01/happy"):
        cd.read_clip_stack(tmp_path / "a", cd.NMFC_ALIGNED, cd.rerun("shard", "SYN01/happy"))
    with pytest.raises(ValueError, match="unknown image stack 'faces'"):
        cd.stack_path(tmp_path, "faces")


def test_expression_rows_are_zero_padded_to_50():
    exp = np.arange(12, dtype=np.float64).reshape(4, 3)
    jaw = np.full((4, 3), 0.25)
    rows = cd.expression_rows(("SYN01", "happy", 3, "001"), np.arange(4), jaw, exp)
    assert list(rows.columns) == cd.EXPRESSION_COLUMNS and len(cd.EXPRESSION_COLUMNS) == 4 + 1 + 3 + 50
    assert rows.actor.tolist() == ["SYN01"] * 4 and rows.level.tolist() == [3] * 4
    view = cd.expression_view51(rows)
    assert view.shape == (4, 51) and view.dtype == np.float32
    np.testing.assert_array_equal(view[:, 0], 0.25)
    np.testing.assert_array_equal(view[:, 1:4], exp)
    assert (view[:, 4:] == 0).all()

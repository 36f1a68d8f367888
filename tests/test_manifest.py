"""Clip manifests of real-dataset layouts: MEAD scanned from the files, RAVDESS mapped onto
MEAD's layout, and neither tree ever written to."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scmcl.cli import main
from scmcl.corpus.layout import ClipKey, audio_path, video_path
from scmcl.corpus.manifest import COLUMNS, ManifestError, scan_mead
from scmcl.corpus.ravdess import link_ravdess, parse_ravdess_name, ravdess_manifest

SIZE = 64


def _frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def _tone(seconds: float, sample_rate: int) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _write_clip(video: Path, frames: int, fps: float, sample_rate: int, separate: Path | None, seed: int) -> None:
    """A clip whose audio is either a separate file (``separate``) or muxed into the video."""
    from scmcl.io.media import write_audio, write_video

    video.parent.mkdir(parents=True, exist_ok=True)
    if separate is not None:
        separate.parent.mkdir(parents=True, exist_ok=True)
        write_audio(separate, _tone(frames / fps, sample_rate), sample_rate)
        write_video(video, _frames(frames, seed), fps)
    else:
        wav = video.with_name(f"{video.stem}.tmp.wav")
        write_audio(wav, _tone(frames / fps, sample_rate), sample_rate)
        write_video(video, _frames(frames, seed), fps, audio=wav)
        wav.unlink()


# (actor, emotion, level, clip, frames, fps, sample_rate, separate m4a?), in the manifest's order.
MEAD_CLIPS = [
    ("M001", "neutral", 1, "001", 8, 25.0, 16000, True),
    ("M001", "neutral", 1, "002", 10, 25.0, 16000, True),
    ("M001", "happy", 3, "001", 12, 25.0, 16000, True),
    ("M001", "happy", 3, "002", 9, 25.0, 16000, True),
    ("W002", "neutral", 1, "001", 11, 30.0, 22050, False),
    ("W002", "neutral", 1, "002", 8, 30.0, 22050, False),
    ("W002", "happy", 1, "001", 10, 30.0, 22050, False),
    ("W002", "happy", 3, "001", 12, 30.0, 16000, True),
    ("W002", "happy", 3, "002", 9, 30.0, 16000, True),
]


@pytest.fixture(scope="module")
def mead(tmp_path_factory) -> Path:
    """2 actors at 25 and 30 fps, separate m4a or muxed audio, plus things a scan must skip."""
    root = tmp_path_factory.mktemp("mead")
    for seed, (actor, emotion, level, clip, frames, fps, rate, separate) in enumerate(MEAD_CLIPS):
        key = ClipKey(emotion, level, clip)
        _write_clip(video_path(root, actor, key), frames, fps, rate, audio_path(root, actor, key) if separate else None, seed)
    first = video_path(root, "M001", ClipKey("neutral", 1, "001"))
    for skipped in (ClipKey("contempt", 3, "001"), ClipKey("neutral", 3, "001")):
        video_path(root, "M001", skipped).parent.mkdir(parents=True)
        shutil.copy(first, video_path(root, "M001", skipped))
    (first.parent / "notes.txt").write_text("stray")
    (first.parent / "001_old.mp4").write_bytes(b"not a clip")
    (root / "extras").mkdir()
    (root / "README.txt").write_text("not an actor")
    return root


@pytest.fixture(scope="module")
def mead_table(mead) -> pd.DataFrame:
    return scan_mead(mead, workers=4)


def _listing(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with its type, size and mtime: what a write would change."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(Path(folder) / name)
            out[os.path.relpath(Path(folder) / name, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def test_mead_rows_and_order(mead, mead_table):
    assert list(mead_table.columns) == list(COLUMNS)
    keys = list(zip(*(mead_table[c] for c in ("actor", "emotion", "level", "clip"))))
    assert keys == [c[:4] for c in MEAD_CLIPS]
    assert mead_table.index.tolist() == list(range(len(MEAD_CLIPS)))


def test_mead_values_come_from_the_files(mead, mead_table):
    for row, (actor, emotion, level, clip, frames, fps, rate, separate) in zip(mead_table.itertuples(), MEAD_CLIPS):
        key = ClipKey(emotion, level, clip)
        assert row.video == str(video_path(mead, actor, key))
        assert row.audio == str(audio_path(mead, actor, key) if separate else video_path(mead, actor, key))
        assert row.audio_source == ("m4a" if separate else "video")
        assert row.fps == pytest.approx(fps)
        assert row.frames == frames
        assert row.duration == pytest.approx(frames / fps, abs=1e-3)
        assert row.sample_rate == rate
    assert str(mead_table.level.dtype) == "int64" and str(mead_table.frames.dtype) == "int64"
    assert str(mead_table.sample_rate.dtype) == "int64" and str(mead_table.fps.dtype) == "float64"


def test_mead_filters(mead):
    only_w = scan_mead(mead, actors=["W002"])
    assert set(only_w.actor) == {"W002"} and len(only_w) == 5
    level3 = scan_mead(mead, levels=[3])
    assert set(zip(level3.emotion, level3.level)) == {("neutral", 1), ("happy", 3)}
    level1 = scan_mead(mead, actors=["W002"], emotions=["happy"], levels=[1])
    assert list(zip(level1.emotion, level1.level, level1["clip"])) == [("happy", 1, "001")]


def test_mead_errors_name_the_path(mead, tmp_path):
    with pytest.raises(ManifestError, match=str(mead / "M999")):
        scan_mead(mead, actors=["M001", "M999"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ManifestError, match=rf"{empty}.*video/front/<emotion>/level_<n>"):
        scan_mead(empty)
    with pytest.raises(ManifestError, match=str(tmp_path / "absent")):
        scan_mead(tmp_path / "absent")
    with pytest.raises(ManifestError, match="contempt"):
        scan_mead(mead, emotions=["contempt"])
    with pytest.raises(ManifestError, match=str(mead / "M001" / "video" / "front")):
        scan_mead(mead, actors=["M001"], emotions=["sad"])


def test_scan_cli_writes_the_table(mead, mead_table, tmp_path):
    out = tmp_path / "manifest.parquet"
    assert main(["corpus", "scan", str(mead), "--out", str(out), "--actors", "M001", "W002", "--levels", "1", "3"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), mead_table)
    inside = mead / "manifest.parquet"
    assert main(["corpus", "scan", str(mead), "--out", str(inside)]) == 1
    assert not inside.exists()


# name, frames, fps, sample rate: AV files carry their audio; audio-only files are wav.
RAVDESS_FILES = [
    ("Actor_01/01-01-01-01-01-01-01.mp4", 10, 30000 / 1001, 48000),  # neutral, s1 r1
    ("Actor_01/02-01-01-01-01-01-01.mp4", 10, 30000 / 1001, None),   # video-only twin: AV preferred
    ("Actor_01/01-01-06-01-01-01-01.mp4", 9, 30000 / 1001, 48000),   # fearful normal, s1 r1
    ("Actor_01/01-01-06-02-01-01-01.mp4", 11, 30000 / 1001, 48000),  # fearful strong, s1 r1
    ("Actor_01/01-01-07-02-02-02-01.mp4", 12, 25.0, 48000),          # disgust strong, s2 r2 ...
    ("Actor_01/03-01-07-02-02-02-01.wav", 12, 25.0, 16000),          # ... with its audio-only file
    ("Actor_01/01-01-02-02-01-01-01.mp4", 8, 25.0, 48000),           # calm: dropped
    ("Actor_01/01-02-03-02-01-01-01.mp4", 8, 25.0, 48000),           # song: dropped
    ("Actor_01/02-01-04-02-01-02-01.mp4", 8, 25.0, None),            # video-only, no audio: dropped
    ("Actor_02/01-01-01-01-02-01-02.mp4", 8, 30.0, 44100),           # neutral, s2 r1
    ("Actor_02/02-01-05-02-01-02-02.mp4", 9, 30.0, None),            # angry strong video-only, s1 r2 ...
    ("Actor_02/03-01-05-02-01-02-02.wav", 9, 30.0, 22050),           # ... with its audio-only file
    ("Actor_02/01-01-08-02-02-01-02.mp4", 10, 30.0, 44100),          # surprised strong, s2 r1
]

# actor, emotion, level, clip, video file, audio file ('' = the video), audio_source, frames, fps, rate
RAVDESS_ROWS = [
    ("Actor_01", "neutral", 1, "001", "01-01-01-01-01-01-01.mp4", "", "video", 10, 30000 / 1001, 48000),
    ("Actor_01", "disgusted", 3, "004", "01-01-07-02-02-02-01.mp4", "03-01-07-02-02-02-01.wav", "wav", 12, 25.0, 16000),
    ("Actor_01", "fear", 1, "001", "01-01-06-01-01-01-01.mp4", "", "video", 9, 30000 / 1001, 48000),
    ("Actor_01", "fear", 3, "001", "01-01-06-02-01-01-01.mp4", "", "video", 11, 30000 / 1001, 48000),
    ("Actor_02", "neutral", 1, "003", "01-01-01-01-02-01-02.mp4", "", "video", 8, 30.0, 44100),
    ("Actor_02", "angry", 3, "002", "02-01-05-02-01-02-02.mp4", "03-01-05-02-01-02-02.wav", "wav", 9, 30.0, 22050),
    ("Actor_02", "surprised", 3, "003", "01-01-08-02-02-01-02.mp4", "", "video", 10, 30.0, 44100),
]


@pytest.fixture(scope="module")
def ravdess(tmp_path_factory) -> Path:
    from scmcl.io.media import write_audio, write_video

    root = tmp_path_factory.mktemp("ravdess")
    for seed, (name, frames, fps, rate) in enumerate(RAVDESS_FILES):
        path = root / name
        path.parent.mkdir(exist_ok=True)
        if path.suffix == ".wav":
            write_audio(path, _tone(frames / fps, rate), rate)
        elif rate is None:
            write_video(path, _frames(frames, seed), fps)
        else:
            _write_clip(path, frames, fps, rate, None, seed)
    (root / "Actor_01" / "README.txt").write_text("stray")
    (root / "Actor_01" / "01-01-05-01-01-01-01.txt").write_text("a code, but not media")
    return root


def test_parse_ravdess_name():
    code = parse_ravdess_name("01-01-06-02-02-01-12.mp4")
    assert (code.modality, code.vocal_channel, code.emotion, code.intensity) == (1, 1, "fearful", 2)
    assert (code.statement, code.repetition, code.actor, code.actor_name) == (2, 1, 12, "Actor_12")
    assert code.key == ClipKey("fear", 3, "003")
    assert parse_ravdess_name("03-01-07-01-01-02-01").key == ClipKey("disgusted", 1, "002")
    assert parse_ravdess_name("01-01-02-01-01-01-01.mp4").key is None  # calm
    for bad in ("01-01-01-02-01-01-01.mp4", "04-01-03-01-01-01-01.mp4", "01-01-09-01-01-01-01.mp4",
                "01-01-03-01-03-01-01.mp4", "01-01-03-01-01-01.mp4", "001.mp4", "01-01-03-01-01-01-01.mp4.bak"):
        assert parse_ravdess_name(bad) is None, bad


def test_ravdess_mapping(ravdess):
    table = ravdess_manifest(ravdess, workers=4)
    assert list(table.columns) == [*COLUMNS, "source"]
    got = list(zip(*(table[c] for c in ("actor", "emotion", "level", "clip"))))
    assert got == [row[:4] for row in RAVDESS_ROWS]
    for row, (actor, _, _, _, video, audio, source, frames, fps, rate) in zip(table.itertuples(), RAVDESS_ROWS):
        assert row.video == row.source == str(ravdess / actor / video)
        assert row.audio == str(ravdess / actor / (audio or video))
        assert (row.audio_source, row.frames, row.sample_rate) == (source, frames, rate)
        assert row.fps == pytest.approx(fps)
    # The same statement/repetition shares its clip id across emotions and levels.
    actor1 = table[table.actor == "Actor_01"]
    assert set(actor1[actor1.emotion.isin(["neutral", "fear"])]["clip"]) == {"001"}


def test_ravdess_filters_and_errors(ravdess, tmp_path):
    strong = ravdess_manifest(ravdess, actors=["Actor_01"], levels=[3])
    assert list(zip(strong.emotion, strong.level)) == [("neutral", 1), ("disgusted", 3), ("fear", 3)]
    with pytest.raises(ManifestError, match=str(ravdess / "Actor_09")):
        ravdess_manifest(ravdess, actors=["Actor_09"])
    with pytest.raises(ManifestError, match=rf"{tmp_path}.*Actor_XX/MM-VV-EE-II-SS-RR-AA"):
        ravdess_manifest(tmp_path)
    misfiled = tmp_path / "misfiled" / "Actor_03"
    misfiled.mkdir(parents=True)
    shutil.copy(ravdess / "Actor_02" / "01-01-01-01-02-01-02.mp4", misfiled)
    with pytest.raises(ManifestError, match="names actor 02 but lies in Actor_03"):
        ravdess_manifest(misfiled.parent)


def test_ravdess_links_point_at_originals(ravdess, tmp_path):
    table = ravdess_manifest(ravdess)
    out = tmp_path / "mead_layout"
    linked = link_ravdess(table, out)
    link_ravdess(table, out)  # a rerun replaces its own links
    for row, original in zip(linked.itertuples(), table.itertuples()):
        assert Path(row.video).is_symlink() and os.readlink(row.video) == original.video
        assert Path(row.video).is_relative_to(out / row.actor / "video" / "front" / row.emotion / f"level_{row.level}")
        if row.audio_source == "wav":
            assert os.readlink(row.audio) == original.audio and Path(row.audio).parent.parts[-3] == "audio"
        else:
            assert row.audio == row.video
    assert not [p for p in out.rglob("*") if p.is_file() and not p.is_symlink()], "links only, never copies"
    # The link tree is a MEAD-layout root: scanning it gives the same clips.
    pd.testing.assert_frame_equal(scan_mead(out), linked.drop(columns="source"))
    with pytest.raises(ManifestError, match="read-only dataset tree"):
        link_ravdess(table, ravdess / "links")


def test_dataset_trees_stay_untouched(mead, ravdess, tmp_path):
    for root in (mead, ravdess):
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                os.chmod(Path(folder) / name, 0o555 if name in dirs else 0o444)
    before = {root: _listing(root) for root in (mead, ravdess)}
    assert main(["corpus", "scan", str(mead), "--out", str(tmp_path / "mead.parquet")]) == 0
    assert main(["corpus", "ravdess", str(ravdess), "--out", str(tmp_path / "ravdess.parquet"),
                 "--links", str(tmp_path / "links"), "--actors", "Actor_01", "Actor_02"]) == 0
    assert main(["corpus", "ravdess", str(ravdess), "--out", str(tmp_path / "r.parquet"),
                 "--links", str(ravdess / "links")]) == 1
    assert {root: _listing(root) for root in (mead, ravdess)} == before
    assert len(pd.read_parquet(tmp_path / "ravdess.parquet")) == len(RAVDESS_ROWS)

"""Clip manifests of real-dataset layouts: MEAD scanned from the files, RAVDESS mapped onto
MEAD's layout, and neither tree ever written to."""

from __future__ import annotations

import os
import shutil
import subprocess
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


# --- Faults a scan must report rather than turn into wrong rows (issue 9). ---

GOOD = ClipKey("neutral", 1, "001")


@pytest.fixture
def small_root(tmp_path) -> Path:
    """One actor with one sound clip (muxed audio, 25 fps, 16 kHz); tests add broken ones."""
    root = tmp_path / "small"
    _write_clip(video_path(root, "M001", GOOD), 10, 25.0, 16000, None, 0)
    return root


def _cut(source: Path, target: Path, fraction: float) -> None:
    """What `head -c` leaves of a file: its first ``fraction`` of bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])


def _scan_error(root: Path, capsys) -> str:
    """Run `scmcl corpus scan` expecting failure; its stderr, which must be one line."""
    assert main(["corpus", "scan", str(root), "--out", str(root.parent / "manifest.parquet")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert not (root.parent / "manifest.parquet").exists()
    return lines[0]


def test_truncated_video_is_an_error_naming_it(small_root, tmp_path, capsys):
    long = tmp_path / "long.mp4"
    _write_clip(long, 50, 25.0, 16000, None, 1)
    cut = video_path(small_root, "M001", ClipKey("neutral", 1, "002"))
    _cut(long, cut, 0.5)
    line = _scan_error(small_root, capsys)
    assert line.startswith(f"scmcl corpus: error: 1 of 2 clips cannot be used: {cut}: only ")
    assert "of the 50 video frames its header lists decode" in line and "re-extract or replace it" in line


def test_unreadable_video_is_an_error_naming_it(small_root, capsys):
    broken = video_path(small_root, "M001", ClipKey("neutral", 1, "002"))
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 and then nothing")
    line = _scan_error(small_root, capsys)
    assert f"ffprobe cannot read {broken}" in line and "re-extract or replace it" in line


def test_video_shorter_than_its_audio_is_an_error_with_both_lengths(small_root, tmp_path, capsys):
    from scmcl.io.media import write_audio, write_video

    # The video stream stops after 10 frames (0.4 s); the muxed audio runs on to 2 s.
    speech = tmp_path / "speech.wav"
    write_audio(speech, _tone(2.0, 16000), 16000)
    short = video_path(small_root, "M001", ClipKey("neutral", 1, "002"))
    write_video(short, _frames(10, 2), 25.0, audio=speech)
    line = _scan_error(small_root, capsys)
    assert (f"{short}: video lasts 0.40 s (10 frames at 25 fps) but its audio track lasts 2.00 s, "
            "more than 2 frames apart: re-extract or replace the clip, or move it out of the dataset tree") in line


def test_separate_audio_of_another_length_and_cut_audio_are_errors(small_root, tmp_path):
    longer = ClipKey("happy", 3, "001")
    _write_clip(video_path(small_root, "M001", longer), 10, 25.0, 16000, audio_path(small_root, "M001", longer), 3)
    from scmcl.io.media import write_audio

    write_audio(audio_path(small_root, "M001", longer), _tone(1.0, 16000), 16000)
    cut = ClipKey("happy", 3, "002")
    _write_clip(video_path(small_root, "M001", cut), 50, 25.0, 16000, tmp_path / "full.m4a", 4)
    # Index first (faststart), so the cut file still opens and its header lists every frame.
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "full.m4a"), "-c", "copy", "-movflags", "+faststart",
                    str(tmp_path / "indexed.m4a")], check=True)
    _cut(tmp_path / "indexed.m4a", audio_path(small_root, "M001", cut), 0.4)
    with pytest.raises(ManifestError) as err:
        scan_mead(small_root)
    message = str(err.value)
    assert message.startswith("2 of 3 clips cannot be used: ")
    assert f"its audio {audio_path(small_root, 'M001', longer)} lasts 1.00 s" in message
    assert f"{audio_path(small_root, 'M001', cut)}: only " in message and "audio frames its header lists" in message


def test_sound_clips_pass_the_length_checks(small_root, mead_table):
    assert scan_mead(small_root).frames.tolist() == [10]
    assert len(mead_table) == len(MEAD_CLIPS)  # 25/30 fps, 16-22.05 kHz, m4a or muxed: all within tolerance


def test_skipped_paths_are_counted_in_one_warning(small_root, caplog):
    front = small_root / "M001" / "video" / "front"
    good = video_path(small_root, "M001", GOOD)
    for folder in ("Happy/level_3", "Sad/level_3", "contempt/level_1", "neutral/level_3"):
        (front / folder).mkdir(parents=True)
        shutil.copy(good, front / folder / "001.mp4")
    (good.parent / "001 copy.mp4").write_bytes(good.read_bytes())
    (good.parent / ".001.mp4.swp").write_bytes(b"editor file: hidden, never data")
    (small_root / "misc").mkdir()
    with caplog.at_level("WARNING", logger="scmcl.corpus.manifest"):
        table = scan_mead(small_root)
    assert table.video.tolist() == [str(good)]
    [record] = caplog.records
    assert record.getMessage() == (
        f"skipped 6 paths under {small_root}: "
        "1 emotion folder 'Happy' (MEAD uses lower case: rename to 'happy') (e.g. M001/video/front/Happy); "
        "1 emotion folder 'Sad' (MEAD uses lower case: rename to 'sad') (e.g. M001/video/front/Sad); "
        "1 emotion folder 'contempt' (not one of neutral, angry, disgusted, fear, happy, sad, surprised) "
        "(e.g. M001/video/front/contempt); "
        "1 folder without video/front (not an actor) (e.g. misc); "
        "1 neutral folder 'level_3' (MEAD's neutral is level_1 only) (e.g. M001/video/front/neutral/level_3); "
        "1 not a clip name (<digits>.mp4) (e.g. M001/video/front/neutral/level_1/001 copy.mp4)")
    caplog.clear()
    with caplog.at_level("WARNING", logger="scmcl.corpus.manifest"):
        scan_mead(small_root, actors=["M001"], emotions=["neutral"])
    # Happy/ and Sad/ would not be read even if renamed, so they are not reported; contempt/ still is.
    assert "'Happy'" not in caplog.text and "'Sad'" not in caplog.text and "'contempt'" in caplog.text


def test_clean_tree_scans_without_warnings(small_root, caplog):
    with caplog.at_level("WARNING"):
        scan_mead(small_root)
    assert not caplog.records


def test_ravdess_skipped_files_are_counted(ravdess, tmp_path, caplog):
    root = tmp_path / "ravdess"
    (root / "Actor_01").mkdir(parents=True)
    (root / "Extras").mkdir()
    source = ravdess / "Actor_01" / "01-01-01-01-01-01-01.mp4"
    for name in ("01-01-01-01-01-01-01.mp4", "01-01-03-01-01-01.mp4", "01-01-09-01-01-01-01.mp4", "clip.mp4"):
        shutil.copy(source, root / "Actor_01" / name)
    (root / "Actor_01" / "notes.txt").write_text("stray")
    with caplog.at_level("WARNING", logger="scmcl.corpus.manifest"):
        table = ravdess_manifest(root)
    assert table.video.tolist() == [str(root / "Actor_01" / "01-01-01-01-01-01-01.mp4")]
    [record] = caplog.records
    assert record.getMessage() == (
        f"skipped 5 paths under {root}: "
        "3 not a valid RAVDESS file name (MM-VV-EE-II-SS-RR-AA) (e.g. Actor_01/01-01-03-01-01-01.mp4); "
        "1 folder not named Actor_XX (e.g. Extras); "
        "1 not a media file (.mp4, .wav, .m4a) (e.g. Actor_01/notes.txt)")


def test_ravdess_fixture_reports_its_lone_video_only_file(ravdess, caplog):
    with caplog.at_level("WARNING", logger="scmcl.corpus.manifest"):
        ravdess_manifest(ravdess)
    assert ("1 video-only file without its audio-only (03-...) or audio-visual (01-...) twin "
            "(e.g. Actor_01/02-01-04-02-01-02-01.mp4)") in caplog.text
    assert "2 not a media file" in caplog.text  # README.txt and a code with a .txt suffix


def test_scan_out_directory_is_one_line_before_scanning(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    # The root does not exist: the error is about --out, so the output is checked first.
    assert main(["corpus", "scan", str(tmp_path / "absent"), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (f"scmcl corpus: error: --out {out} is a directory: give the manifest's "
                                       f"file name, e.g. {out / 'manifest.parquet'}\n")
    assert main(["corpus", "ravdess", str(tmp_path / "absent"), "--out", str(out)]) == 1
    assert "is a directory" in capsys.readouterr().err

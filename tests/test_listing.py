"""listing_digest: the cheap fingerprint that tells the workflow a dataset tree changed."""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import pytest

from scmcl.corpus.listing import listing_digest

MEAD_FILES = [
    "M001/video/front/neutral/level_1/001.mp4",
    "M001/video/front/happy/level_3/001.mp4",
    "M001/audio/neutral/level_1/001.m4a",
    "M001/audio/happy/level_3/001.m4a",
    "W002/video/front/neutral/level_1/001.mp4",
    "W002/audio/neutral/level_1/001.m4a",
]
RAVDESS_FILES = ["Actor_01/01-01-01-01-01-01-01.mp4", "Actor_01/03-01-01-01-01-01-01.wav",
                 "Actor_02/01-01-03-02-01-01-02.mp4"]
MTIME_NS = 1_700_000_000_000_000_000


def _tree(root: Path, names: list[str]) -> Path:
    """Small files with fixed contents and mtimes, so only a test's own change can differ."""
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (i + 1))
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return root


@pytest.fixture
def mead(tmp_path) -> Path:
    return _tree(tmp_path / "mead", MEAD_FILES)


def test_untouched_tree_keeps_its_digest(mead):
    first = listing_digest(mead, ["M001", "W002"])
    assert listing_digest(mead, ["W002", "M001"]) == first
    assert listing_digest(mead) == first  # all actor folders = both of them
    assert len(first) == 64


@pytest.mark.parametrize("change", ["rewrite", "touch", "rename_folder", "add", "remove", "audio"])
def test_clip_changes_change_the_digest(mead, change):
    before = listing_digest(mead, ["M001"])
    clip = mead / MEAD_FILES[1]
    if change == "rewrite":  # re-extracted: other size, same mtime
        clip.write_bytes(b"a longer re-extracted clip")
        os.utime(clip, ns=(MTIME_NS, MTIME_NS))
    elif change == "touch":  # replaced by a copy of the same size
        os.utime(clip, ns=(MTIME_NS, MTIME_NS + 1))
    elif change == "rename_folder":  # happy/ renamed to Happy/
        os.rename(mead / "M001/video/front/happy", mead / "M001/video/front/Happy")
    elif change == "add":
        _tree(mead, ["M001/video/front/happy/level_3/002.mp4"])
    elif change == "remove":
        clip.unlink()
    else:
        (mead / MEAD_FILES[3]).unlink()
    assert listing_digest(mead, ["M001"]) != before


def test_other_actors_and_non_media_files_do_not_count(mead):
    before = listing_digest(mead, ["M001"])
    _tree(mead, ["W002/video/front/happy/level_3/001.mp4", "M001/video/front/neutral/level_1/notes.txt"])
    assert listing_digest(mead, ["M001"]) == before
    assert listing_digest(mead, ["M001", "W002"]) != listing_digest(mead, ["M001"])


def test_missing_actor_or_root_is_hashed_not_raised(mead, tmp_path):
    absent = listing_digest(mead, ["M001", "M999"])
    assert absent != listing_digest(mead, ["M001"])
    _tree(mead, ["M999/video/front/neutral/level_1/001.mp4"])
    assert listing_digest(mead, ["M001", "M999"]) != absent
    assert listing_digest(tmp_path / "nowhere", ["M001"]) != listing_digest(tmp_path / "elsewhere", ["M001"])


def test_same_files_under_another_root_differ(mead, tmp_path):
    copy = _tree(tmp_path / "copy", MEAD_FILES)
    assert listing_digest(copy, ["M001"]) != listing_digest(mead, ["M001"])


def test_ravdess_layout(tmp_path):
    root = _tree(tmp_path / "ravdess", RAVDESS_FILES + ["Actor_01/README.txt", "Extras/01-01-01-01-01-01-03.mp4"])
    before = listing_digest(root, layout="ravdess")
    assert listing_digest(root, ["Actor_01", "Actor_02"], layout="ravdess") == before
    (root / "Extras" / "01-01-01-01-01-01-03.mp4").unlink()  # not an actor folder
    assert listing_digest(root, layout="ravdess") == before
    (root / RAVDESS_FILES[1]).write_bytes(b"new audio")
    assert listing_digest(root, layout="ravdess") != before
    with pytest.raises(ValueError, match="unknown dataset layout 'voxceleb': use mead or ravdess"):
        listing_digest(root, layout="voxceleb")


def test_symlinked_clips_count_their_targets(tmp_path):
    originals = _tree(tmp_path / "originals", ["a.mp4"])
    link = tmp_path / "links" / "M001/video/front/neutral/level_1/001.mp4"
    link.parent.mkdir(parents=True)
    link.symlink_to(originals / "a.mp4")
    before = listing_digest(tmp_path / "links")
    (originals / "a.mp4").write_bytes(b"replaced original")
    assert listing_digest(tmp_path / "links") != before
    (originals / "a.mp4").unlink()
    assert listing_digest(tmp_path / "links") != before  # dangling: listed, not an error


def test_never_opens_a_file(mead, monkeypatch):
    expected = listing_digest(mead)

    def refuse(*args, **kwargs):
        raise AssertionError(f"opened {args[0]}")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(os, "open", refuse)
    assert listing_digest(mead) == expected


def test_link_back_up_the_tree_ends(mead):
    before = listing_digest(mead, ["M001"])
    (mead / "M001/video/front/neutral/level_1/loop").symlink_to(mead / "M001/video")
    assert listing_digest(mead, ["M001"]) == before  # walked once, not forever: the loop holds no new clip

"""The paper protocol's table from feature files: FAD pooled over actors, CSIM per actor then
averaged, LSE per video then averaged, a mean row, and the columns of a skipped network absent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scmcl.evaluate.paper import Entry, PaperWeights, paper_table


def _features(path, rng, frames=30, shift=0.0, lse=None, networks=("arcface", "efficientface")):
    data = {"frames": np.array(frames)}
    if "arcface" in networks:
        data["arcface"] = rng.normal(size=(frames, 512)) + shift
    if "efficientface" in networks:  # one expression held: every frame the same feature
        data["efficientface"] = np.repeat(rng.normal(size=(1, 1024)), frames, axis=0)
    if lse is not None:
        data["lse"] = np.array(lse, float)
    np.savez(path, **data)
    return str(path)


def test_identical_real_and_edited_frames_score_fad_zero_and_csim_one_for_a_held_expression(tmp_path):
    entries = []
    for emotion in ("neutral", "happy"):
        for actor in ("A", "B"):
            real = _features(tmp_path / f"real_{actor}_{emotion}.npz", np.random.default_rng(hash((actor, emotion)) % 1000))
            entries.append(Entry("real", actor, emotion, real))
            for method, lse in (("ned", [8.0, 2.0, 1]), ("scmcl", [7.0, 3.0, 0])):
                entries.append(Entry(method, actor, emotion, _copy(real, tmp_path / f"{method}_{actor}_{emotion}.npz", lse)))
    table = paper_table(entries, tmp_path / "table.tsv")
    assert table.emotion.tolist() == ["neutral", "happy", "mean"]
    assert table["NED FAD"].abs().max() < 1e-3 and table["NED+SCMCL CSIM"].to_numpy() == pytest.approx(1.0)
    assert table["NED LSE-D"].tolist() == pytest.approx([8.0] * 3) and table["NED+SCMCL LSE-C"].tolist() == pytest.approx([3.0] * 3)
    assert pd.read_csv(tmp_path / "table.tsv", sep="\t").columns.tolist() == table.columns.tolist()


def _copy(source, path, lse):
    with np.load(source) as data:
        np.savez(path, **{key: data[key] for key in data.files}, lse=np.array(lse, float))
    return str(path)


def test_fad_is_the_squared_shift_of_the_means_and_a_skipped_network_has_no_columns(tmp_path):
    real = _features(tmp_path / "real.npz", np.random.default_rng(0), frames=600, networks=("arcface",))
    entries = [Entry("real", "A", "happy", real)]
    with np.load(real) as data:
        features = data["arcface"]
    for method, shift in (("ned", 0.5), ("scmcl", 1.0)):  # the same frames moved: equal covariances
        np.savez(tmp_path / f"{method}.npz", frames=np.array(600), arcface=features + shift)
        entries.append(Entry(method, "A", "happy", str(tmp_path / f"{method}.npz")))
    table = paper_table(entries, tmp_path / "table.tsv").set_index("emotion")
    assert table.columns.tolist() == ["NED FAD", "NED+SCMCL FAD"]  # no CSIM, no LSE: their networks were skipped
    assert table.loc["happy", "NED FAD"] == pytest.approx(512 * 0.25, rel=1e-3)
    assert table.loc["happy", "NED+SCMCL FAD"] == pytest.approx(512 * 1.0, rel=1e-3)


def test_edits_without_real_frames_of_their_actor_are_an_error(tmp_path):
    rng = np.random.default_rng(1)
    entries = [Entry("real", "A", "happy", _features(tmp_path / "real.npz", rng)),
               Entry("ned", "B", "happy", _features(tmp_path / "ned.npz", rng))]
    with pytest.raises(ValueError, match="no real frames of B in happy"):
        paper_table(entries, tmp_path / "table.tsv")


def test_each_missing_network_file_is_one_line_naming_it_and_its_source(tmp_path):
    present = tmp_path / "resnet18_110.pth"
    present.write_bytes(b"x")
    lines = PaperWeights(str(present), "", str(tmp_path / "syncnet_v2.model")).skipped()
    assert len(lines) == 2
    assert lines[0].startswith("CSIM skipped (evaluate.paper.weights.efficientface is not set)")
    assert "zengqunzhao/EfficientFace" in lines[0]
    assert f"{tmp_path / 'syncnet_v2.model'} does not exist" in lines[1] and "joonson/syncnet_python" in lines[1]

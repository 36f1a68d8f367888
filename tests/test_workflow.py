"""Static checks of the workflow: lint, the default DAG, the rule graph."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import REPO, run_cmd, run_cmds

pytestmark = pytest.mark.workflow


def test_lint_is_clean():
    result = run_cmd(["snakemake", "--lint"])
    assert result.returncode == 0, result.stdout + result.stderr


def _job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def _merged(config: dict, overrides: dict) -> dict:
    """``config`` updated by ``overrides`` as Snakemake merges config files (nested dicts key by key)."""
    out = dict(config)
    for key, value in overrides.items():
        out[key] = _merged(config.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _reference_edits(config: dict) -> set[tuple[str, str, str]]:
    """(actor, emotion, reference) of the reference-driven edits: the manipulator's own (first
    actor, first emotion, last actor) and each result video's of edit.references."""
    actors, emotions = config["actors"], [e for e in config["emotions"] if e != "neutral"]
    rendered = config["renderer"]["actors"] or actors
    edit = config.get("edit", {})
    styled = edit.get("reference_emotions") or emotions
    results = {(a, e, r) for a in rendered for e in styled for r in edit.get("references", [])}
    return results | {(actors[0], emotions[0], actors[-1])}


def _expected_jobs(config: dict) -> dict[str, int]:
    """Every rule's job count, from the config: one job per actor, per (actor, emotion) shard,
    per (visual metric, actor); the SCMC actors are generated and preprocessed too. The paired
    ground truth and the edits are per actor of ``actors``, test clip and non-neutral emotion."""
    actors = config["actors"]
    preprocessed = list(dict.fromkeys(actors + (config["scmc"].get("actors") or actors)))
    edited = len(actors) * len(config.get("test_clips", ["003"])) * (len(config["emotions"]) - 1)
    once = ("synth_head", "corpus_manifest", "align_audio", "train_scmc_audio", "train_scmc_expression",
            "train_scmc_image", "finetune_scmc_expression", "finetune_scmc_image", "paired_manifest",
            "train_classifier", "manipulator_ablation", "all")
    rendered = len(config["renderer"]["actors"] or actors)
    edit = config.get("edit", {})
    styled = len(edit.get("reference_emotions") or [e for e in config["emotions"] if e != "neutral"])
    results = rendered * (len(config["emotions"]) - 1 + styled * len(edit.get("references", [])))
    evaluated = rendered * (len(config["emotions"]) - 1)  # each also rendered by ned and from the naive edit
    evaluation = {"train_face_classifier": 1, "naive_edit": evaluated, "evaluate_row": 5 * rendered, "evaluation_table": 1,
                  "contact_sheet": evaluated, "training_curves": 5 + 2 + 2 * rendered, "videos_page": 1}
    return {**evaluation, **dict.fromkeys(once, 1), "synth_corpus": len(preprocessed), "expression_table": len(preprocessed),
            "actor_identity": len(preprocessed),
            "preprocess_shard": len(preprocessed) * len(config["emotions"]), "scmc_dists": 2 * len(actors),
            "paired_corpus": edited, "paired_preprocess_shard": len(actors) * (len(config["emotions"]) - 1),
            "paired_expression_table": len(actors), "train_manipulator": 2, "manipulate": 2 * edited,
            "train_renderer": 2 * rendered, "evaluate_renderer": 2 * rendered, "edit_video": results + 2 * evaluated,
            "result_video": results,
            "manipulate_reference": len(_reference_edits(config))}


@pytest.mark.parametrize("overrides", [
    {},
    {"actors": ["SYN02", "SYN05", "SYN07", "SYN11"], "emotions": ["neutral", "happy", "sad"], "renderer": {"actors": []},
     "edit": {"references": []}},
    {"actors": ["SYN01"], "scmc": {"actors": ["SYN02", "SYN03"]}},
], ids=["demo", "four_actors_three_emotions", "other_scmc_actors"])
def test_dry_run_schedules_every_rule_per_config(overrides, tmp_path):
    extra = tmp_path / "overrides.yaml"
    extra.write_text(yaml.safe_dump(overrides))
    result = run_cmd(["snakemake", "-n", "--forceall", "--configfile", str(REPO / "config/config.yaml"), str(extra)])
    assert result.returncode == 0, result.stderr
    demo = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert _job_counts(result.stdout) == _expected_jobs(_merged(demo, overrides))


def test_a_released_renderer_is_imported_instead_of_trained(tmp_path):
    released = tmp_path / "05_net_G.pth"
    released.write_bytes(b"checked by the import job")
    extra = tmp_path / "overrides.yaml"
    extra.write_text(yaml.safe_dump({"renderer": {"weights": {"ned": {"SYN01": str(released)}}}}))
    result = run_cmd(["snakemake", "-n", "--forceall", "--configfile", str(REPO / "config/config.yaml"), str(extra)])
    assert result.returncode == 0, result.stderr
    counts = _job_counts(result.stdout)
    assert counts["import_renderer"] == 1 and counts["train_renderer"] == 1  # scmcl still fine-tunes, from the release
    assert f"scmcl renderer import ned {released}" in result.stdout
    assert "--init work/renderer/released/ned/SYN01.pth" in result.stdout


def test_a_renderer_actor_outside_actors_is_one_error():
    result = run_cmd(["snakemake", "-n", "--config", "renderer={'actors': ['SYN09']}"])
    assert result.returncode != 0
    assert "renderer.actors names SYN09, which is not in actors (SYN01, SYN02)" in result.stdout + result.stderr


def test_a_result_the_config_does_not_have_is_one_error_naming_what_is_configured():
    actor, emotion, reference_emotion = run_cmds(*[["snakemake", "-n", target] for target in (
        "results/M003/edited_happy.mp4", "results/SYN01/edited_bored_ref_SYN03.mp4", "results/SYN01/edited_sad_ref_SYN02.mp4")])
    assert actor.returncode != 0
    assert ("results/M003/edited_happy.mp4: actor M003 has no renderer (renderer.actors: SYN01; add it there and to `actors`)"
            in actor.stdout + actor.stderr)
    text = emotion.stdout + emotion.stderr
    assert emotion.returncode != 0 and "emotion bored is not a configured non-neutral emotion" in text
    assert "reference actor SYN03 is not in edit.references (SYN02)" in text
    assert reference_emotion.returncode != 0
    assert "sad is not in edit.reference_emotions (happy)" in reference_emotion.stdout + reference_emotion.stderr


def test_single_target_builds_only_its_actor():
    target = "resources/synthetic/SYN02/video/front/happy/level_3/001.mp4"
    result = run_cmd(["snakemake", "-n", "--forceall", target])
    assert result.returncode == 0, result.stderr
    assert "--actor SYN02" in result.stdout and "--actor SYN01" not in result.stdout


def test_scmc_actors_are_preprocessed_but_get_no_distances():
    result = run_cmd(["snakemake", "-n", "--forceall", "--config", "actors=[SYN01]", "scmc={'actors': ['SYN02', 'SYN03']}"])
    assert result.returncode == 0, result.stderr
    assert "--actors SYN02 SYN03 --pairs" in result.stdout  # the metric trains on scmc.actors only
    assert "dists_expression/SYN02" not in result.stdout and "work/preprocess/SYN03/expressions.parquet" in result.stdout


def test_rulegraph_renders_with_dot(tmp_path):
    result = run_cmd(["snakemake", "--rulegraph"])
    assert result.returncode == 0, result.stderr
    assert "synth_corpus" in result.stdout and "synth_head" in result.stdout
    svg = run_cmd(["bash", "-c", f"snakemake --rulegraph | dot -Tsvg > {tmp_path}/rules.svg"])
    assert svg.returncode == 0 and (tmp_path / "rules.svg").read_text().lstrip().startswith("<?xml")

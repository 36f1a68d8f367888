"""The shipped paper configs as a user runs them: config/mead.yaml and config/ravdess.yaml
themselves, only their placeholder paths filled in, dry-run on generated trees of symlinks in
each dataset's layout (a paper config means what it says plus the schema's defaults: none of the
demo config's actors or demo-size networks leak in); and config/mead.yaml run for real through
its data stages on a small MEAD-layout tree of the built-in corpus, with tests/data/paper_overlay.yaml
shrinking it (the paper's metrics run for real in the suite's shared run: test_paper_metrics)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from scmcl.config import load_config
from scmcl.options import config_value, schema_default, settings_flags
from tests.conftest import REPO, run_cmd, snakemake_args

pytestmark = pytest.mark.workflow

MEAD_EMOTIONS = ["neutral", "angry", "disgusted", "fear", "happy", "sad", "surprised"]


def fill_placeholders(config: Path, out: Path, paths: dict[str, Path]) -> Path:
    """``config``'s text with each placeholder path replaced; every uncommented /path/to must go."""
    text = config.read_text()
    for placeholder, path in paths.items():
        text = text.replace(placeholder, str(path))
    left = [line for line in text.splitlines() if "/path/to" in line.split("#")[0]]
    assert not left, f"placeholders left in {config.name}: {left}"
    out.write_text(text)
    return out


def mead_link_tree(root: Path, actors: list[str], target: Path, clips=("001", "002", "003", "004", "030")) -> Path:
    """MEAD's layout (neutral at level 1, the other emotions at levels 1-3), every file a symlink."""
    for actor in actors:
        for emotion in MEAD_EMOTIONS:
            for level in [1] if emotion == "neutral" else [1, 2, 3]:
                for kind, suffix in (("video/front", "mp4"), ("audio", "m4a")):
                    folder = root / actor / kind / emotion / f"level_{level}"
                    folder.mkdir(parents=True, exist_ok=True)
                    for clip in clips:
                        (folder / f"{clip}.{suffix}").symlink_to(target)
    return root


def ravdess_link_tree(root: Path, actors: int, target: Path) -> Path:
    """RAVDESS's Actor_XX folders of speech files (audio-visual, video-only and audio-only), symlinks."""
    for actor in range(1, actors + 1):
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for emotion in range(1, 9):
            for intensity in [1] if emotion == 1 else [1, 2]:
                for statement in (1, 2):
                    for repetition in (1, 2):
                        for modality, suffix in ((1, "mp4"), (2, "mp4"), (3, "wav")):
                            name = f"{modality:02d}-01-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}"
                            (folder / f"{name}.{suffix}").symlink_to(target)
    return root


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> dict[str, Path]:
    """The files a user supplies: FLAME's model and DECA's landmark embedding (the built-in head's,
    in their formats), a DECA weight file (a dry run does not open it) and one media file."""
    from scmcl.corpus.head import build_head
    from scmcl.face3d.flame_file import save_flame_model, save_landmark_embedding

    folder = tmp_path_factory.mktemp("user_files")
    model, landmarks = build_head(seed=0)
    save_flame_model(folder / "generic_model.pkl", model)
    save_landmark_embedding(folder / "landmark_embedding.npy", landmarks)
    (folder / "deca_model.tar").write_bytes(b"deca")
    (folder / "clip.mp4").write_bytes(b"media")
    return {"/path/to/FLAME2020/generic_model.pkl": folder / "generic_model.pkl",
            "/path/to/DECA/data/landmark_embedding.npy": folder / "landmark_embedding.npy",
            "/path/to/DECA/data/deca_model.tar": folder / "deca_model.tar", "media": folder / "clip.mp4"}


def _dry_run(config: Path, workdir: Path, *extra: str) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Job counts and each rule's shell commands of `snakemake -n -p --configfile config`."""
    result = run_cmd(["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "-n", "-p",
                      "--configfile", str(config), *extra])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout.split("Job stats:")[1].split("total")[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    commands: dict[str, list[str]] = {}
    rule = None
    for line in result.stdout.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line):
            rule = match.group(1)
        elif line.startswith("Shell command: ") and rule:
            commands.setdefault(rule, []).append(line.removeprefix("Shell command: "))
    return counts, commands


def _paper_jobs(preprocessed: int, actors: int, emotions: int) -> dict[str, int]:
    """The paper DAG without released weights: every actor preprocessed per emotion (the SCMC actors
    too), the SCMC metric, both manipulators, two renderers per actor, and each actor's first test
    clip edited into every other emotion by NED+SCMCL (label-driven) plus one reference-driven
    edit of the manipulator stage. No paired truth, no evaluation: real data has none."""
    edits = actors * (emotions - 1)
    return {"corpus_manifest": 1, "align_audio": 1, "preprocess_shard": preprocessed * emotions,
            "expression_table": preprocessed, "train_scmc_audio": 1, "train_scmc_expression": 1, "train_scmc_image": 1,
            "finetune_scmc_expression": 1, "finetune_scmc_image": 1, "scmc_dists": 2 * actors, "train_classifier": 1,
            "train_manipulator": 2, "manipulate": edits, "manipulate_reference": 1, "train_renderer": 2 * actors,
            "evaluate_renderer": 2 * actors, "edit_video": edits, "result_video": edits, "all": 1}


#: The trainers' rules and the schema sections whose every setting reaches them as flags.
TRAINER_SECTIONS = {
    "train_scmc_audio": ["scmc.train_audio"], "train_scmc_expression": ["scmc.train_expression"],
    "train_scmc_image": ["scmc.train_image"], "finetune_scmc_expression": ["scmc.finetune_expression"],
    "finetune_scmc_image": ["scmc.finetune_image"], "train_classifier": ["manipulator.classifier"],
    "train_manipulator": ["manipulator.networks", "manipulator.train"],
    "train_renderer": ["renderer.networks", "renderer.train"]}


def _check_trainers_get_the_schema(config: dict, commands: dict[str, list[str]]) -> None:
    """Every trainer's command carries its sections' settings as the config file and the schema
    give them (the paper configs set none of these), and the networks are NED's and the steps
    the paper's, not the demo's."""
    for rule, sections in TRAINER_SECTIONS.items():
        for section in sections:
            assert config_value(config, section) == schema_default(section), section
            for command in commands[rule]:
                assert settings_flags(config, section) in command, (rule, section, command)
    renderer = " ".join(commands["train_renderer"])
    assert "--ngf 64 " in renderer and "--blocks 9 " in renderer and "--ngf 16 " not in renderer
    assert f"--steps {schema_default('renderer.ned')['steps']} " in renderer
    audio = commands["train_scmc_audio"][0]
    assert f"--steps {schema_default('scmc.train_audio')['steps']} " in audio and "--steps 200 " not in audio
    assert "--generator-frame-widths 512 512 " in commands["train_manipulator"][0]
    assert all("--device cuda" in command for rule in TRAINER_SECTIONS for command in commands[rule])


def test_mead_config_plans_the_paper_on_a_mead_tree(user_files, tmp_path):
    ours = yaml.safe_load((REPO / "config/mead.yaml").read_text())
    actors = ours["actors"] + ours["scmc"]["actors"]
    assert (len(ours["actors"]), len(actors)) == (6, 42)
    root = mead_link_tree(tmp_path / "MEAD", actors, user_files["media"])
    config = fill_placeholders(REPO / "config/mead.yaml", tmp_path / "mead.yaml", {"/path/to/MEAD": root, **user_files})
    counts, commands = _dry_run(config, tmp_path / "run")
    assert counts == _paper_jobs(preprocessed=42, actors=6, emotions=7)
    _check_trainers_get_the_schema(load_config(config), commands)
    assert "--test-clips 003 030" in commands["train_renderer"][0]


def test_ravdess_config_plans_the_paper_on_a_ravdess_tree(user_files, tmp_path):
    root = ravdess_link_tree(tmp_path / "RAVDESS", 6, user_files["media"])
    config = fill_placeholders(REPO / "config/ravdess.yaml", tmp_path / "ravdess.yaml", {"/path/to/RAVDESS": root, **user_files})
    counts, commands = _dry_run(config, tmp_path / "run")
    assert counts == _paper_jobs(preprocessed=6, actors=6, emotions=7)
    _check_trainers_get_the_schema(load_config(config), commands)
    # the edit's source video comes from the manifest, never from a MEAD path rebuilt from the config
    for command in commands["edit_video"]:
        assert "--manifest work/corpus/manifest.parquet" in command and "/video/front/" not in command
    # clip ids need not be numbers, and the source clip's emotion and level are one setting
    counts, commands = _dry_run(config, tmp_path / "run", "--config", "test_clips=[take_b]",
                                "edit={source: {emotion: neutral, level: 1}}")
    assert counts["edit_video"] == 36 and all("--clip take_b " in c for c in commands["manipulate"])
    assert all("--source-emotion neutral --level 1 " in c for c in commands["manipulate"])


def test_the_demo_config_is_what_snakemake_runs_without_options(tmp_path):
    """`snakemake` alone runs the demo (config/config.yaml); a --configfile replaces it."""
    result = run_cmd(["snakemake", "-n", "--forceall", "renderer"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "work/renderer/SYN01/ned.eval.tsv" in result.stdout and "SYN02/ned" not in result.stdout
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"actors": ["SYN05"]}))
    result = run_cmd(["snakemake", "-n", "--forceall", "renderer", "--configfile", str(other)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "work/renderer/SYN05/ned.eval.tsv" in result.stdout and "SYN01" not in result.stdout


@pytest.mark.parametrize("key, value", [("evaluate.paper.weights.syncnet", "syncnet_v2.modle"),
                                        ("renderer.vgg_weights", "vgg19.pth"),
                                        ("manipulator.weights.ned", "ned/05_nets_finetuned.pth")])
def test_a_set_file_that_does_not_exist_stops_the_dag_naming_its_key(key, value, tmp_path):
    *sections, name = key.split(".")
    overrides: dict = {name: str(tmp_path / value)}
    for section in reversed(sections):
        overrides = {section: overrides}
    extra = tmp_path / "typo.yaml"
    extra.write_text(yaml.safe_dump(overrides))
    result = run_cmd(["snakemake", "-n", "--configfile", str(REPO / "config/config.yaml"), str(extra)])
    assert result.returncode != 0
    assert f"config key {key}: {tmp_path / value} does not exist: fix the path" in result.stdout + result.stderr


OVERLAY = REPO / "tests/data/paper_overlay.yaml"


@pytest.fixture(scope="module")
def mead_run(user_files, tmp_path_factory):
    """config/mead.yaml with its paths filled in, shrunk by the overlay, run through its data stages
    (the manifest, the preprocessing, the SCMC pairs) on the overlay's actor generated by the
    built-in corpus in MEAD's layout. The stages after these are the synthetic corpus's, run to the
    paper's metrics in the suite's shared run (test_paper_metrics)."""
    workdir = tmp_path_factory.mktemp("paper")
    overlay = yaml.safe_load(OVERLAY.read_text())
    for actor in overlay["actors"]:
        made = run_cmd(["scmcl", "corpus", "synth", "--model", str(user_files["/path/to/FLAME2020/generic_model.pkl"]),
                        "--landmarks", str(user_files["/path/to/DECA/data/landmark_embedding.npy"]),
                        "--root", str(workdir / "MEAD"), "--actor", actor, "--emotions", *overlay["emotions"],
                        "--levels", "3", "--sentences", "3", "--resolution", "64"])
        assert made.returncode == 0, made.stderr[-3000:]
    config = fill_placeholders(REPO / "config/mead.yaml", workdir / "mead.yaml", {"/path/to/MEAD": workdir / "MEAD", **user_files})
    args = snakemake_args(workdir / "run", config, OVERLAY)
    targets = [f"work/preprocess/{actor}/expressions.parquet" for actor in overlay["actors"]] + ["work/scmc/aligned_pairs.parquet"]
    result = run_cmd([*args, *targets])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir / "run", overlay


def test_mead_config_runs_its_data_stages_on_a_mead_tree(mead_run):
    """mead.yaml's levels and test clips as written: neutral at level 1, the others at level 3
    only, every frame in the expression table, and test clip 003 held out of the SCMC pairs."""
    workdir, overlay = mead_run
    manifest = pd.read_parquet(workdir / "work/corpus/manifest.parquet")
    assert set(zip(manifest.emotion, manifest.level)) == {("neutral", 1), *((e, 3) for e in overlay["emotions"][1:])}
    assert manifest.audio_source.eq("m4a").all() and set(manifest["clip"]) == {"001", "002", "003"}
    for actor in overlay["actors"]:
        table = pd.read_parquet(workdir / f"work/preprocess/{actor}/expressions.parquet")
        assert len(table) == manifest[manifest.actor == actor].frames.sum()
    pairs = pd.read_parquet(workdir / "work/scmc/aligned_pairs.parquet")
    assert set(pairs[pairs.split == "val"].neutral_clip) == {"003"} and set(pairs[pairs.split == "train"].neutral_clip) == {"001", "002"}

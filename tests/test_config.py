"""The JSON schema: defaults on every key, and bad configs rejected with the key named."""

from __future__ import annotations

import pytest
import yaml

from scmcl.config import ConfigError, load_config, load_schema, validate_config
from tests.conftest import REPO, run_cmd


def _walk(schema: dict, path: str = ""):
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}{key}", sub
        yield from _walk(sub, f"{path}{key}.")


def test_every_key_has_default_and_description():
    for key, sub in _walk(load_schema()):
        assert "description" in sub, f"{key} has no description"
        assert "default" in sub, f"{key} has no default"


@pytest.mark.parametrize("name", ["config.yaml", "mead.yaml", "ravdess.yaml"])
def test_shipped_configs_validate(name):
    config = load_config(REPO / "config" / name)
    assert config["emotions"][0] == "neutral"


def test_defaults_fill_nested_sections():
    config = validate_config({})
    assert config["synthetic"]["fps"] == 25
    assert config["flame"]["model"].endswith("generic_model.pkl")


@pytest.mark.parametrize(
    "bad, named",
    [
        ({"epochs": 3}, "epochs"),
        ({"synthetic": {"fsp": 25}}, "synthetic.fsp"),
        ({"synthetic": {"fps": "fast"}}, "synthetic.fps"),
        ({"actors": "SYN01"}, "actors"),
        ({"levels": [4]}, "levels.0"),
        ({"device": "gpu0"}, "device"),
        ({"emotions": ["happy", "sad"]}, "emotions"),
    ],
)
def test_bad_config_names_the_key(bad, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        validate_config(bad)


def test_workflow_stops_on_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"synthetic": {"resolution": "large"}}))
    result = run_cmd(["snakemake", "-n", "--configfile", str(bad)])
    assert result.returncode != 0
    assert "synthetic.resolution" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "override, expected",
    [
        ("levels=[1,2]", ["scmcl corpus synth", "--levels 1 2 "]),
        ("synthetic={fps: 30}", ["scmcl corpus synth", "--fps 30 ", "--resolution 160 "]),
        # a nested key merges into the config file's section: its other keys stay
        ("scmc={batch_size: 8}", ["scmcl scmc train audio", "--batch-size 8 ", "--steps 200 "]),
    ],
)
def test_snakemake_config_overrides_reach_the_stage(override, expected):
    """`snakemake --config` hands numbers, lists and nested keys over as strings; they reach the
    stage's command as the numbers the user typed."""
    result = run_cmd(["snakemake", "-n", "-p", "--config", override])
    assert result.returncode == 0, result.stdout + result.stderr
    command = next(line for line in result.stdout.splitlines() if expected[0] in line)
    for flag in expected[1:]:
        assert flag in command, command


def test_config_strings_become_the_schema_types():
    config = validate_config({"levels": ["1", "2"], "synthetic": {"fps": "29.97", "sentences": "4"},
                              "scmc": {"clip_offsets": {"disgusted": "27"}}})
    assert config["levels"] == [1, 2]
    assert config["synthetic"]["fps"] == pytest.approx(29.97) and config["synthetic"]["sentences"] == 4
    assert config["scmc"]["clip_offsets"] == {"disgusted": 27}
    with pytest.raises(ConfigError, match=r"synthetic\.sentences"):
        validate_config({"synthetic": {"sentences": "2.5"}})

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

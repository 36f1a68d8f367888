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


@pytest.mark.workflow
def test_workflow_stops_on_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"synthetic": {"resolution": "large"}}))
    result = run_cmd(["snakemake", "-n", "--configfile", str(bad)])
    assert result.returncode != 0
    assert "synthetic.resolution" in result.stdout + result.stderr


@pytest.mark.workflow
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


#: The JSON-schema keywords config/schema.yaml uses; any other key in a property's schema is a
#: typo or a description cut at a comma by YAML's flow mapping (``{description: a, b, type: ...}``).
SCHEMA_KEYWORDS = {"$schema", "description", "type", "default", "enum", "const", "format", "pattern", "minLength",
                   "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "items", "minItems",
                   "maxItems", "uniqueItems", "contains", "properties", "additionalProperties"}


def _schemas(node: dict, where: str = "<top level>"):
    """Every schema in ``node``: itself, its properties', items' and additionalProperties'."""
    yield where, node
    for key, sub in node.get("properties", {}).items():
        yield from _schemas(sub, key if where == "<top level>" else f"{where}.{key}")
    for keyword in ("items", "additionalProperties", "contains"):
        if isinstance(node.get(keyword), dict):
            yield from _schemas(node[keyword], f"{where}[{keyword}]")


def test_schema_holds_only_keywords_and_whole_descriptions():
    """A description with a comma inside an unquoted flow mapping is cut there (``--help`` shows
    the first part) and its rest becomes a key with no value: every description must be whole."""
    for where, node in _schemas(load_schema()):
        unknown = sorted(set(node) - SCHEMA_KEYWORDS)
        assert not unknown, f"{where}: {unknown} are not JSON-schema keywords (a description cut at a comma? quote it)"
        assert None not in node.values(), f"{where}: a key without a value"
        text = node.get("description")
        if text is None:
            continue
        assert text.endswith("."), f"{where}: description ends {text[-40:]!r}"
        for opening, closing in ("()", "[]", "{}"):
            assert text.count(opening) == text.count(closing), f"{where}: unbalanced {opening}{closing} in {text!r}"
        assert text.count("`") % 2 == 0, f"{where}: unbalanced ` in {text!r}"


@pytest.mark.workflow
def test_crop_size_the_renderer_cannot_halve_is_refused(tmp_path):
    """The generator halves the crop 2^downsample times: crop 100 used to pass validation and fail in
    the renderer with "The size of tensor a (104) must match the size of tensor b (100)"."""
    message = ("config key preprocess.crop_size: 100 is not a multiple of 8 (2^renderer.networks.downsample = 2^3): "
               "use 96 or 104")
    with pytest.raises(ConfigError) as err:
        validate_config({"preprocess": {"crop_size": 100}})
    assert str(err.value) == message
    path = tmp_path / "crop.yaml"
    path.write_text(yaml.safe_dump({"preprocess": {"crop_size": 100}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {message}"
    result = run_cmd(["snakemake", "-n", "--config", "preprocess={crop_size: 100}"])
    assert result.returncode != 0
    assert f"invalid configuration: {message}" in result.stdout + result.stderr


def _networks_run(crop: int, downsample: int, d_scales: int, d_layers: int) -> bool:
    """Whether the renderer's generator and its mouth/eye discriminator train at these sizes (tiny widths)."""
    import torch

    from scmcl.renderer.networks import DiscriminatorSizes, Generator, MultiscaleDiscriminator, RendererSizes
    from scmcl.renderer.roi import roi_side

    generator = Generator(RendererSizes(ngf=2, downsample=downsample, blocks=2, frames=2)).train()
    discriminator = MultiscaleDiscriminator(DiscriminatorSizes(ndf=2, layers=d_layers, scales=d_scales)).train()
    side = roi_side(crop)
    with torch.no_grad():
        try:
            out = generator(torch.rand(1, 20, crop, crop), torch.zeros(1, 3, crop, crop))
            discriminator(torch.rand(1, 10, side, side), torch.rand(1, 3, side, side))
        except (RuntimeError, ValueError):
            return False
    return out.shape[-2:] == (crop, crop)


@pytest.mark.parametrize(
    "crop, downsample, d_scales, d_layers, key",
    [
        (96, 3, 2, 3, None), (104, 3, 2, 3, None), (100, 3, 2, 3, "preprocess.crop_size"),
        (66, 1, 2, 3, None), (66, 2, 2, 3, "preprocess.crop_size"),
        (64, 5, 2, 3, None), (64, 6, 2, 3, "renderer.networks.downsample"),  # 64 / 2^6 = 1 px at the bottleneck
        (64, 3, 5, 3, None), (64, 3, 6, 3, "renderer.networks.d_scales"),  # the 18 px mouth crop halved 5 times
        (64, 3, 6, 1, None), (120, 3, 6, 3, None), (112, 3, 6, 3, "renderer.networks.d_scales"),
        (128, 3, 6, 3, None), (128, 3, 7, 3, "renderer.networks.d_scales"),
    ],
)
def test_network_size_limits_are_the_networks(crop, downsample, d_scales, d_layers, key):
    """validate_config accepts exactly the sizes the renderer's networks run at, on both sides of each limit."""
    config = {"preprocess": {"crop_size": crop},
              "renderer": {"networks": {"downsample": downsample, "d_scales": d_scales, "d_layers": d_layers}}}
    assert _networks_run(crop, downsample, d_scales, d_layers) == (key is None)
    if key is None:
        validate_config(config)
    else:
        with pytest.raises(ConfigError, match=rf"^config key {key.replace('.', '[.]')}: "):
            validate_config(config)


def test_discriminator_limit_skipped_when_every_renderer_is_released():
    """Released generators train no discriminator, so d_scales does not matter then."""
    networks = {"d_scales": 6}
    weights = {"ned": {"SYN01": "ned.pth"}, "scmcl": {"SYN01": "scmcl.pth"}}
    validate_config({"actors": ["SYN01"], "preprocess": {"crop_size": 64}, "renderer": {"networks": networks, "weights": weights}})
    with pytest.raises(ConfigError, match=r"renderer\.networks\.d_scales: 6 scales .* use d_scales 5 or less"):
        validate_config({"actors": ["SYN01"], "preprocess": {"crop_size": 64},
                         "renderer": {"networks": networks, "weights": {"ned": weights["ned"]}}})

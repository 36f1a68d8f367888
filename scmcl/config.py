"""Config validation against config/schema.yaml, with defaults filled in.

Snakemake's own ``validate`` reports a wrong type without saying which key holds it; the
workflow calls this instead, so a bad config stops the run with one line naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from scmcl.renderer.roi import roi_side

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"

MEAD_EMOTIONS = ("neutral", "angry", "disgusted", "fear", "happy", "sad", "surprised")


class ConfigError(ValueError):
    """The configuration does not match the schema."""


def _with_defaults(validator_cls):
    """Extend a validator so that ``default`` values are written into missing keys."""
    check_properties = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


def parse_bool(text: str) -> bool:
    """A schema boolean written as text (``--config`` values, sub-command options)."""
    if text.lower() not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


_PARSERS = {"integer": (int,), "number": (int, float), "boolean": (parse_bool,)}


def _coerce(value, schema: dict):
    """Convert strings where the schema wants numbers or booleans, inside lists and sections too.

    ``snakemake --config 'synthetic={fps: 30}'`` and ``--config levels=[1,2]`` parse the value
    with YAML's BaseLoader, which leaves every scalar a string; without this they fail as
    "'30' is not of type 'number'". A string that does not parse is left for validation to name.
    """
    kind = schema.get("type")
    if isinstance(value, str) and kind in _PARSERS:
        for parse in _PARSERS[kind]:
            try:
                return parse(value)
            except ValueError:
                pass
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        value[:] = [_coerce(item, schema["items"]) for item in value]
    elif isinstance(value, dict):
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = _coerce(item, sub)
    return value


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Fill defaults into ``config`` in place and raise ``ConfigError`` naming the first bad key."""
    schema = load_schema() if schema is None else schema
    _coerce(config, schema)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(_describe(errors[0]))
    _check_network_sizes(config, schema)
    return config


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        keys = ", ".join(f"{where}.{k}" if error.absolute_path else k for k in unknown)
        return f"unknown config key {keys}: remove it or fix its spelling (allowed: {', '.join(sorted(error.schema['properties']))})"
    return f"config key {where}: {error.message}"


def _renderer_discriminators_train(config: dict) -> bool:
    """Whether some renderer is trained or fine-tuned here (a released generator needs no discriminator)."""
    renderer = config["renderer"]
    weights = renderer.get("weights", {})
    actors = renderer.get("actors") or config.get("actors", [])
    return any(actor not in weights.get(variant, {}) for variant in ("ned", "scmcl") for actor in actors)


def _check_network_sizes(config: dict, schema: dict) -> None:
    """Raise ``ConfigError`` for sizes that pass the schema but that the renderer's networks cannot
    run, found by running them (tests/test_config.py runs both sides of each limit):

    - the generator halves the crop ``renderer.networks.downsample`` times and doubles it back,
      so a crop that 2^downsample does not divide comes back larger ("The size of tensor a (104)
      must match the size of tensor b (100)" at crop 100), and its instance norms need at least
      2x2 pixels at the bottleneck;
    - each multiscale discriminator halves its input ``d_scales - 1`` times; the mouth and eye
      crops (``roi_side``) must keep at least 2x2 pixels there when ``d_layers`` >= 2, or the
      instance norm after the second stride-2 layer sees one pixel.

    The SCMC image metric, the face classifier and the preprocessing resize to any size, and the
    manipulator's networks take windows of any length: they add no constraint.
    """
    try:
        crop = config["preprocess"]["crop_size"]
        networks = config["renderer"]["networks"]
        down, scales, layers = networks["downsample"], networks["d_scales"], networks["d_layers"]
    except (KeyError, TypeError):
        return  # a partial schema (tests): nothing to check against
    bounds = schema.get("properties", {}).get("preprocess", {}).get("properties", {}).get("crop_size", {})
    step = 2 ** down

    def generator_runs(size: int) -> bool:
        return size % step == 0 and size // step >= 2

    def discriminators_run(size: int) -> bool:
        return layers < 2 or roi_side(size) > 2 ** (scales - 1)

    check_discriminators = _renderer_discriminators_train(config)
    usable = [size for size in range(bounds.get("minimum", 2), bounds.get("maximum", 1024) + 1)
              if generator_runs(size) and (discriminators_run(size) or not check_discriminators)]
    if crop % step:
        nearest = [s for s in usable if s < crop][-1:] + [s for s in usable if s > crop][:1]
        fix = f"use {' or '.join(map(str, nearest))}" if nearest else "lower renderer.networks.downsample"
        raise ConfigError(f"config key preprocess.crop_size: {crop} is not a multiple of {step} "
                          f"(2^renderer.networks.downsample = 2^{down}): {fix}")
    if crop // step < 2:
        larger = [size for size in usable if size > crop][:1]
        raise ConfigError(f"config key renderer.networks.downsample: {down} halvings take preprocess.crop_size {crop} "
                          f"to {crop // step} px, and the generator's instance norm needs at least 2x2 px there: "
                          f"use downsample {down - 1} or less"
                          + (f", or preprocess.crop_size {larger[0]}" if larger else ""))
    if check_discriminators and not discriminators_run(crop):
        side = roi_side(crop)
        most = max(s for s in range(1, scales) if side > 2 ** (s - 1))
        larger = [size for size in usable if size > crop][:1]
        raise ConfigError(f"config key renderer.networks.d_scales: {scales} scales halve the renderer's {side} px mouth "
                          f"and eye crops (72/256 of preprocess.crop_size {crop}) to {-(-side // 2 ** (scales - 1))} px, "
                          f"and with renderer.networks.d_layers {layers} the discriminators' instance norm needs "
                          f"at least 2x2 px: use d_scales {most} or less, d_layers 1"
                          + (f", or preprocess.crop_size {larger[0]}" if larger else ""))


def configured_paths(config: dict, schema: dict | None = None, where: str = "") -> list[tuple[str, str]]:
    """(key, path) of every non-empty setting the schema marks ``format: path``, so the workflow can
    stop on a set file that does not exist before it plans a job (an empty one means "not used")."""
    schema = load_schema() if schema is None else schema
    found = []
    if isinstance(config, dict):
        extra = schema.get("additionalProperties")
        for key, value in config.items():
            sub = schema.get("properties", {}).get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                found += configured_paths(value, sub, f"{where}.{key}" if where else str(key))
    elif isinstance(config, str) and config and schema.get("format") == "path":
        found.append((where, config))
    return found


def load_config(path: str | Path) -> dict:
    """Read and validate a YAML config file (for the CLI and tests)."""
    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    try:
        return validate_config(config)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None

"""Config validation against config/schema.yaml, with defaults filled in.

Snakemake's own ``validate`` reports a wrong type without saying which key holds it; the
workflow calls this instead, so a bad config stops the run with one line naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

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
    return config


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        keys = ", ".join(f"{where}.{k}" if error.absolute_path else k for k in unknown)
        return f"unknown config key {keys}: remove it or fix its spelling (allowed: {', '.join(sorted(error.schema['properties']))})"
    return f"config key {where}: {error.message}"


def load_config(path: str | Path) -> dict:
    """Read and validate a YAML config file (for the CLI and tests)."""
    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    try:
        return validate_config(config)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None

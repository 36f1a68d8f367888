"""Command-line options generated from the JSON schema, and the flags a rule passes for them.

The schema (config/schema.yaml) is the only place a setting's default lives. A stage's
sub-command adds its settings with :func:`add_settings`, which takes each option's type,
choices, default and help from the schema; a rule passes the run's validated values with
:func:`settings_flags`. So a new setting is written once in the schema plus where it is used,
and ``scmcl <stage> ...`` run by hand gets exactly the workflow's defaults.
"""

from __future__ import annotations

import argparse
import copy
import shlex
from functools import lru_cache
from typing import Any, Callable, Iterable

from scmcl.config import load_schema, parse_bool, validate_config

_SCALARS: dict[str, Callable[[str], Any]] = {"string": str, "integer": int, "number": float}


@lru_cache(maxsize=1)
def _schema() -> dict:
    return load_schema()


@lru_cache(maxsize=1)
def _defaults() -> dict:
    """The empty config with every default filled in, validated once."""
    return validate_config({}, _schema())


def schema_node(path: str) -> dict:
    """The schema of a dotted key (``"scmc.train_audio.steps"``); ``""`` is the whole config."""
    node = _schema()
    for part in filter(None, path.split(".")):
        try:
            node = node["properties"][part]
        except KeyError:
            raise KeyError(f"config/schema.yaml has no key {path}") from None
    return node


def config_value(config: dict, path: str) -> Any:
    """The value of a dotted key (``"scmc.train_audio"``) in a config; ``""`` is the whole config."""
    for part in filter(None, path.split(".")):
        config = config[part]
    return config


def schema_default(path: str) -> Any:
    """A key's default; for a section, every default below it filled in."""
    return copy.deepcopy(config_value(_defaults(), path))  # the cached defaults stay untouched by a caller's edits


def _leaf_keys(section: str) -> list[str]:
    """The section's settings: every key that is not itself a section (an object with properties)."""
    return [key for key, sub in schema_node(section).get("properties", {}).items() if "properties" not in sub]


def _path(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _scalar_type(node: dict) -> Callable[[str], Any]:
    return parse_bool if node.get("type") == "boolean" else _SCALARS.get(node.get("type", "string"), str)


class _KeyValues(argparse.Action):
    """``KEY=VALUE ...`` items into a dict (schema objects without fixed properties)."""

    def __init__(self, *args, value_type: Callable[[str], Any] = str, **kwargs):
        self.value_type = value_type
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        pairs = {}
        for item in values:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"{option_string}: expected KEY=VALUE, got {item!r}")
            pairs[key] = self.value_type(value)
        setattr(namespace, self.dest, pairs)


def add_settings(parser: argparse.ArgumentParser, section: str, keys: Iterable[str] | None = None,
                 exclude: Iterable[str] = ()) -> None:
    """Add ``--key`` for each setting of ``section`` (default: all of its own keys).

    Each option records its schema key (``action.schema_key``), so a test can check that no
    parser carries a default of its own."""
    excluded = set(exclude)
    for key in (list(keys) if keys is not None else _leaf_keys(section)):
        if key in excluded:
            continue
        path = _path(section, key)
        node = schema_node(path)
        kind = node.get("type")
        # argparse expands %-formats in help: a schema text's "16%" would break --help
        help_text = f"{node['description']} (config {path}; default: {node['default']!r})".replace("%", "%%")
        if kind == "array":
            items = node.get("items", {})
            action = parser.add_argument(_flag(key), nargs="*", type=_scalar_type(items), choices=items.get("enum"),
                                         default=list(node["default"]), help=help_text)
        elif kind == "object":
            value_type = _scalar_type(node.get("additionalProperties", {}))
            action = parser.add_argument(_flag(key), nargs="*", action=_KeyValues, value_type=value_type,
                                         default=dict(node["default"]), metavar="KEY=VALUE", help=help_text)
        else:
            action = parser.add_argument(_flag(key), type=_scalar_type(node), choices=node.get("enum"),
                                         default=node["default"], help=help_text)
        action.schema_key = path


def settings_values(args: argparse.Namespace, section: str, keys: Iterable[str] | None = None) -> dict:
    """The parsed values of a section's settings, by schema key name."""
    return {key: getattr(args, key) for key in (list(keys) if keys is not None else _leaf_keys(section))
            if hasattr(args, key)}


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(_format(item) for item in value)
    if isinstance(value, dict):
        return " ".join(f"{key}={_format(item)}" for key, item in value.items())
    return shlex.quote(str(value))


def settings_flags(config: dict, section: str, keys: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> str:
    """The command-line flags that pass a validated config's values of ``section`` to a sub-command
    built with the same :func:`add_settings` call (rules use this instead of one param per key)."""
    values = config_value(config, section)
    excluded = set(exclude)
    return " ".join(f"{_flag(key)} {_format(values[key])}".rstrip()
                    for key in (list(keys) if keys is not None else _leaf_keys(section)) if key not in excluded)

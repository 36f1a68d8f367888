"""The schema is the only place a setting's default lives: no sub-command option, settings class
or function of the package carries a default of its own for a configured setting."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import scmcl
from scmcl.cli import build_parser
from scmcl.options import add_settings, schema_default, schema_node

#: Parameter names that the package also uses for things other than the configured setting
#: (a rasterizer's batch, a mask network's chunk, a library function's device); a function
#: may default them. Settings classes and sub-command options may not.
LIBRARY_NAMES = {"device", "batch", "chunk", "batch_size", "seed"}


def _leaves(node: dict, path: str = ""):
    for key, sub in node.get("properties", {}).items():
        if "properties" in sub:
            yield from _leaves(sub, f"{path}{key}.")
        else:
            yield key, f"{path}{key}"


SETTING_NAMES = {key for key, _ in _leaves(schema_node(""))}


def _parsers(parser: argparse.ArgumentParser, name: str = "scmcl"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {verb}")


def _modules():
    for info in pkgutil.walk_packages(scmcl.__path__, "scmcl."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def _own(module):
    return [obj for obj in vars(module).values() if getattr(obj, "__module__", None) == module.__name__]


def _cli_violations(root: argparse.ArgumentParser) -> tuple[list[str], int]:
    """Options whose default is not the schema's, and the count of schema-generated options."""
    found, tied = [], 0
    for name, parser in _parsers(root):
        for action in parser._actions:
            key = getattr(action, "schema_key", None)
            if key is not None:
                tied += 1
                if action.default != schema_default(key):
                    found.append(f"`{name} {action.option_strings[0]}`: default {action.default!r}, schema {key} has {schema_default(key)!r}")
            elif action.dest in SETTING_NAMES and action.default is not None and not name.startswith("scmcl bench"):
                found.append(f"`{name} {action.option_strings[0]}` defaults to {action.default!r} by hand: "
                             "add it with scmcl.options.add_settings")
    return found, tied


def test_cli_defaults_are_the_schema_defaults():
    violations, tied = _cli_violations(build_parser())
    assert violations == []
    assert tied > 40  # every stage's settings are generated


def test_a_drifted_cli_default_is_caught():
    parser = argparse.ArgumentParser()
    add_settings(parser, "scmc", ["seed"])
    parser._actions[-1].default = 7  # as if the schema had changed under a copied default
    parser.add_argument("--checkpoint-every", type=int, default=100)
    violations, _ = _cli_violations(parser)
    assert len(violations) == 2
    assert "scmc.seed has 2024" in violations[0] and "--checkpoint-every` defaults to 100 by hand" in violations[1]


def test_settings_classes_have_no_defaults_of_settings():
    for module in _modules():
        for cls in filter(dataclasses.is_dataclass, _own(module)):
            for field in dataclasses.fields(cls):
                has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
                assert not (field.name in SETTING_NAMES and has_default), (
                    f"{module.__name__}.{cls.__name__}.{field.name} has a default: pass the configured value")


def test_functions_have_no_defaults_of_settings():
    for module in _modules():
        for obj in _own(module):
            functions = [obj] if inspect.isfunction(obj) else [v for v in vars(obj).values() if inspect.isfunction(v)] if inspect.isclass(obj) else []
            for function in functions:
                for parameter in inspect.signature(function).parameters.values():
                    if parameter.name in SETTING_NAMES - LIBRARY_NAMES and parameter.default not in (inspect.Parameter.empty, None):
                        pytest.fail(f"{module.__name__}.{function.__qualname__}({parameter.name}={parameter.default!r}): "
                                    "a default of a configured setting outside the schema")


@pytest.mark.parametrize("name, parser", list(_parsers(build_parser())), ids=lambda value: value if isinstance(value, str) else "")
def test_every_command_has_a_help_page(name: str, parser: argparse.ArgumentParser) -> None:
    """The options' help comes from the schema's descriptions, which may hold a "%"."""
    assert parser.format_help().startswith("usage:"), name

"""Method hyperparameters from command-line text, for every method of the registry.

`--set key=value` names a field of the method's config dataclass; the text is converted to that
field's declared type, so a new method needs no CLI code of its own:

    int, float, str            int("16"), float("0.05"), "none"
    bool                       true/false, yes/no, 1/0, on/off
    tuple[X, ...]              comma-separated items, each converted to X: "query,value"
    X | None                   "none" / "null" gives None
    str | tuple[str, ...]      a comma list or a single name gives the tuple (names match as
                               exact paths or dotted suffixes); "all-linear" stays a string

A combination "a+b" takes `--set part.key=value` per part and `--set part.lr_scale=300` for a
part's learning rate relative to the run's; typed values (`--r 8`) go to every part that has them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from peftlab.core.combination_config import CombinationConfig, Component
from peftlab.core.config import MethodConfig
from peftlab.core.registry import declaration
from peftlab.errors import ConfigError

_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")
# A single string that means a rule rather than a module name.
_SPECIAL_TARGETS = ("all-linear",)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def convert(text: str, annotation: Any, name: str) -> Any:
    """`text` as a value of type `annotation` (the field `name` is only used in errors)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) < len(args) and text.strip().lower() in ("none", "null"):
            return None
        tuple_member = next((m for m in members if typing.get_origin(m) is tuple), None)
        if tuple_member is not None and (str not in members or text.strip() not in _SPECIAL_TARGETS):
            return convert(text, tuple_member, name)
        for member in members:
            try:
                return convert(text, member, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name}={text!r} is not a {_type_name(annotation)}")
    if origin is tuple:
        items = [item.strip() for item in text.split(",") if item.strip()]
        return tuple(convert(item, args[0], name) for item in items)
    if origin is Literal:
        chosen = [arg for arg in args if str(arg) == text.strip()]
        if not chosen:
            raise ConfigError(f"{name}={text!r} is not accepted: choose one of {', '.join(map(str, args))}")
        return chosen[0]
    if annotation is bool:
        if text.strip().lower() in _TRUE + _FALSE:
            return text.strip().lower() in _TRUE
        raise ConfigError(f"{name}={text!r} is not a boolean: use true or false")
    if annotation in (int, float, str):
        try:
            return annotation(text.strip()) if annotation is not str else text
        except ValueError:
            raise ConfigError(f"{name}={text!r} is not {'an' if annotation is int else 'a'} "
                              f"{annotation.__name__}") from None
    raise ConfigError(f"{name} (type {_type_name(annotation)}) cannot be set from the command line")


def config_fields(config_class: type[MethodConfig]) -> dict[str, Any]:
    """Field name -> resolved type annotation of a method config dataclass (ranges dropped:
    the config validates them)."""
    hints = typing.get_type_hints(config_class)
    return {field.name: hints[field.name] for field in dataclasses.fields(config_class)}


def method_config(method: str, values: dict[str, Any], settings: list[str]) -> MethodConfig:
    """The config of `method` from typed `values` (e.g. `--r`) and `key=value` `settings` (`--set`).

    A value whose key the method's config does not have is an error that lists the keys it has.
    A combination "a+b" gives a `CombinationConfig` (see the module docstring).
    """
    if "+" in method:
        return combination_config(method, values, settings)
    config_class = declaration(method).config_class
    fields = config_fields(config_class)
    chosen: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"method {method!r} has no option {key!r}: its options are "
                              f"{', '.join(fields)} (set them with --set key=value)")
        chosen[key] = convert(value, fields[key], key) if isinstance(value, str) else value
    for setting in settings:
        key, separator, text = setting.partition("=")
        key = key.strip().replace("-", "_")
        if not separator or not key:
            raise ConfigError(f"--set {setting!r}: write key=value, e.g. --set dropout=0.1")
        if key not in fields:
            raise ConfigError(f"method {method!r} has no option {key!r}: its options are {', '.join(fields)}")
        chosen[key] = convert(text, fields[key], key)
    return config_class(**chosen)


def combination_config(method: str, values: dict[str, Any], settings: list[str]) -> CombinationConfig:
    """The `CombinationConfig` of "a+b" from typed `values` (to every part that has the key) and
    `part.key=value` / `part.lr_scale=value` settings."""
    parts = [part.strip() for part in method.split("+")]
    per_part: dict[str, list[str]] = {part: [] for part in parts}
    scales: dict[str, float] = {}
    for setting in settings:
        key, separator, text = setting.partition("=")
        part, dot, field = key.strip().partition(".")
        if not separator or not dot or part not in per_part:
            raise ConfigError(f"--set {setting!r}: for {method} write part.key=value with part one of "
                              f"{', '.join(parts)}, e.g. --set {parts[-1]}.lr_scale=10")
        if field.strip().replace("-", "_") == "lr_scale":
            scales[part] = convert(text, float, f"{part}.lr_scale")
        else:
            per_part[part].append(f"{field}={text}")
    declared = {part: config_fields(declaration(part).config_class) for part in parts}
    unused = sorted(set(values) - {key for fields in declared.values() for key in fields})
    if unused:
        raise ConfigError(f"no part of {method} has option(s) {', '.join(unused)}: set them per part with "
                          "--set part.key=value")
    return CombinationConfig(tuple(
        Component(part, method_config(part, {k: v for k, v in values.items() if k in declared[part]},
                                      per_part[part]), scales.get(part, 1.0))
        for part in parts))

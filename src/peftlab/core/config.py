"""Method configs: small frozen dataclasses whose fields are validated from their declared types.

A field says what it accepts in its annotation, and nothing else checks it:

    r: Annotated[int, Range(ge=1, le=4096)] = 8            an integer in [1, 4096] (not True, not 8.5, not NaN)
    alpha: Annotated[float, Range(gt=0)] = 16.0             a finite number > 0 (an int is fine; a bool, NaN, inf not)
    bias: Literal["none", "all", "lora_only"] = "none"     one of the listed values
    target_modules: str | tuple[str, ...] | None = None     a regex, a list of names, or none

`MethodConfig.__post_init__` checks every field against its annotation (`accepts` below: one
small checker for the few types configs use, strict about bools and NaN, so a config stays a plain
frozen dataclass and importing it costs nothing) and raises one `ConfigError` that names the
method, the field, the bad value and what is accepted. Lists become tuples first (JSON has no
tuples). Checks that relate two fields go in `check()`. `from_dict` does the same for a plain dict
(a file, a set of flags) and names unknown keys, so every boundary validates with this mechanism.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, Union

from peftlab.errors import ConfigError

__all__ = ["Annotated", "ConfigError", "Literal", "MethodConfig", "Range", "accepts", "check_choice",
           "check_range", "describe"]

_INVALID = object()  # what `accepts` returns for a value its annotation does not accept


@dataclass(frozen=True)
class Range:
    """Bounds of a number field, as `Annotated` metadata: Range(ge=1, le=4096), Range(gt=0)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def holds(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def __str__(self) -> str:
        bounds = [f"{symbol} {bound:g}" for symbol, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le),
                                                              ("<", self.lt)) if bound is not None]
        return " and ".join(bounds)


def _as_tuples(value: Any) -> Any:
    """Lists (from JSON or Python callers) as tuples, recursively: configs hold immutable values."""
    if isinstance(value, list):
        return tuple(_as_tuples(item) for item in value)
    return value


def accepts(annotation: Any, value: Any) -> Any:
    """`value` as the field of type `annotation` holds it (an int for a float field becomes a float),
    or `_INVALID`. Strict: a bool is no number, a number no bool, NaN and inf no finite number."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        value = accepts(args[0], value)
        ranges = [item for item in args[1:] if isinstance(item, Range)]
        return value if value is _INVALID or all(r.holds(value) for r in ranges) else _INVALID
    if origin in (Union, types.UnionType):
        for member in args:
            checked = accepts(member, value)
            if checked is not _INVALID:
                return checked
        return _INVALID
    if origin is Literal:
        return value if any(value == arg and type(value) is type(arg) for arg in args) else _INVALID
    if origin is tuple:
        if not isinstance(value, tuple):
            return _INVALID
        items = tuple(accepts(args[0], item) for item in value)
        return _INVALID if any(item is _INVALID for item in items) else items
    if annotation is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if number else _INVALID
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    if annotation in (bool, str):
        return value if isinstance(value, annotation) else _INVALID
    if annotation is type(None):
        return value if value is None else _INVALID
    raise TypeError(f"config fields of type {annotation!r} are not supported by peftlab.core.config")


_SINGULAR = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", type(None): "null"}
_PLURAL = {bool: "booleans", int: "integers", float: "finite numbers", str: "strings", type(None): "nulls"}


def describe(annotation: Any, plural: bool = False) -> str:
    """What `annotation` accepts, in words: "an integer >= 1 and <= 4096", "one of 'a', 'b'", ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        inner = describe(args[0], plural)
        bounds = " and ".join(str(item) for item in args[1:] if isinstance(item, Range))
        return f"{inner} {bounds}" if bounds else inner
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a, plural) for a in args)
    if origin is Literal:
        return ("values among " if plural else "one of ") + ", ".join(map(repr, args))
    if origin is tuple:
        return f"a list of {describe(args[0], plural=True)}"
    names = _PLURAL if plural else _SINGULAR
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base of every method's configuration (a small frozen dataclass, validated on creation).

    modules_to_save: modules that train in full next to the adapter (a copy per adapter name).
        None means "the output head of a sequence-classification model" (`classifier` / `score`),
        an empty tuple means none.
    """

    method: ClassVar[str]
    modules_to_save: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        hints = _field_types(type(self))
        for field in dataclasses.fields(self):
            value = _as_tuples(getattr(self, field.name))
            checked = accepts(hints[field.name], value)
            if checked is _INVALID:
                raise ConfigError(f"{self.method}: {field.name}={_shown(value)} is invalid: expected "
                                  f"{describe(hints[field.name])}")
            object.__setattr__(self, field.name, checked)
        self.check()

    def check(self) -> None:
        """Checks that relate several fields (each field alone is checked from its type)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MethodConfig":
        """The config from a plain dict (e.g. a file's fields or command-line flags), every field validated.

        Unknown keys are an error that names them and lists the fields the method has.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.method}: a config must be a mapping of field names to values, "
                              f"got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known) - {"method"})
        if unknown:
            raise ConfigError(f"{cls.method} has no option {', '.join(unknown)}: its options are "
                              f"{', '.join(known)}")
        return cls(**{k: v for k, v in data.items() if k != "method"})

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **json.loads(json.dumps(dataclasses.asdict(self)))}

    def replace(self, **changes: Any) -> "MethodConfig":
        return dataclasses.replace(self, **changes)


@cache
def _field_types(config_class: type) -> dict[str, Any]:
    return typing.get_type_hints(config_class, include_extras=True)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                *, low_inclusive: bool = True) -> None:
    """Raise ConfigError naming `name`, its value and the accepted range unless low <= value <= high.

    For settings outside the method configs (runs, budgets); NaN and the infinities are never in
    range (an infinite weight decay or epoch count is a typo, not a setting).
    """
    not_number = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    too_low = not not_number and low is not None and (value < low if low_inclusive else value <= low)
    too_high = not not_number and high is not None and value > high
    if not_number or too_low or too_high:
        bracket = "[" if low_inclusive else "("
        accepted = f"{bracket}{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"{name}={value!r} is out of range: accepted {accepted}")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not accepted: choose one of {', '.join(map(repr, choices))}")

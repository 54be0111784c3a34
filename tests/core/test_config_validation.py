"""Every field of every registered method config is validated from its declared type, one way.

For each field the wrong kinds of value for its annotation (a bool or 8.5 or NaN for an integer,
NaN / inf / a bool for a float, an unknown choice, a number where names go, ...) must be refused
with one ConfigError naming the method, the field, the value and what is accepted; and the
same holds for a plain dict (`from_dict`), as files and flags arrive.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

import pytest

from peftlab.core.config import MethodConfig
from peftlab.core.registry import declarations
from peftlab.errors import ConfigError

NAN = float("nan")


def _members(annotation) -> list:
    """The annotation's alternatives, ranges stripped (int, float, str, tuple[...], Literal[...], None)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def bad_values(annotation) -> list:
    """Values of the wrong kind for every alternative of `annotation`."""
    members = _members(annotation)
    kinds = {m if typing.get_origin(m) is None else typing.get_origin(m) for m in members}
    bad = [object()]
    if int in kinds and float not in kinds:
        bad += [True, 8.5, NAN, "8"]
    if float in kinds:
        bad += [True, NAN, math.inf, "0.5"]
    if bool in kinds:
        bad += ["false", 1]
    if typing.Literal in kinds:
        bad += ["no-such-choice"]
    if str in kinds or tuple in kinds:
        bad += [5, (1, 2)] if str in kinds else [5]
    return bad


CASES = [pytest.param(d.config_class, field.name, value, id=f"{d.name}.{field.name}={value!r}")
         for d in declarations() for field in dataclasses.fields(d.config_class)
         for value in bad_values(typing.get_type_hints(d.config_class, include_extras=True)[field.name])]


def test_every_registered_method_has_fields_under_test():
    tested = {case.values[0].method for case in CASES}
    assert tested == {d.name for d in declarations()}


@pytest.mark.parametrize("config_class, field, value", CASES)
def test_a_wrong_kind_of_value_is_refused_naming_method_field_value_and_what_is_accepted(config_class, field, value):
    with pytest.raises(ConfigError) as raised:
        config_class(**{field: value})
    message = str(raised.value)
    assert message.startswith(f"{config_class.method}: {field}=") and "is invalid: expected" in message
    with pytest.raises(ConfigError, match=f"{config_class.method}: {field}="):
        config_class.from_dict({field: value})


@pytest.mark.parametrize("found", declarations(), ids=lambda d: d.name)
def test_defaults_are_valid_and_a_config_survives_its_own_dict(found):
    config = found.config_class()
    assert isinstance(config, MethodConfig) and config.method == found.name
    assert found.config_class.from_dict(config.to_dict()) == config  # lists from JSON become tuples again
    with pytest.raises(ConfigError, match=f"{found.name} has no option nope: its options are"):
        found.config_class.from_dict({"nope": 1})
    with pytest.raises(ConfigError, match="a config must be a mapping"):
        found.config_class.from_dict([("r", 4)])


def test_the_review_findings():
    """LoraConfig(r=8.5) and LoraConfig(r=True) were accepted (NaN bounds made the check a no-op)."""
    from peftlab.methods.lora import LoraConfig

    for value in (8.5, True, NAN, 0, 4097):
        with pytest.raises(ConfigError, match=r"lora: r=.* is invalid: expected an integer >= 1 and <= 4096"):
            LoraConfig(r=value)
    assert LoraConfig(r=4, target_modules=["q_proj"], layers=[0, 1]).layers == (0, 1)
    assert LoraConfig(alpha=32).alpha == 32.0

"""`--set key=value` conversion to the field types of any method config."""

from dataclasses import dataclass
from typing import ClassVar

import pytest

from peftlab.cli.options import config_fields, convert, method_config
from peftlab.core.config import MethodConfig
from peftlab.errors import ConfigError
from peftlab.methods.lora import LoraConfig


@dataclass(frozen=True)
class _Example(MethodConfig):
    method: ClassVar[str] = "example"
    count: int = 1
    ratio: float | None = None
    flag: bool = False
    layers: tuple[int, ...] | None = None
    targets: str | tuple[str, ...] | None = None


@pytest.mark.parametrize("field, text, expected", [
    ("count", "16", 16),
    ("ratio", "0.25", 0.25),
    ("ratio", "none", None),
    ("flag", "true", True),
    ("flag", "0", False),
    ("layers", "0,2, 3", (0, 2, 3)),
    ("targets", "query,value", ("query", "value")),
    ("targets", "query", ("query",)),
    ("targets", "all-linear", "all-linear"),
    ("targets", "null", None),
    ("modules_to_save", "classifier", ("classifier",)),
])
def test_text_becomes_the_declared_type(field, text, expected):
    assert convert(text, config_fields(_Example)[field], field) == expected


@pytest.mark.parametrize("field, text, message", [
    ("count", "many", "count='many' is not an int"),
    ("flag", "maybe", "flag='maybe' is not a boolean"),
    ("layers", "1,x", "layers="),
])
def test_bad_text_names_the_field(field, text, message):
    with pytest.raises(ConfigError, match=message):
        convert(text, config_fields(_Example)[field], field)


def test_method_config_from_flags_and_settings():
    config = method_config("lora", {"r": 4, "target_modules": "query,value"}, ["use-rslora=yes", "alpha=8"])
    assert config == LoraConfig(r=4, alpha=8.0, target_modules=("query", "value"), use_rslora=True)


def test_unknown_option_lists_the_method_options():
    with pytest.raises(ConfigError, match=r"method 'lora' has no option 'rank': its options are .*\br\b"):
        method_config("lora", {}, ["rank=4"])
    with pytest.raises(ConfigError, match="write key=value"):
        method_config("lora", {}, ["r4"])

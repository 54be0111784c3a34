"""The registry of methods: one name, one `Method` class, one config class.

Methods register themselves with the `@register` decorator when `peftlab.methods` is imported;
`get_method` imports it on first use so callers never depend on import order.
"""

from __future__ import annotations

import importlib

from peftlab.core.protocol import Method, MethodConfig
from peftlab.errors import ConfigError

_METHODS: dict[str, type[Method]] = {}


def register(method_class: type[Method]) -> type[Method]:
    """Class decorator: make `method_class` available under `method_class.name`."""
    existing = _METHODS.get(method_class.name)
    if existing is not None and existing is not method_class:
        raise ValueError(f"method name {method_class.name!r} registered twice ({existing} and {method_class})")
    _METHODS[method_class.name] = method_class
    return method_class


def _load_builtin_methods() -> None:
    importlib.import_module("peftlab.methods")


def method_names() -> list[str]:
    _load_builtin_methods()
    return list(_METHODS)


def get_method(name: str) -> Method:
    _load_builtin_methods()
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}: choose one of {', '.join(_METHODS)}")
    return _METHODS[name]()


def method_for_config(config: MethodConfig) -> Method:
    return get_method(config.method)


def method_for_hf_peft_type(peft_type: str) -> Method:
    """The method that reads Hugging Face PEFT files of `peft_type` (e.g. "LORA")."""
    _load_builtin_methods()
    for method_class in _METHODS.values():
        if method_class.hf_peft_type == peft_type and method_class.reads_plain_hf_files:
            return method_class()
    readable = sorted({m.hf_peft_type for m in _METHODS.values() if m.hf_peft_type})
    raise ConfigError(f"adapter files of peft_type {peft_type!r} are not supported: peftlab reads {', '.join(readable)}")


def make_config(method: str, **fields) -> MethodConfig:
    """Build the config of `method` from keyword fields (the CLI and compare use this).

    "a+b" gives a `CombinationConfig` of the parts' configs: fields per part as `a={...}`, and
    `lr_scales={"b": 300}` (see `core/combination.py`).
    """
    if "+" in method:
        from peftlab.core.combination import combination_from_names  # it imports this module

        return combination_from_names(method, **fields)
    config_class = get_method(method).config_class
    return config_class(**fields)

"""The registry of methods: one name, one declaration (`core/declaration.py`).

The built-in methods are the declarations listed in `peftlab/methods/__init__.py` (one line each);
`register` adds another. Looking a method up reads its declaration only, which is torch-free, so
the estimator and the CLI's pure Python commands never import torch; `get_method` imports the
implementation when a model is to be changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peftlab.core.config import MethodConfig
from peftlab.core.declaration import MethodDeclaration
from peftlab.errors import ConfigError
from peftlab.methods import DECLARATIONS

_DECLARATIONS: dict[str, MethodDeclaration] = {}


def register(declaration: MethodDeclaration) -> MethodDeclaration:
    """Make `declaration` available under its name (a name is registered once)."""
    existing = _DECLARATIONS.get(declaration.name)
    if existing is not None and existing is not declaration:
        raise ValueError(f"method name {declaration.name!r} registered twice")
    if "+" in declaration.name or ":" in declaration.name:
        raise ValueError(f"method name {declaration.name!r} may not contain '+' or ':' (they join combinations)")
    _DECLARATIONS[declaration.name] = declaration
    return declaration


for _declaration in DECLARATIONS:
    register(_declaration)


def method_names() -> list[str]:
    return list(_DECLARATIONS)


def declarations() -> list[MethodDeclaration]:
    return list(_DECLARATIONS.values())


def declaration(name: str) -> MethodDeclaration:
    if name not in _DECLARATIONS:
        raise ConfigError(f"unknown method {name!r}: choose one of {', '.join(_DECLARATIONS)}")
    return _DECLARATIONS[name]


def get_method(name: str):
    """The implementation (`peftlab.core.protocol.Method`) of method `name`; imports torch."""
    return declaration(name).load()()


def method_for_config(config: MethodConfig):
    return get_method(config.method)


def config_from_fields(name: str, fields: Mapping[str, Any] | None = None) -> MethodConfig:
    """The validated config of single method `name` from plain `fields` (see `MethodConfig.from_dict`)."""
    return declaration(name).config_class.from_dict(dict(fields or {}))


def declaration_for_hf_file(fields: Mapping[str, Any]) -> MethodDeclaration:
    """The declaration that reads a Hugging Face PEFT adapter_config.json without a "peftlab" block:
    of those whose `peft_type` it has, the one matching most of its declared distinguishing fields."""
    scored = [(d.matches_hf_file(fields), d) for d in _DECLARATIONS.values()]
    scored = sorted(((score, d) for score, d in scored if score is not None), key=lambda item: -item[0])
    if not scored:
        readable = sorted({d.hf_peft_type for d in _DECLARATIONS.values() if d.hf_peft_type})
        raise ConfigError(f"adapter files of peft_type {fields.get('peft_type')!r} are not supported: "
                          f"peftlab reads {', '.join(readable)}")
    if len(scored) > 1 and scored[0][0] == scored[1][0]:
        raise ConfigError(f"this {fields.get('peft_type')} file fits both {scored[0][1].name} and "
                          f"{scored[1][1].name} ({', '.join(sorted(scored[1][1].hf_file_fields))}): "
                          "peftlab does not combine them in one adapter")
    return scored[0][1]

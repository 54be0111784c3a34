"""Several methods as one unit, as configuration (torch-free): `CombinationConfig` and `make_config`.

    make_config("lora", r=16)                                    LoraConfig(r=16)
    make_config("lora+prompt", lora={"r": 4}, lr_scales={"prompt": 300})
        CombinationConfig((Component("lora", LoraConfig(r=4)), Component("prompt", ..., lr_scale=300)))

What attaching a combination does to a model is in `core/combination.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from peftlab.core.config import MethodConfig, check_range
from peftlab.core.declaration import Capabilities
from peftlab.core.registry import config_from_fields, declaration
from peftlab.errors import ConfigError
from peftlab.names import PLAIN_NAME

SEPARATOR = ":"


@dataclass(frozen=True)
class Component:
    """One part of a combination: its name (unique in the combination), config and LR scale.

    lr_scale: this part's learning rate relative to the run's (> 0); 1.0 trains at the run's rate.
    """

    name: str
    config: MethodConfig
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not PLAIN_NAME.fullmatch(self.name):  # it names a folder on save
            raise ConfigError(f"component name {self.name!r} is invalid: use letters, digits, '_' and '-' only")
        if not isinstance(self.config, MethodConfig):
            raise ConfigError(f"component {self.name!r}: config must be a method config, "
                              f"not {type(self.config).__name__}")
        check_range(f"{self.name}.lr_scale", self.lr_scale, 0, None, low_inclusive=False)


@dataclass(frozen=True)
class CombinationConfig:
    """Two or more components trained together (see `core/combination.py`).

    modules_to_save: the combination's; it replaces the components' own (the first component
    carries it, the others get none). None means the classification head, () means none.
    """

    components: tuple[Component, ...]
    modules_to_save: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        components = tuple(self.components)
        if len(components) < 2:
            raise ConfigError(f"a combination needs at least two components, got {len(components)}: "
                              "apply a single method's config directly")
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ConfigError(f"component names {names} repeat: give every component its own name")
        saved = None if self.modules_to_save is None else tuple(self.modules_to_save)
        components = tuple(dataclasses.replace(c, config=c.config.replace(modules_to_save=saved if i == 0 else ()))
                           for i, c in enumerate(components))
        object.__setattr__(self, "components", components)
        object.__setattr__(self, "modules_to_save", saved)

    @property
    def method(self) -> str:
        """The parts' methods joined by "+", e.g. "lora+prompt"."""
        return "+".join(c.config.method for c in self.components)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "modules_to_save": None if self.modules_to_save is None
                else list(self.modules_to_save),
                "components": [{"name": c.name, "lr_scale": c.lr_scale, "config": c.config.to_dict()}
                               for c in self.components]}

    def replace(self, **changes: Any) -> "CombinationConfig":
        return dataclasses.replace(self, **changes)


def combined_capabilities(parts: tuple[Capabilities, ...]) -> Capabilities:
    """A combination's capabilities: a property holds only if it holds for every part, except
    `model_hook`, which holds if any part has a hook."""
    return Capabilities(mergeable=all(c.mergeable for c in parts),
                        exact_unmerge=all(c.exact_unmerge for c in parts),
                        identity_at_init=all(c.identity_at_init for c in parts),
                        model_hook=any(c.model_hook for c in parts),
                        supports_disable=all(c.supports_disable for c in parts),
                        separate_delta=all(c.separate_delta for c in parts))


def combination_from_names(text: str, *, lr_scales: Mapping[str, float] | None = None,
                           **fields: Mapping[str, Any]) -> CombinationConfig:
    """`make_config("lora+prompt", lora={"r": 4}, lr_scales={"prompt": 300})`: components named by method."""
    methods = [m.strip() for m in text.split("+")]
    if any(not m for m in methods):
        raise ConfigError(f"method {text!r} has an empty part: write e.g. 'lora+prompt'")
    unknown = sorted(set(fields) - set(methods))
    if unknown:
        raise ConfigError(f"{text}: fields for {', '.join(unknown)}, which is not a part; give fields per part "
                          f"as {methods[0]}={{...}}")
    scales = dict(lr_scales or {})
    extra = sorted(set(scales) - set(methods))
    if extra:
        raise ConfigError(f"{text}: lr_scales names {', '.join(extra)}, which is not a part")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"{text} names a method twice: build a CombinationConfig with distinct component names")
    return CombinationConfig(tuple(Component(m, config_from_fields(m, fields.get(m, {})),
                                             float(scales.get(m, 1.0))) for m in methods))


def make_config(method: str, **fields: Any) -> MethodConfig | CombinationConfig:
    """The config of `method` from keyword fields (the CLI and compare use this), every field validated.

    "a+b" gives a `CombinationConfig` of the parts' configs: fields per part as `a={...}`, and
    `lr_scales={"b": 300}`.
    """
    if "+" in method:
        return combination_from_names(method, **fields)
    declaration(method)  # an unknown method is named before its fields are
    return config_from_fields(method, fields)


def part_name(combination: str, component: str) -> str:
    return f"{combination}{SEPARATOR}{component}"

"""Several methods trained as one unit (e.g. LoRA + prompt tuning): `CombinationConfig`.

    peftlab.apply(model, make_config("lora+prompt"))            adapter_name "default"
      ├─ adapter "default:lora"     LoRA layers on the query/value projections
      └─ adapter "default:prompt"   the soft-prompt hook          both active, one optimizer

A combination is bookkeeping over ordinary named adapters: each component is added with
`PeftModel.add_adapter` under "<combination>:<component>", so the contributions add up in the
forward pass and `trainable_parameters()` unions them. The combination's name works wherever an
adapter name does in `set_active`, `merge`, `unmerge`, `delete_adapter`, `adapter_parameters`,
`save_adapter` and per-request selection (it stands for all its parts). What it adds:

* Conflict checks before anything is attached. Each part is injected alone into the model as
  it is, its adapted module paths recorded, and removed again; then two parts adapting the same
  module are refused (one would have to wrap the other's wrapper, or would silently skip it),
  as are two parts that both have a model hook (both rewrite the inputs: prompt + prefix) and,
  after attaching, two parts that unfreeze the same base parameter.
* One trained head: only the first component gets `modules_to_save` (the combination's own
  field; None = the classification head), the others none. Two copies of the head would both
  be trainable while only the first active one is used in the forward pass.
* Learning-rate scales per component, relative to the run's rate (prompt tuning wants ~300x
  the rate of LoRA): `PeftModel.learning_rate_scales()` gives them per parameter and
  `train.schedule.make_optimizer(..., lr_scales=...)` makes the parameter groups.
* Capabilities derived from the parts: a property holds for the combination only if it holds
  for every part, except `model_hook`, which holds if any part has a hook.

Merging. A combination is mergeable only if every part is, and `merge()` stays all or nothing
(it refuses when any named adapter cannot merge). The mergeable parts can be merged by name,
e.g. `peft_model.merge(["default:lora"])` folds LoRA into the weights and keeps the soft prompt
as a hook: inference then pays only the prompt's extra tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peftlab.core.protocol import Capabilities, Method, MethodConfig, check_range, declares_base_loader
from peftlab.core.registry import get_method, make_config, method_for_config
from peftlab.core.targets import replace_module
from peftlab.errors import ConfigError
from peftlab.io import PLAIN_NAME

if TYPE_CHECKING:  # model.py imports this module
    from peftlab.core.model import PeftModel

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
    """Two or more components trained together (see the module docstring).

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


@dataclass(frozen=True)
class CombinedMethod:
    """What `PeftModel.method(name)` gives for a combination: its name and derived capabilities."""

    name: str
    parts: tuple[Method, ...]

    @property
    def capabilities(self) -> Capabilities:
        every = [m.capabilities for m in self.parts]
        return Capabilities(mergeable=all(c.mergeable for c in every),
                            exact_unmerge=all(c.exact_unmerge for c in every),
                            identity_at_init=all(c.identity_at_init for c in every),
                            model_hook=any(c.model_hook for c in every),
                            supports_disable=all(c.supports_disable for c in every))


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
    return CombinationConfig(tuple(Component(m, make_config(m, **dict(fields.get(m, {}))), float(scales.get(m, 1.0)))
                                   for m in methods))


def part_name(combination: str, component: str) -> str:
    return f"{combination}{SEPARATOR}{component}"


def _probe_paths(peft_model: "PeftModel", name: str, config: MethodConfig) -> set[str]:
    """The module paths `config`'s method adapts on the model as it is (attached, then removed again)."""
    model = peft_model.model
    paths = method_for_config(config).inject(model, name, config)
    for path in paths:
        layer = model.get_submodule(path)
        layer.delete_adapter(name)
        if not layer.adapter_names:
            replace_module(model, path, layer.base_layer)
    return set(paths)


def check_conflicts(peft_model: "PeftModel", config: CombinationConfig, combination: str) -> None:
    """Refuse components that adapt the same module or whose model hooks both rewrite the inputs."""
    hooked = [c for c in config.components if method_for_config(c.config).capabilities.model_hook]
    if len(hooked) > 1:
        first, second = hooked[:2]
        raise ConfigError(f"{first.config.method} ({first.name}) and {second.config.method} ({second.name}) "
                          "both rewrite the model's inputs with a hook: combine at most one of them")
    adapted: dict[str, Component] = {}
    for component in config.components:
        for path in sorted(_probe_paths(peft_model, part_name(combination, component.name), component.config)):
            other = adapted.setdefault(path, component)
            if other is not component:
                raise ConfigError(f"{other.config.method} ({other.name}) and {component.config.method} "
                                  f"({component.name}) both adapt {path}: give them disjoint target modules")


def _check_base_parameters(peft_model: "PeftModel", config: CombinationConfig, combination: str) -> None:
    owners: dict[int, tuple[Component, str]] = {}
    for component in config.components:
        name = part_name(combination, component.name)
        trained = peft_model.method(name).base_parameters_to_train(peft_model, name, component.config)
        for path, param in trained.items():
            other, _ = owners.setdefault(id(param), (component, path))
            if other is not component:
                raise ConfigError(f"{other.config.method} ({other.name}) and {component.config.method} "
                                  f"({component.name}) both train the base parameter {path}: "
                                  "let only one of them train it (e.g. bias='none')")


def add_combination(peft_model: "PeftModel", name: str, config: CombinationConfig, *, activate: bool = True) -> None:
    """Attach every component of `config` as adapter "<name>:<component>" after the conflict checks."""
    parts = [part_name(name, c.name) for c in config.components]
    taken = [n for n in [name, *parts] if n in peft_model.configs or n in peft_model.combinations]
    if taken:
        raise ConfigError(f"adapter {taken[0]!r} exists already: choose another name or delete_adapter({taken[0]!r})")
    if not name or "." in name or SEPARATOR in name:
        raise ConfigError(f"combination name {name!r} is invalid: use a non-empty name without '.' or ':'")
    for component in config.components:
        get_method(component.config.method)  # an unknown method fails before anything is attached
    check_conflicts(peft_model, config, name)
    added = []
    try:
        for part, component in zip(parts, config.components):
            peft_model.add_adapter(part, component.config, activate=False)
            added.append(part)
        _check_base_parameters(peft_model, config, name)
    except Exception:
        for part in reversed(added):
            peft_model.delete_adapter(part)
        raise
    peft_model.combinations[name] = config
    if activate:
        peft_model.set_active(parts)


def lr_scale(peft_model: "PeftModel", adapter: str) -> float:
    """The learning-rate scale of adapter `adapter` (a combination part's, else 1.0)."""
    combination, _, component = adapter.partition(SEPARATOR)
    config = peft_model.combinations.get(combination)
    if config is None:
        return 1.0
    return next((c.lr_scale for c in config.components if c.name == component), 1.0)


def load_base(name_or_path: str, kind: str, num_labels: int | None, config: MethodConfig):
    """The base model loaded as `config`'s method declares (`Method.load_base`: float by default,
    QLoRA straight into NF4). Of a combination, the part with a loader of its own loads it; two
    such parts would each want their own base, which one model cannot be."""
    parts = [c.config for c in config.components] if isinstance(config, CombinationConfig) else [config]
    own = [part for part in parts if declares_base_loader(method_for_config(part))]
    if len(own) > 1:
        raise ConfigError(f"{own[0].method} and {own[1].method} both load the base model their own way: "
                          "combine at most one of them")
    part = own[0] if own else parts[0]
    return method_for_config(part).load_base(name_or_path, kind, num_labels, part)

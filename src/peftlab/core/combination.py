"""Several methods trained as one unit (e.g. LoRA + prompt tuning): attaching a `CombinationConfig`.

    peftlab.apply(model, make_config("lora+prompt"))            adapter_name "default"
      ├─ adapter "default:lora"     LoRA layers on the query/value projections
      └─ adapter "default:prompt"   the soft-prompt hook          both active, one optimizer

A combination is bookkeeping over ordinary named adapters: each component is added with
`PeftModel.add_adapter` under "<combination>:<component>", so the contributions add up in the
forward pass and `trainable_parameters()` unions them. The combination's name works wherever an
adapter name does in `set_active`, `merge`, `unmerge`, `delete_adapter`, `adapter_parameters`,
`save_adapter` and per-request selection (it stands for all its parts). What it adds:

* Conflict checks before anything is attached. Each part's method says which module paths it
  would adapt on the model as it is (`Method.target_paths`, a pure query); two parts adapting
  the same module are refused (one would have to wrap the other's wrapper, or would silently
  skip it), as are two parts that both have a model hook (both rewrite the inputs: prompt +
  prefix) and, after attaching, two parts that unfreeze the same base parameter.
* One trained head: only the first component gets `modules_to_save` (the combination's own
  field; None = the classification head), the others none. Two copies of the head would both
  be trainable while only the first active one is used in the forward pass.
* Learning-rate scales per component, relative to the run's rate (prompt tuning wants ~300x
  the rate of LoRA): `PeftModel.learning_rate_scales()` gives them per parameter and
  `train.schedule.make_optimizer(..., lr_scales=...)` makes the parameter groups.
* Capabilities derived from the parts (`combined_capabilities`, `core/combination_config.py`).

Merging. A combination is mergeable only if every part is, and `merge()` stays all or nothing
(it refuses when any named adapter cannot merge). The mergeable parts can be merged by name,
e.g. `peft_model.merge(["default:lora"])` folds LoRA into the weights and keeps the soft prompt
as a hook: inference then pays only the prompt's extra tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from peftlab.core.combination_config import (
    CombinationConfig, Component, combined_capabilities, part_name, SEPARATOR,
)
from peftlab.core.declaration import Capabilities
from peftlab.core.registry import declaration, method_for_config
from peftlab.errors import ConfigError

if TYPE_CHECKING:  # model.py imports this module
    from peftlab.core.model import PeftModel


@dataclass(frozen=True)
class CombinedMethod:
    """What `PeftModel.method(name)` gives for a combination: its name and derived capabilities."""

    name: str
    parts: tuple[Capabilities, ...]

    @property
    def capabilities(self) -> Capabilities:
        return combined_capabilities(self.parts)


def check_conflicts(peft_model: "PeftModel", config: CombinationConfig, combination: str) -> None:
    """Refuse components that adapt the same module or whose model hooks both rewrite the inputs."""
    hooked = [c for c in config.components if declaration(c.config.method).capabilities.model_hook]
    if len(hooked) > 1:
        first, second = hooked[:2]
        raise ConfigError(f"{first.config.method} ({first.name}) and {second.config.method} ({second.name}) "
                          "both rewrite the model's inputs with a hook: combine at most one of them")
    adapted: dict[str, Component] = {}
    model = peft_model.model
    for component in config.components:
        method = method_for_config(component.config)
        for path in sorted(method.target_paths(model, method.resolve(model, component.config))):
            other = adapted.setdefault(path, component)
            if other is not component:
                raise ConfigError(f"{other.config.method} ({other.name}) and {component.config.method} "
                                  f"({component.name}) both adapt {path}: give them disjoint target modules")


def _check_base_parameters(peft_model: "PeftModel", config: CombinationConfig, combination: str) -> None:
    owners: dict[int, tuple[Component, str]] = {}
    for component in config.components:
        name = part_name(combination, component.name)
        trained = peft_model.method(name).base_parameters_to_train(peft_model, name, peft_model.configs[name])
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
        declaration(component.config.method)  # an unknown method fails before anything is attached
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

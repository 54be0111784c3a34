"""The base model a method trains on: `load_base(model, kind, num_labels, config)`.

Most methods train on the float model (`load_model`). A method may declare a loader of its own
(`Method.load_base`: QLoRA reads the checkpoint straight into NF4, so the float block linears
never sit in memory). Of a combination, the part with a loader of its own loads the base; two
such parts would each want their own base, which one model cannot be.
"""

from __future__ import annotations

from peftlab.core.combination_config import CombinationConfig
from peftlab.core.config import MethodConfig
from peftlab.core.protocol import Method
from peftlab.core.registry import method_for_config
from peftlab.errors import ConfigError
from peftlab.models.loading import LoadedModel, load_model


def _loads_its_own_base(config: MethodConfig) -> bool:
    return type(method_for_config(config)).load_base is not Method.load_base


def load_base(name_or_path: str, kind: str, num_labels: int | None,
              config: MethodConfig | CombinationConfig) -> LoadedModel:
    """The base model for `config` (see the module docstring); `kind` and `num_labels` as `load_model`."""
    parts = [c.config for c in config.components] if isinstance(config, CombinationConfig) else [config]
    own = [part for part in parts if _loads_its_own_base(part)]
    if len(own) > 1:
        raise ConfigError(f"{own[0].method} and {own[1].method} both load the base model their own way: "
                          "combine at most one of them")
    loaded = method_for_config(own[0]).load_base(name_or_path, kind, num_labels, own[0]) if own else None
    return loaded if loaded is not None else load_model(name_or_path, kind, num_labels=num_labels)

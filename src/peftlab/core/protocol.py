"""The method protocol: what every PEFT method implements on a model (the torch side).

A method is a small class named by its declaration (`core/declaration.py`: name, config class,
capabilities, files, counts, literature), which the registry finds without importing this module.
Shared code (apply, freezing, merge, files, training, comparison) only talks to this protocol and
reads `Capabilities`; it never asks which method it is holding. The three places a method can put trainable state are:

* adapter layers (`AdapterLayer`, e.g. LoRA's A and B) that wrap a module of the base model,
* base parameters it unfreezes (`base_parameters_to_train`, e.g. LoRA's `bias="all"`, full FT),
* a model-level hook (`ModelHook`, e.g. soft prompts) that changes what the model sees.

Every one of them declares its own parameters under the key it has in the adapter file, so
freezing, optimizer groups and state dicts derive from the declarations, never from names.
"""

from __future__ import annotations

from abc import ABC, ABCMeta, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from peftlab.core.config import MethodConfig
from peftlab.core.declaration import Capabilities, MethodDeclaration
from peftlab.errors import ConfigError


class AdapterLayer(nn.Module, metaclass=ABCMeta):
    """A module that wraps one base module and carries any number of named adapters.

    Subclasses create their tensors in `create_adapter` and declare them in `adapter_params`
    under their adapter-file keys (relative to the wrapped module's path, adapter name removed,
    e.g. ``{"lora_A.weight": ..., "lora_B.weight": ...}``).

    A layer that can give every row of a batch its own adapters (per-request selection, see
    `core/row_selection.py`) says so with `supports_row_selection` and, while `row_adapters` is
    set (one tuple of adapter names per row), computes each adapter on its rows only.
    """

    supports_row_selection: ClassVar[bool] = False

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter_names: list[str] = []
        self.active_adapters: tuple[str, ...] = ()
        self.merged_adapters: list[str] = []
        self.disabled = False
        self.row_adapters: tuple[tuple[str, ...], ...] | None = None

    # --- declared by each method -------------------------------------------------------------
    @abstractmethod
    def create_adapter(self, name: str, config: MethodConfig) -> None:
        """Create the tensors of adapter `name` (initialised so the layer is a no-op where the method allows)."""

    @abstractmethod
    def adapter_params(self, name: str) -> dict[str, nn.Parameter]:
        """The trainable tensors of adapter `name`, keyed as in the adapter file relative to this module."""

    @abstractmethod
    def merge(self, name: str, *, safe: bool = False) -> None:
        """Fold adapter `name` into the base weights (delta in float32); `safe` refuses non-finite results."""

    @abstractmethod
    def unmerge(self, name: str) -> None:
        """Take a merged adapter `name` back out of the base weights."""

    @abstractmethod
    def remove_adapter_tensors(self, name: str) -> None:
        """Drop the tensors of adapter `name` (bookkeeping is done by `delete_adapter`)."""

    def file_state(self, name: str) -> dict[str, torch.Tensor]:
        """Tensors of adapter `name` as written to the adapter file (default: the declared ones).

        A layer whose trained form differs from the file format's writes its file form here
        (IA³ on GPT-2's fused q/k/v trains the k and v slices; the file holds all three)."""
        return {key: param.detach() for key, param in self.adapter_params(name).items()}

    def load_file_state(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of `file_state`; keys and shapes were already checked against `file_state(name)`."""
        with torch.no_grad():
            for key, param in self.adapter_params(name).items():
                param.copy_(tensors[key].to(param.dtype))

    # --- shared bookkeeping --------------------------------------------------------------------
    def add_adapter(self, name: str, config: MethodConfig) -> None:
        self.create_adapter(name, config)
        self.adapter_names.append(name)

    def delete_adapter(self, name: str) -> None:
        if name in self.merged_adapters:
            self.unmerge(name)
        self.remove_adapter_tensors(name)
        self.adapter_names.remove(name)
        self.active_adapters = tuple(a for a in self.active_adapters if a != name)

    def unload(self) -> nn.Module:
        """The plain module that replaces this layer in `merge_and_unload` (after merging)."""
        return self.base_layer

    def row_groups(self, batch: int, device: torch.device) -> list[tuple[str, torch.Tensor]]:
        """(adapter, row indices) for each adapter of this layer named in `row_adapters`.

        `batch` is the leading dimension of the layer's input; it must be one row per name.
        """
        rows = self.row_adapters
        if len(rows) != batch:
            raise ConfigError(f"adapter_names has {len(rows)} entries but the batch has {batch} rows: "
                              "give one adapter name per row")
        groups = []
        for name in self.adapter_names:
            indices = [i for i, names in enumerate(rows) if name in names]
            if indices:
                groups.append((name, torch.tensor(indices, device=device)))
        return groups

    def unmerged_active(self) -> tuple[str, ...]:
        """Adapters whose contribution the forward pass must still add (active, not merged)."""
        if self.disabled:
            return ()
        return tuple(a for a in self.active_adapters if a in self.adapter_names and a not in self.merged_adapters)


class ModelHook(nn.Module, metaclass=ABCMeta):
    """A model-level adapter (prefix, prompt): it changes the inputs or attention context.

    One hook object per adapter name. `PeftModel.forward` passes the keyword arguments of the
    base model's forward through `before_forward` of each active hook, and the outputs through
    `after_forward`, so no model class needs a twin.
    """

    @abstractmethod
    def adapter_params(self) -> dict[str, nn.Parameter]:
        """The hook's trainable tensors, keyed as in the adapter file (e.g. ``prompt_embeddings``)."""

    def file_state(self) -> dict[str, torch.Tensor]:
        """Tensors written to the adapter file (a reparameterised hook writes its folded form)."""
        return {key: param.detach() for key, param in self.adapter_params().items()}

    def load_file_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of `file_state`; keys were already checked against `file_state()`."""
        with torch.no_grad():
            for key, param in self.adapter_params().items():
                param.copy_(tensors[key].to(param.dtype))

    def before_forward(self, model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
        return kwargs

    def after_forward(self, outputs: Any, kwargs: dict[str, Any]) -> Any:
        return outputs

    def before_generate(self, model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
        return kwargs

    def after_generate(self, outputs: Any, kwargs: dict[str, Any]) -> Any:
        """Post-process `generate`'s result (e.g. drop placeholder columns `before_generate` added)."""
        return outputs

    def file_config(self) -> dict[str, Any]:
        """adapter_config.json fields the hook derived from the model (e.g. layer count, widths)."""
        return {}


class Method(ABC):
    """A PEFT method: how it attaches to a model. Everything else is in its `declaration`."""

    declaration: ClassVar[MethodDeclaration]
    # Prefix of module-level keys in the Hugging Face PEFT format: its tuners sit one wrapper deeper
    # ("base_model.model.<path>") than its prompt-learning methods ("base_model.<path>").
    hf_module_prefix: ClassVar[str] = "base_model.model."

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def config_class(self) -> type[MethodConfig]:
        return self.declaration.config_class

    @property
    def capabilities(self) -> Capabilities:
        return self.declaration.capabilities

    @property
    def hf_peft_type(self) -> str | None:
        return self.declaration.hf_peft_type

    def load_base(self, name_or_path: str, kind: str, num_labels: int | None, config: MethodConfig):
        """Load the base model this method trains on, when it has a way of its own: a
        `peftlab.models.LoadedModel` of `kind` ("classification" | "causal-lm"), or None for the
        float model every other method trains on (`peftlab.models.load_base` then loads it).

        A method whose `prepare_base` turns the base into another form may load straight into it
        (QLoRA: NF4, so the float block linears never sit in memory); its `prepare_base` must then
        leave such a base as it is.
        """
        return None

    def resolve(self, model: nn.Module, config: MethodConfig) -> MethodConfig:
        """`config` with what it leaves to the model filled in (default targets from the
        architecture table), so the adapter, its file and a second adapter all name the modules
        actually adapted. Default: the config as it is."""
        return config

    def prepare_base(self, model: nn.Module, config: MethodConfig) -> None:
        """Change the frozen base model in place before `inject` (QLoRA quantizes its linears).

        Default: nothing. A disabled adapter computes the *prepared* base, so tests build their
        reference by calling this on a copy of the base model.
        """

    def target_paths(self, model: nn.Module, config: MethodConfig) -> list[str]:
        """The module paths `inject` would adapt, decided without changing `model` (a pure query:
        combinations check conflicts with it before anything is attached)."""
        return []

    @abstractmethod
    def inject(self, model: nn.Module, name: str, config: MethodConfig) -> list[str]:
        """Attach adapter `name` to `model` in place; return the paths of the modules it adapted."""

    def base_parameters_to_train(self, peft_model: nn.Module, name: str,
                                 config: MethodConfig) -> dict[str, nn.Parameter]:
        """Base-model parameters this method unfreezes, by their path in the base model.

        `peft_model` is the `PeftModel`; `peft_model.base_parameters()` lists the candidates.
        """
        return {}

    def learning_rate_scales(self, peft_model: nn.Module, name: str, config: MethodConfig,
                             params: dict[str, nn.Parameter]) -> dict[str, float]:
        """Per tensor of `params` (adapter `name`'s, by optimizer key), its learning rate relative to
        the run's where it is not 1 (LoRA+ trains B faster than A). Default: none."""
        return {}

    def make_hook(self, model: nn.Module, name: str, config: MethodConfig) -> ModelHook | None:
        """The model-level hook of adapter `name`, for methods with `capabilities.model_hook`."""
        return None

    # --- adapter_config.json -------------------------------------------------------------------
    def config_to_file(self, config: MethodConfig) -> dict[str, Any]:
        """The adapter_config.json fields for `config` (Hugging Face PEFT names where it has them)."""
        return config.to_dict()

    def config_from_file(self, fields: dict[str, Any]) -> MethodConfig:
        """Inverse of `config_to_file`; unknown fields are ignored (files from other tools)."""
        known = {f for f in self.config_class.__dataclass_fields__}
        return self.config_class.from_dict({k: v for k, v in fields.items() if k in known})

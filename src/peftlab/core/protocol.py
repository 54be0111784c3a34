"""The method protocol: what every PEFT method declares and implements.

A method is a small class registered under a name. Shared code (apply, freezing, merge, files,
training, comparison) only talks to this protocol and reads `Capabilities`; it never asks which
method it is holding. The three places a method can put trainable state are:

* adapter layers (`AdapterLayer`, e.g. LoRA's A and B) that wrap a module of the base model,
* base parameters it unfreezes (`base_parameters_to_train`, e.g. LoRA's `bias="all"`, full FT),
* a model-level hook (`ModelHook`, e.g. soft prompts) that changes what the model sees.

Every one of them declares its own parameters under the key it has in the adapter file, so
freezing, optimizer groups and state dicts derive from the declarations, never from names.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from peftlab.errors import ConfigError


@dataclass(frozen=True)
class Capabilities:
    """What a method can do; shared code and the conformance suite branch on these, not on names.

    mergeable:          the learned change can be folded into the base weights (zero inference overhead).
    exact_unmerge:      unmerge restores the weights to float tolerance (IA³ divides, so it only reports).
    identity_at_init:   a fresh adapter leaves the model's outputs unchanged (B = 0, scales = 1, ...).
    model_hook:         the method changes the model's inputs or attention context (prefix, prompt).
    supports_disable:   the base model can be recovered by switching the adapter off.
    """

    mergeable: bool
    exact_unmerge: bool
    identity_at_init: bool
    model_hook: bool = False
    supports_disable: bool = True

    def as_dict(self) -> dict[str, bool]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's configuration (a small frozen dataclass, validated on creation).

    modules_to_save: modules that train in full next to the adapter (a copy per adapter name).
        None means "the output head of a sequence-classification model" (`classifier` / `score`),
        an empty tuple means none.
    """

    method: ClassVar[str]
    modules_to_save: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.modules_to_save is not None and not isinstance(self.modules_to_save, tuple):
            object.__setattr__(self, "modules_to_save", tuple(self.modules_to_save))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **json.loads(json.dumps(dataclasses.asdict(self)))}

    def replace(self, **changes: Any) -> "MethodConfig":
        return dataclasses.replace(self, **changes)


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                *, low_inclusive: bool = True) -> None:
    """Raise ConfigError naming `name`, its value and the accepted range unless low <= value <= high."""
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and value > high
    if too_low or too_high:
        bracket = "[" if low_inclusive else "("
        accepted = f"{bracket}{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"{name}={value!r} is out of range: accepted {accepted}")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not accepted: choose one of {', '.join(map(repr, choices))}")


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
    """A PEFT method: its name, config class, capabilities and how it attaches to a model."""

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    capabilities: ClassVar[Capabilities]
    # `peft_type` of the Hugging Face PEFT file format, or None where the format has none.
    hf_peft_type: ClassVar[str | None] = None
    # Prefix of module-level keys in that format: HF PEFT's tuners sit one wrapper deeper
    # ("base_model.model.<path>") than its prompt-learning methods ("base_model.<path>").
    hf_module_prefix: ClassVar[str] = "base_model.model."
    # Whether a file of `hf_peft_type` without a "peftlab" block loads as this method. A variant
    # that writes another method's format (QLoRA writes LoRA files) says False and is found by
    # the block its own files carry.
    reads_plain_hf_files: ClassVar[bool] = True

    def load_base(self, name_or_path: str, kind: str, num_labels: int | None, config: MethodConfig):
        """Load the base model this method trains on: a `peftlab.models.LoadedModel` of `kind`
        ("classification" | "causal-lm"; `num_labels` outputs for classification).

        Default: float weights (`peftlab.models.load_model`). A method whose `prepare_base` turns
        the base into another form may load straight into it (QLoRA: NF4, so the float block
        linears never sit in memory); its `prepare_base` must then leave such a base as it is.
        """
        from peftlab.models import load_model  # core does not import the model loaders at load time

        return load_model(name_or_path, kind, num_labels=num_labels)

    def prepare_base(self, model: nn.Module, config: MethodConfig) -> None:
        """Change the frozen base model in place before `inject` (QLoRA quantizes its linears).

        Default: nothing. A disabled adapter computes the *prepared* base, so tests build their
        reference by calling this on a copy of the base model.
        """

    @abstractmethod
    def inject(self, model: nn.Module, name: str, config: MethodConfig) -> list[str]:
        """Attach adapter `name` to `model` in place; return the paths of the modules it adapted."""

    def base_parameters_to_train(self, peft_model: nn.Module, name: str,
                                 config: MethodConfig) -> dict[str, nn.Parameter]:
        """Base-model parameters this method unfreezes, by their path in the base model.

        `peft_model` is the `PeftModel`; `peft_model.base_parameters()` lists the candidates.
        """
        return {}

    def make_hook(self, model: nn.Module, name: str, config: MethodConfig) -> ModelHook | None:
        """The model-level hook of adapter `name`, for methods with `capabilities.model_hook`."""
        return None

    def default_targets(self, model: nn.Module) -> tuple[str, ...] | None:
        """Target modules used when the config names none (per architecture), if the method has targets."""
        return None

    # --- adapter_config.json -------------------------------------------------------------------
    def config_to_file(self, config: MethodConfig) -> dict[str, Any]:
        """The adapter_config.json fields for `config` (Hugging Face PEFT names where it has them)."""
        return config.to_dict()

    def config_from_file(self, fields: dict[str, Any]) -> MethodConfig:
        """Inverse of `config_to_file`; unknown fields are ignored (files from other tools)."""
        known = {f.name for f in dataclasses.fields(self.config_class)}
        return self.config_class(**{k: v for k, v in fields.items() if k in known})


def declares_base_loader(method: Method) -> bool:
    """Whether `method` loads its base model its own way (overrides `Method.load_base`)."""
    return type(method).load_base is not Method.load_base

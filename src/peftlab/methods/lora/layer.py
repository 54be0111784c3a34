"""LoRA: Low-Rank Adaptation (Hu et al., 2021, arXiv:2106.09685).

A frozen weight W (out × in) is adapted by a low-rank product:

    h = W x + (α / r) · B A x          A: (r × in), B: (out × r), r ≪ min(in, out)

    x ──┬──────── W ───────────┐
        └─ dropout ─ A ─ B ─ ×s ┴─▶ h          s = α / r   (rsLoRA: α / √r, Kalajdzievski 2023)

B starts at zero, so a fresh adapter is an exact no-op; A starts Kaiming-uniform (the nn.Linear
default) or Gaussian with std 1/r. Merging adds s·BA to W (computed in float32); unmerging
subtracts it. GPT-2's Conv1D stores W transposed (in × out), so its delta is (BA)ᵀ. For
nn.Embedding the roles swap (A: r × vocab starts at zero, B: dim × r Gaussian) and the update is
a lookup in Aᵀ followed by Bᵀ, as in Hugging Face PEFT, whose file keys we keep
(``lora_A.weight``, ``lora_B.weight``, ``lora_embedding_A``, ``lora_embedding_B``).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab.core.architectures import ARCHITECTURES
from peftlab.core.protocol import AdapterLayer, Method
from peftlab.core.targets import (
    file_path, find_targets, is_linear, linear_features, module_device, replace_module,
)
from peftlab.errors import MergeError
from peftlab.methods.lora.config import DECLARATION, DEFAULT_ROLES, LoraConfig
from peftlab.methods.lora.fused import fused_lora_forward


class _LoraBase(AdapterLayer):
    """Shared bookkeeping of the linear and embedding LoRA layers: scaling, delta merging, and
    adding adapter outputs (all rows, or per request: LoRA is additive per row, so rows can differ)."""

    supports_row_selection = True

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.scaling: dict[str, float] = {}

    @abstractmethod
    def delta_weight(self, name: str) -> torch.Tensor:
        """s·BA in the base weight's layout, computed in float32."""

    def low_rank_delta(self, name: str) -> bool:
        """Whether adapter `name` changes the weight by s·B A alone (what combining factors assumes);
        a variant whose change is more than the factors (DoRA's magnitude) says False."""
        return True

    @abstractmethod
    def factors(self, name: str) -> tuple[nn.Parameter, nn.Parameter]:
        """(A, B) of adapter `name` in the B·A layout: A (r, in), B (out, r); for an embedding in = vocab."""

    @abstractmethod
    def adapter_output(self, name: str, x: torch.Tensor, base_output: torch.Tensor) -> torch.Tensor:
        """What adapter `name` adds to the base layer's output `base_output` for input `x`
        (LoRA's does not depend on it; a variant that rescales the base output reads it)."""

    def add_adapter_outputs(self, result: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`result` (the base output) plus the unmerged active adapters' outputs.

        Under per-request selection (`row_adapters` set) each adapter is computed on its own rows
        only and added there (`index_add` along the batch dimension), so every row gets exactly
        what it would get alone with its adapters active.
        """
        base_output = result
        if self.row_adapters is not None:
            for name, rows in self.row_groups(x.shape[0], x.device):
                output = self.adapter_output(name, x[rows], base_output[rows])
                result = result.index_add(0, rows, output.to(result.dtype))
            return result
        for name in self.unmerged_active():
            result = result + self.adapter_output(name, x, base_output).to(result.dtype)
        return result

    def _base_weight(self) -> torch.Tensor:
        return self.base_layer.weight

    def merge(self, name: str, *, safe: bool = False) -> None:
        weight = self._base_weight()
        delta = self.delta_weight(name)
        if safe:
            merged = weight.detach().float() + delta.float()
            if not torch.isfinite(merged).all():
                raise MergeError(f"merging adapter {name!r} gives non-finite weights; the adapter is "
                                 "corrupt or diverged, the model was left unmerged")
            weight.data.copy_(merged.to(weight.dtype))
        else:
            weight.data += delta.to(weight.dtype)

    def unmerge(self, name: str) -> None:
        weight = self._base_weight()
        weight.data -= self.delta_weight(name).to(weight.dtype)


class LoraLinear(_LoraBase):
    """LoRA around nn.Linear, GPT-2's Conv1D, or a quantized linear (anything `is_linear`).

    A quantized weight cannot absorb a float delta: the first merge swaps in the layer's float
    form (``to_float_layer()``: the dequantized weight, then s·BA added) and keeps the packed
    layer aside; unmerging the last merged adapter puts the packed layer back, bit for bit.
    """

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.in_features, self.out_features = linear_features(base_layer)
        self.quantized_base: nn.Module | None = None  # the packed layer while merged into a float copy
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()

    def create_adapter(self, name: str, config: LoraConfig) -> None:
        factory = {"device": module_device(self.base_layer), "dtype": torch.float32}
        lora_a = nn.Linear(self.in_features, config.r, bias=False, **factory)
        lora_b = nn.Linear(config.r, self.out_features, bias=False, **factory)
        if config.init == "gaussian":
            nn.init.normal_(lora_a.weight, std=1.0 / config.r)
        else:
            nn.init.kaiming_uniform_(lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(lora_b.weight)
        self.lora_A[name] = lora_a
        self.lora_B[name] = lora_b
        self.lora_dropout[name] = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.scaling[name] = config.scaling

    def adapter_params(self, name: str) -> dict[str, nn.Parameter]:
        return {"lora_A.weight": self.lora_A[name].weight, "lora_B.weight": self.lora_B[name].weight}

    def remove_adapter_tensors(self, name: str) -> None:
        for container in (self.lora_A, self.lora_B, self.lora_dropout):
            del container[name]
        del self.scaling[name]

    @property
    def weight_is_transposed(self) -> bool:
        return isinstance(self.base_layer, Conv1D)  # Conv1D weight: (in, out)

    def merge(self, name: str, *, safe: bool = False) -> None:
        if not getattr(self.base_layer, "is_quantized_linear", False):
            super().merge(name, safe=safe)
            return
        packed, self.base_layer = self.base_layer, self.base_layer.to_float_layer()
        try:
            super().merge(name, safe=safe)
        except MergeError:
            self.base_layer = packed
            raise
        self.quantized_base = packed

    def unmerge(self, name: str) -> None:
        if self.quantized_base is not None and self.merged_adapters == [name]:
            self.base_layer, self.quantized_base = self.quantized_base, None  # no float round trip
            return
        super().unmerge(name)

    def delta_weight(self, name: str) -> torch.Tensor:
        delta = (self.lora_B[name].weight.float() @ self.lora_A[name].weight.float()) * self.scaling[name]
        return delta.T if self.weight_is_transposed else delta  # (out, in) or Conv1D's (in, out)

    def factors(self, name: str) -> tuple[nn.Parameter, nn.Parameter]:
        return self.lora_A[name].weight, self.lora_B[name].weight

    def adapter_output(self, name: str, x: torch.Tensor, base_output: torch.Tensor) -> torch.Tensor:
        """s · B A dropout(x): (..., in) -> (..., out), in the adapter's float32."""
        lora_a, lora_b = self.lora_A[name].weight, self.lora_B[name].weight
        hidden = F.linear(self.lora_dropout[name](x).to(lora_a.dtype), lora_a)  # (..., r)
        return F.linear(hidden, lora_b) * self.scaling[name]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        fused = None if args or kwargs else fused_lora_forward(self, x)  # one autograd node, see fused.py
        if fused is not None:
            return fused
        result = self.base_layer(x, *args, **kwargs)
        return self.add_adapter_outputs(result, x)


class LoraEmbedding(_LoraBase):
    """LoRA around nn.Embedding: h = E[ids] + s · (Aᵀ[ids]) Bᵀ."""

    def __init__(self, base_layer: nn.Embedding) -> None:
        super().__init__(base_layer)
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()

    def create_adapter(self, name: str, config: LoraConfig) -> None:
        num_embeddings, dim = self.base_layer.weight.shape
        device = self.base_layer.weight.device
        # A = 0 makes the fresh adapter a no-op while B carries the random start (as HF PEFT does).
        self.lora_embedding_A[name] = nn.Parameter(torch.zeros(config.r, num_embeddings, device=device))
        self.lora_embedding_B[name] = nn.Parameter(torch.randn(dim, config.r, device=device))
        self.scaling[name] = config.scaling

    def adapter_params(self, name: str) -> dict[str, nn.Parameter]:
        return {"lora_embedding_A": self.lora_embedding_A[name], "lora_embedding_B": self.lora_embedding_B[name]}

    def remove_adapter_tensors(self, name: str) -> None:
        del self.lora_embedding_A[name], self.lora_embedding_B[name]
        del self.scaling[name]

    def delta_weight(self, name: str) -> torch.Tensor:
        delta = self.lora_embedding_B[name].float() @ self.lora_embedding_A[name].float()  # (dim, vocab)
        return delta.T * self.scaling[name]  # (vocab, dim), the embedding weight's layout

    def factors(self, name: str) -> tuple[nn.Parameter, nn.Parameter]:
        return self.lora_embedding_A[name], self.lora_embedding_B[name]

    def adapter_output(self, name: str, ids: torch.Tensor, base_output: torch.Tensor) -> torch.Tensor:
        """s · (Aᵀ[ids]) Bᵀ: (...) token ids -> (..., dim)."""
        embedding = self.base_layer
        after_a = F.embedding(ids, self.lora_embedding_A[name].T, embedding.padding_idx,
                              embedding.max_norm, embedding.norm_type,
                              embedding.scale_grad_by_freq, embedding.sparse)  # (..., r)
        return (after_a @ self.lora_embedding_B[name].T) * self.scaling[name]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.add_adapter_outputs(self.base_layer(ids), ids)


def make_lora_layer(module: nn.Module) -> _LoraBase:
    return LoraEmbedding(module) if isinstance(module, nn.Embedding) else LoraLinear(module)


def lora_can_wrap(module: nn.Module) -> bool:
    """LoRA wraps linear layers (nn.Linear, Conv1D, quantized) and embeddings, or adds to its own layers."""
    return isinstance(module, (nn.Embedding, _LoraBase)) or is_linear(module)


def lora_default_targets(model: nn.Module) -> tuple[str, ...] | str:
    """The query and value projections' names from the architecture table; "all-linear" for a
    model_type the table does not describe."""
    row = ARCHITECTURES.get(getattr(getattr(model, "config", None), "model_type", None))
    return "all-linear" if row is None else row.names(DEFAULT_ROLES)


def lora_bias_parameters(peft_model: nn.Module, name: str, config: LoraConfig) -> dict[str, nn.Parameter]:
    """The base biases that `config.bias` unfreezes."""
    if config.bias == "none":
        return {}
    biases = {path: p for path, p in peft_model.base_parameters().items() if path.endswith(".bias")}
    if config.bias == "all":
        return biases
    adapted = {file_path(path) for path, layer in peft_model.adapter_layers(name) if isinstance(layer, _LoraBase)}
    return {path: p for path, p in biases.items() if path.rpartition(".")[0] in adapted}


class Lora(Method):
    """Applies LoRA layers; a LoRA-family variant overrides `can_wrap` / `make_layer` to put its own
    layer on the same targets."""

    declaration = DECLARATION

    def can_wrap(self, module: nn.Module) -> bool:
        """Whether this method can adapt `module` (a layer it made itself takes further adapters)."""
        return lora_can_wrap(module)

    def make_layer(self, module: nn.Module) -> _LoraBase:
        return make_lora_layer(module)

    def resolve(self, model: nn.Module, config: LoraConfig) -> LoraConfig:
        if config.target_modules is not None:
            return config
        return config.replace(target_modules=lora_default_targets(model))

    def target_paths(self, model: nn.Module, config: LoraConfig) -> list[str]:
        """The module paths `config` selects (a pure query; None targets mean the defaults)."""
        targets = config.target_modules if config.target_modules is not None else lora_default_targets(model)
        return find_targets(model, targets, accepts=self.can_wrap, exclude=config.exclude_modules,
                            layers=config.layers, method=self.name)

    def inject(self, model: nn.Module, name: str, config: LoraConfig) -> list[str]:
        """Wrap every target module of `model` in a LoRA layer (or add `name` to an existing one)."""
        paths = self.target_paths(model, config)
        for path in paths:
            module = model.get_submodule(path)
            layer = module if isinstance(module, _LoraBase) else self.make_layer(module)
            if layer is not module:
                replace_module(model, path, layer)
            layer.add_adapter(name, config)
        return paths

    def base_parameters_to_train(self, peft_model: nn.Module, name: str,
                                 config: LoraConfig) -> dict[str, nn.Parameter]:
        return lora_bias_parameters(peft_model, name, config)

    def config_to_file(self, config: LoraConfig) -> dict[str, Any]:
        def listed(value):
            return list(value) if isinstance(value, tuple) else value
        return {
            "r": config.r,
            "lora_alpha": config.alpha,
            "lora_dropout": config.dropout,
            "target_modules": listed(config.target_modules),
            "exclude_modules": listed(config.exclude_modules),
            "layers_to_transform": listed(config.layers),
            "bias": config.bias,
            "use_rslora": config.use_rslora,
            "init_lora_weights": True if config.init == "kaiming" else config.init,
        }

    def config_from_file(self, fields: dict[str, Any]) -> LoraConfig:
        layers = fields.get("layers_to_transform")
        init = fields.get("init_lora_weights", True)
        return self.config_class.from_dict({
            "r": fields.get("r", 8),
            "alpha": fields.get("lora_alpha", 8),
            "dropout": fields.get("lora_dropout", 0.0),
            "target_modules": fields.get("target_modules"),
            "exclude_modules": fields.get("exclude_modules"),
            "layers": (layers,) if isinstance(layers, int) and not isinstance(layers, bool) else layers,
            "bias": fields.get("bias", "none"),
            "use_rslora": fields.get("use_rslora", False),
            # HF PEFT's True (and False, its "no-op start" for tests) is Kaiming-uniform A; a string
            # names the init itself ("gaussian", "pissa", ...), which the config class validates.
            "init": "kaiming" if isinstance(init, bool) else init,
        })

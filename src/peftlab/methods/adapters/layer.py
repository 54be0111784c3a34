"""Bottleneck adapters: Houlsby et al., 2019 ("Parameter-Efficient Transfer Learning for NLP",
arXiv:1902.00751) and Pfeiffer et al., 2021 ("AdapterFusion", arXiv:2005.00247); the parallel
variant after He et al., 2022 ("Towards a Unified View of PEFT", arXiv:2110.04366).

A small two-layer network is added residually to the output of a sublayer's output projection
(before its dropout, residual and LayerNorm, where AdapterHub puts it):

    h = proj(x)                                                     (..., d)
    h ← h + s · (W_up σ(W_down h + b_down) + b_up)                  W_down: (m × d), W_up: (d × m)
    parallel: h ← h + s · (W_up σ(W_down u + b_down) + b_up)        u: the sublayer's input (..., d)

        h ──┬──────────────────────────────┐
            └─ W_down ─ σ ─ W_up ─ × s ────┴─▶ h        (parallel: u feeds W_down instead)

W_up and b_up start at zero, so a fresh adapter is an exact no-op; W_down keeps nn.Linear's
Kaiming-uniform start. m is `bottleneck_size`, or d // `reduction_factor`. Placements:

    houlsby    after the attention output projection and after the FFN, 2 adapters per block
    pfeiffer   after the FFN only, 1 adapter per block

so Houlsby trains 2 · (2·d·m + d + m) · L parameters (2·2·d·m · L with `use_bias=False`). The
output projections are the roles o and down of the architecture table (`core/architectures.py`):
BERT `attention.output.dense` / `layer.N.output.dense`, GPT-2 `attn.c_proj` / `mlp.c_proj`,
LLaMA `self_attn.o_proj` / `mlp.down_proj`, DistilBERT `attention.out_lin` / `ffn.lin2`. The projection does not see the sublayer's input that
the parallel variant reads, so a forward pre-hook on the projection's parent (the sublayer
module, or BERT's BertSelfOutput / BertOutput which receive the residual input) hands it over;
the projection consumes it in the same forward pass.

Several active adapters apply in sequence (each sequential one reads the output so far). The
computation is nonlinear, so it cannot be merged into the base weights. There is no Hugging
Face PEFT format for these adapters: files carry a "peftlab" block (see `core/files.py`), with
tensor keys ``<projection>.adapter_down.weight`` / ``.bias`` and ``adapter_up.weight`` / ``.bias``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from peftlab.core.architectures import model_architecture
from peftlab.core.protocol import AdapterLayer, Method
from peftlab.core.targets import find_targets, is_linear, linear_features, module_device, replace_module
from peftlab.errors import MergeError, PeftlabError
from peftlab.methods.adapters.config import DECLARATION, PLACEMENTS, AdapterConfig

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh,
               "sigmoid": nn.Sigmoid, "identity": nn.Identity}


class BottleneckLayer(AdapterLayer):
    """Bottleneck adapters on the output of one projection (nn.Linear or Conv1D)."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.out_features = _output_width(base_layer)
        self.adapter_down = nn.ModuleDict()
        self.adapter_up = nn.ModuleDict()
        self.activation = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self.parallel: dict[str, bool] = {}
        # Parallel adapters: the sublayer input, set by a pre-hook on the parent, used once.
        self.sublayer_input: torch.Tensor | None = None
        self._input_hook = None

    def create_adapter(self, name: str, config: AdapterConfig) -> None:
        d, m = self.out_features, config.bottleneck(self.out_features)
        factory = {"device": module_device(self.base_layer), "dtype": torch.float32, "bias": config.use_bias}
        self.adapter_down[name] = nn.Linear(d, m, **factory)
        up = nn.Linear(m, d, **factory)
        nn.init.zeros_(up.weight)
        if up.bias is not None:
            nn.init.zeros_(up.bias)
        self.adapter_up[name] = up
        self.activation[name] = ACTIVATIONS[config.activation]()
        self.scaling[name] = config.scaling
        self.parallel[name] = config.parallel

    def adapter_params(self, name: str) -> dict[str, nn.Parameter]:
        down, up = self.adapter_down[name], self.adapter_up[name]
        params = {"adapter_down.weight": down.weight, "adapter_down.bias": down.bias,
                  "adapter_up.weight": up.weight, "adapter_up.bias": up.bias}
        return {key: param for key, param in params.items() if param is not None}

    def remove_adapter_tensors(self, name: str) -> None:
        for container in (self.adapter_down, self.adapter_up, self.activation):
            del container[name]
        del self.scaling[name], self.parallel[name]
        if self._input_hook is not None and not any(self.parallel.values()):
            self._input_hook.remove()
            self._input_hook = None

    def read_sublayer_input(self, parent: nn.Module, argument: tuple[str, int]) -> None:
        """Capture `parent`'s input argument (by keyword name or position) for parallel adapters."""
        if self._input_hook is not None:
            return
        keyword, position = argument

        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.sublayer_input = kwargs[keyword] if keyword in kwargs else args[position]

        self._input_hook = parent.register_forward_pre_hook(capture, with_kwargs=True)

    def merge(self, name: str, *, safe: bool = False) -> None:
        raise MergeError(f"bottleneck adapter {name!r} cannot be merged: W_up σ(W_down h) is nonlinear in h, "
                         "so it is no change of the base weights")

    def unmerge(self, name: str) -> None:
        """Nothing to take out: `merge` never folds a bottleneck adapter into the weights."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        sublayer_input, self.sublayer_input = self.sublayer_input, None
        result = self.base_layer(x, *args, **kwargs)  # (..., d)
        for name in self.unmerged_active():
            source = result
            if self.parallel[name]:
                if sublayer_input is None:
                    raise PeftlabError(f"parallel adapter {name!r} got no sublayer input: call the model, "
                                       "not the projection alone")
                source = sublayer_input
            down = self.adapter_down[name]
            hidden = self.activation[name](down(source.to(down.weight.dtype)))  # (..., m)
            result = result + (self.adapter_up[name](hidden) * self.scaling[name]).to(result.dtype)
        return result


def _output_width(module: nn.Module) -> int:
    return module.out_features if isinstance(module, BottleneckLayer) else linear_features(module)[1]


class BottleneckAdapters(Method):
    declaration = DECLARATION

    def target_paths(self, model: nn.Module, config: AdapterConfig) -> list[str]:
        """The output projections of the sublayers `config.placement` names (architecture table roles)."""
        row = model_architecture(model, purpose="bottleneck adapters")
        return find_targets(model, row.pattern(PLACEMENTS[config.placement]), method=self.name,
                            accepts=lambda m: is_linear(m) or isinstance(m, BottleneckLayer))

    def inject(self, model: nn.Module, name: str, config: AdapterConfig) -> list[str]:
        row = model_architecture(model, purpose="bottleneck adapters")
        paths = self.target_paths(model, config)
        for path in paths:  # a bad reduction factor fails before any module is wrapped
            config.bottleneck(_output_width(model.get_submodule(path)))
        for path in paths:
            module = model.get_submodule(path)
            layer = module if isinstance(module, BottleneckLayer) else BottleneckLayer(module)
            if layer is not module:
                replace_module(model, path, layer)
            layer.add_adapter(name, config)
            if config.parallel:
                parent = model.get_submodule(path.rpartition(".")[0])
                site = next(role for role in PLACEMENTS[config.placement] if re.fullmatch(row.pattern((role,)), path))
                layer.read_sublayer_input(parent, row.sublayer_inputs[site])
        return paths

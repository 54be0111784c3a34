"""IA³: Infused Adapter by Inhibiting and Amplifying Inner Activations (Liu et al., 2022,
"Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning",
arXiv:2205.05638).

Three learned vectors per transformer block rescale the attention keys, the values and the FFN
intermediate activation; they start at ones, so a fresh adapter is an exact no-op:

    k ← l_k ⊙ k        l_k: (d_k,)   d_k = d_v = n_kv_heads · head_dim (GQA-aware)
    v ← l_v ⊙ v        l_v: (d_v,)
    h ← W_down (l_ff ⊙ σ(W_up x))      l_ff: (d_ff,)

As in Hugging Face PEFT, a vector on an ordinary target multiplies the layer's OUTPUT
(k_proj, value, ...: shape out_features) and a vector on a "feedforward" target multiplies its
INPUT (down_proj, BERT's FFN output.dense: shape in_features):

    output scaling   y = l ⊙ (W x + b)   merge: W ← diag(l) W, b ← l ⊙ b    vector (out, 1)
    input scaling    y = W (l ⊙ x) + b   merge: W ← W diag(l)                vector (1, in)

Merging folds the vectors into the weights (in float32); unmerging divides, which is exact only
to rounding: each layer records the residual of the division in `unmerge_error` and
`unmerge_error(peft_model)` reports the largest one.

GPT-2's fused `c_attn` computes [q; k; v] (3 · d outputs) in one Conv1D. Only the k and v slices
are scaled: the trainable vector has 2 · d entries. Hugging Face PEFT keeps one vector over all
3 · d outputs (scaling q too), so the file holds that full-length form with ones on the q slice;
loading refuses a file whose q slice is not all ones (peftlab cannot represent it).

Default targets: the roles k, v and down of the architecture table (`core/architectures.py`),
written to adapter_config.json as full-match regular expressions of the model's own paths so
Hugging Face PEFT selects exactly the same modules:

    bert / roberta   attention.self.key, attention.self.value, layer.N.output.dense (ffn)
    distilbert       attention.k_lin, attention.v_lin, ffn.lin2 (ffn)
    gpt2             attn.c_attn (k and v slices), mlp.c_proj (ffn)
    llama / mistral / qwen2   self_attn.k_proj, self_attn.v_proj, mlp.down_proj (ffn)

(Hugging Face PEFT's own BERT default, the suffix "output.dense", also matches the attention
output projection; ours scales the FFN only, for (d_k + d_v + d_ff) · L vectors in total.)
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab.core.architectures import ARCHITECTURES, model_architecture
from peftlab.core.protocol import AdapterLayer, Method
from peftlab.core.targets import named_by, find_targets, linear_features, module_device, replace_module
from peftlab.errors import AdapterFileError, ConfigError, MergeError
from peftlab.methods.ia3.config import DECLARATION, DEFAULT_ROLES, FEEDFORWARD_ROLES, IA3Config
from peftlab.models.architecture import head_dim, num_kv_heads

# Below this magnitude a scale cannot be divided back out of a merged weight.
_MIN_UNMERGE_SCALE = 1e-6


class IA3Layer(AdapterLayer):
    """IA³ vectors around one nn.Linear or Conv1D, scaling its input or its output.

    `fixed_outputs` leading outputs are never scaled (the q slice of a fused q/k/v projection).
    """

    def __init__(self, base_layer: nn.Module, *, scales_input: bool, fixed_outputs: int = 0) -> None:
        super().__init__(base_layer)
        self.in_features, self.out_features = linear_features(base_layer)
        self.scales_input = scales_input
        self.fixed_outputs = fixed_outputs
        self.weight_is_transposed = isinstance(base_layer, Conv1D)  # Conv1D weight: (in, out)
        self.ia3_l = nn.ParameterDict()
        self.unmerge_error: dict[str, float] = {}

    def create_adapter(self, name: str, config: IA3Config) -> None:
        shape = (1, self.in_features) if self.scales_input else (self.out_features - self.fixed_outputs, 1)
        self.ia3_l[name] = nn.Parameter(torch.ones(shape, device=module_device(self.base_layer)))

    def adapter_params(self, name: str) -> dict[str, nn.Parameter]:
        return {"ia3_l": self.ia3_l[name]}

    def remove_adapter_tensors(self, name: str) -> None:
        del self.ia3_l[name]
        self.unmerge_error.pop(name, None)

    # --- the file form: Hugging Face PEFT's full-length vector ----------------------------------
    def file_state(self, name: str) -> dict[str, torch.Tensor]:
        vector = self.ia3_l[name].detach()
        if self.fixed_outputs:
            vector = torch.cat([vector.new_ones(self.fixed_outputs, 1), vector])  # (out, 1)
        return {"ia3_l": vector}

    def load_file_state(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        vector = tensors["ia3_l"]
        fixed = vector[:self.fixed_outputs]
        if not torch.all(fixed == 1):
            raise AdapterFileError(
                f"the IA³ vector of this fused q/k/v layer scales the query slice ({fixed.numel()} entries, "
                f"{int((fixed != 1).sum())} not 1): peftlab scales keys and values only; train the adapter "
                "with the query slice frozen at 1 or target separate projections")
        with torch.no_grad():
            self.ia3_l[name].copy_(vector[self.fixed_outputs:].to(self.ia3_l[name].dtype))

    # --- computing -------------------------------------------------------------------------------
    def full_vector(self, name: str) -> torch.Tensor:
        """The scale of every input (or output) feature in float32, ones on the fixed slice."""
        vector = self.ia3_l[name].float().flatten()
        if self.fixed_outputs:
            vector = torch.cat([vector.new_ones(self.fixed_outputs), vector])
        return vector

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        names = self.unmerged_active()
        if not names:
            return self.base_layer(x, *args, **kwargs)
        scale = self.full_vector(names[0])
        for name in names[1:]:  # stacked adapters multiply
            scale = scale * self.full_vector(name)
        if self.scales_input:
            return self.base_layer((x * scale).to(x.dtype), *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        return (result * scale).to(result.dtype)

    def _weight_factor(self, vector: torch.Tensor) -> torch.Tensor:
        """`vector` shaped to broadcast over the base weight: along out (rows of nn.Linear's
        (out, in) weight) or along in; Conv1D's (in, out) weight swaps the two."""
        along_rows = (not self.scales_input) != self.weight_is_transposed
        return vector[:, None] if along_rows else vector[None, :]

    def merge(self, name: str, *, safe: bool = False) -> None:
        vector = self.full_vector(name)
        weight, bias = self.base_layer.weight, self.base_layer.bias
        merged_weight = weight.detach().float() * self._weight_factor(vector)
        scale_bias = bias is not None and not self.scales_input
        merged_bias = bias.detach().float() * vector if scale_bias else None
        if safe and not (torch.isfinite(merged_weight).all()
                         and (merged_bias is None or torch.isfinite(merged_bias).all())):
            raise MergeError(f"merging IA³ adapter {name!r} gives non-finite weights; the adapter is "
                             "corrupt or diverged, the model was left unmerged")
        weight.data.copy_(merged_weight.to(weight.dtype))
        if scale_bias:
            bias.data.copy_(merged_bias.to(bias.dtype))

    def unmerge(self, name: str) -> None:
        """Divide the vector back out; records the largest residual |W'·l − W_merged| in `unmerge_error`."""
        vector = self.full_vector(name)
        tiny = int((vector.abs() < _MIN_UNMERGE_SCALE).sum())
        if tiny:
            raise MergeError(f"cannot unmerge IA³ adapter {name!r}: {tiny} of its scales are (near) zero, so "
                             "the merged weights lost those features; reload the base model instead")
        tensors = [(self.base_layer.weight, self._weight_factor(vector))]
        if self.base_layer.bias is not None and not self.scales_input:
            tensors.append((self.base_layer.bias, vector))
        error = 0.0
        for tensor, factor in tensors:
            merged = tensor.detach().float()
            restored = (merged / factor).to(tensor.dtype)
            error = max(error, (restored.float() * factor - merged).abs().max().item())
            tensor.data.copy_(restored)
        self.unmerge_error[name] = error


def unmerge_error(peft_model: nn.Module) -> float:
    """The largest residual recorded by the last unmerge of any IA³ layer (0.0 if none)."""
    return max((error for _, layer in peft_model.adapter_layers() if isinstance(layer, IA3Layer)
                for error in layer.unmerge_error.values()), default=0.0)


def ia3_can_wrap(module: nn.Module) -> bool:
    """IA³ wraps layers whose weight it can fold a vector into, or adds to an IA³ layer."""
    return isinstance(module, (nn.Linear, Conv1D, IA3Layer))


def _fixed_outputs(model: nn.Module, path: str, module: nn.Module, scales_input: bool) -> int:
    """How many leading outputs of `module` stay unscaled: the q slice of a fused q/k/v layer."""
    row = ARCHITECTURES.get(getattr(model.config, "model_type", None))
    if scales_input or row is None:
        return 0
    fused = re.fullmatch(row.pattern(("q",)), path) and re.fullmatch(row.pattern(("k",)), path)
    return linear_features(module)[1] - 2 * num_kv_heads(model) * head_dim(model) if fused else 0


class IA3(Method):
    declaration = DECLARATION

    def resolve(self, model: nn.Module, config: IA3Config) -> IA3Config:
        """The architecture's keys, values and FFN down projection (as regexes of its paths) where
        the config names no targets, and its down projections as the input-scaled ones."""
        if config.target_modules is not None and config.feedforward_modules is not None:
            return config
        row = model_architecture(model, purpose="IA³ (set target_modules and feedforward_modules)")
        return config.replace(
            target_modules=row.pattern(DEFAULT_ROLES) if config.target_modules is None else config.target_modules,
            feedforward_modules=row.pattern(FEEDFORWARD_ROLES) if config.feedforward_modules is None
            else config.feedforward_modules)

    def target_paths(self, model: nn.Module, config: IA3Config) -> list[str]:
        return find_targets(model, config.target_modules, accepts=ia3_can_wrap, exclude=config.exclude_modules,
                            method=self.name)

    def inject(self, model: nn.Module, name: str, config: IA3Config) -> list[str]:
        paths = self.target_paths(model, config)
        plan = [(path, model.get_submodule(path), named_by(path, config.feedforward_modules)) for path in paths]
        for path, module, scales_input in plan:  # check all before changing any
            if isinstance(module, IA3Layer) and module.scales_input != scales_input:
                raise ConfigError(f"{path} already scales its {'input' if module.scales_input else 'output'} "
                                  f"for another IA³ adapter; adapter {name!r} must do the same "
                                  "(make feedforward_modules agree)")
        for path, module, scales_input in plan:
            layer = module
            if not isinstance(module, IA3Layer):
                layer = IA3Layer(module, scales_input=scales_input,
                                 fixed_outputs=_fixed_outputs(model, path, module, scales_input))
                replace_module(model, path, layer)
            layer.add_adapter(name, config)
        return paths

    def config_to_file(self, config: IA3Config) -> dict[str, Any]:
        def listed(value):
            return list(value) if isinstance(value, tuple) else value
        return {"target_modules": listed(config.target_modules),
                "feedforward_modules": listed(config.feedforward_modules),
                "exclude_modules": listed(config.exclude_modules),
                "init_ia3_weights": True}

    def config_from_file(self, fields: dict[str, Any]) -> IA3Config:
        return IA3Config.from_dict({key: fields.get(key) for key in
                                    ("target_modules", "feedforward_modules", "exclude_modules")})

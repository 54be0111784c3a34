"""DoRA: Weight-Decomposed Low-Rank Adaptation (Liu et al., 2024, arXiv:2402.09353).

A frozen weight W (out × in) is written as a magnitude times a direction, and both adapt: the
direction through LoRA's low-rank update, the magnitude m (one value per output) directly:

    W' = m ⊙ (W + s·B A) / ‖W + s·B A‖_row          m: (out,), ‖·‖_row: the L2 norm of each output row
    h  = W' x + b = W x + b + (m / ‖W + s·BA‖ − 1) ⊙ W x + (m / ‖W + s·BA‖) ⊙ s·B A x

    x ──┬──────── W ─────────────┬──────────────────────────── + ─▶ h
        │                        └─ × (m/‖·‖ − 1) ─────────────┤
        └─ dropout ─ A ─ B ─ ×s ─── × m/‖·‖ ───────────────────┘

m starts at ‖W‖_row and B at zero, so a fresh adapter is an exact no-op. As the paper suggests
(Sec. 4.3), the norm is treated as a constant in backward (detached): it follows ΔW but takes no
gradient, which saves the memory of differentiating through it. The forward pass reuses the base
layer's output W x (without its bias) unless dropout is on in training, where W is applied to the
dropped input, as Hugging Face PEFT does. Merging writes W' into the weight (float32) and keeps
‖W + s·BA‖ so unmerging restores W = W' · ‖W + s·BA‖ / m − s·BA.

Files are LoRA files with `use_dora: true` and the magnitude under ``lora_magnitude_vector``, as
Hugging Face PEFT writes them. DoRA wraps float linear layers (nn.Linear, GPT-2's Conv1D); a layer
may carry DoRA and plain LoRA adapters side by side (a LoRA adapter there has no magnitude).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab.core.protocol import AdapterLayer
from peftlab.errors import MergeError
from peftlab.methods.dora.config import DECLARATION, DoraConfig
from peftlab.methods.lora.config import LoraConfig
from peftlab.methods.lora.layer import Lora, LoraLinear


class DoraLinear(LoraLinear):
    """LoRA around a float nn.Linear / Conv1D with a magnitude vector per DoRA adapter."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.lora_magnitude_vector = nn.ParameterDict()
        self.merge_norms: dict[str, torch.Tensor] = {}  # ‖W + s·BA‖ at merge time, for unmerge

    # --- the decomposition, in nn.Linear's (out, in) layout and float32 -------------------------
    def _weight(self) -> torch.Tensor:
        weight = self.base_layer.weight.float()
        return weight.T if self.weight_is_transposed else weight  # (out, in)

    def _lora_delta(self, name: str) -> torch.Tensor:
        """s·B A: (out, in)."""
        return (self.lora_B[name].weight.float() @ self.lora_A[name].weight.float()) * self.scaling[name]

    def weight_norm(self, name: str) -> torch.Tensor:
        """‖W + s·B A‖ per output row: (out,), without gradient (a constant in backward)."""
        with torch.no_grad():
            return torch.linalg.vector_norm(self._weight() + self._lora_delta(name), dim=1)

    # --- adapters ----------------------------------------------------------------------------------
    def create_adapter(self, name: str, config: LoraConfig) -> None:
        super().create_adapter(name, config)
        if isinstance(config, DoraConfig):
            self.lora_magnitude_vector[name] = nn.Parameter(self.weight_norm(name))  # m = ‖W‖ since B = 0

    def adapter_params(self, name: str) -> dict[str, nn.Parameter]:
        params = super().adapter_params(name)
        if name in self.lora_magnitude_vector:
            params["lora_magnitude_vector"] = self.lora_magnitude_vector[name]
        return params

    def remove_adapter_tensors(self, name: str) -> None:
        super().remove_adapter_tensors(name)
        self.lora_magnitude_vector.pop(name, None)

    def low_rank_delta(self, name: str) -> bool:
        return name not in self.lora_magnitude_vector  # W' − W also rescales W

    def adapter_output(self, name: str, x: torch.Tensor, base_output: torch.Tensor) -> torch.Tensor:
        """(m/‖W+sBA‖ − 1) ⊙ W x + (m/‖W+sBA‖) ⊙ s·B A x: (..., in) -> (..., out), float32."""
        if name not in self.lora_magnitude_vector:
            return super().adapter_output(name, x, base_output)
        dropout = self.lora_dropout[name]
        dropped = dropout(x)
        lora_a, lora_b = self.lora_A[name].weight, self.lora_B[name].weight
        lora = F.linear(F.linear(dropped.to(lora_a.dtype), lora_a), lora_b) * self.scaling[name]  # (..., out)
        if isinstance(dropout, nn.Identity) or not self.training:
            bias = self.base_layer.bias
            base = base_output if bias is None else base_output - bias  # W x
        else:
            base = F.linear(dropped, self._weight().to(dropped.dtype))  # W dropout(x)
        scale = self.lora_magnitude_vector[name] / self.weight_norm(name)  # (out,)
        return (scale - 1) * base.to(scale.dtype) + scale * lora

    # --- merging -----------------------------------------------------------------------------------
    def merge(self, name: str, *, safe: bool = False) -> None:
        """Write W' = m ⊙ (W + s·BA) / ‖W + s·BA‖ itself (float32): adding W' − W instead would lose
        the low bits of a small magnitude to the cancellation against W."""
        if name not in self.lora_magnitude_vector:
            super().merge(name, safe=safe)
            return
        norm = self.weight_norm(name)
        with torch.no_grad():
            scale = (self.lora_magnitude_vector[name].float() / norm)[:, None]  # (out, 1)
            merged = scale * (self._weight() + self._lora_delta(name))  # (out, in)
        if safe and not torch.isfinite(merged).all():
            raise MergeError(f"merging adapter {name!r} gives non-finite weights; the adapter is "
                             "corrupt or diverged, the model was left unmerged")
        weight = self.base_layer.weight
        weight.data.copy_((merged.T if self.weight_is_transposed else merged).to(weight.dtype))
        self.merge_norms[name] = norm

    def unmerge(self, name: str) -> None:
        if name not in self.lora_magnitude_vector:
            super().unmerge(name)
            return
        norm = self.merge_norms.pop(name)
        magnitude = self.lora_magnitude_vector[name].detach().float()
        with torch.no_grad():
            weight = self._weight() * (norm / magnitude)[:, None] - self._lora_delta(name)  # (out, in)
        target = self.base_layer.weight
        target.data.copy_((weight.T if self.weight_is_transposed else weight).to(target.dtype))


def dora_can_wrap(module: nn.Module) -> bool:
    """Float linear layers, or a DoRA layer for a further adapter (never an embedding, a 4-bit
    layer or another method's wrapper: DoRA needs the float weight for its norm)."""
    return isinstance(module, DoraLinear) or (type(module) in (nn.Linear, Conv1D)
                                               and not isinstance(module, AdapterLayer))


class Dora(Lora):
    """LoRA's targets, files and bias handling, with the DoRA layer and `use_dora` in files."""

    declaration = DECLARATION

    def can_wrap(self, module: nn.Module) -> bool:
        return dora_can_wrap(module)

    def make_layer(self, module: nn.Module) -> DoraLinear:
        return DoraLinear(module)

    def config_to_file(self, config: DoraConfig) -> dict[str, Any]:
        return {**super().config_to_file(config), "use_dora": True}

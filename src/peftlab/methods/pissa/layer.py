"""PiSSA: LoRA whose factors start as the principal part of W, the residual frozen in its place.

    W = U S Vᵀ                       full SVD of the target's weight (out × in), float32
    A = √(S_r / s) V_rᵀ   (r × in)    B = U_r √(S_r / s)   (out × r)      s = α / r
    W_res = W − s · B A               written back into the base layer (the frozen part)

so W_res + s·B A = W: the output at init is the base's to float rounding, and training moves the
top-r singular directions. `ResidualInitLora` holds what PiSSA and OLoRA share (the write-back and
which layers qualify); each says how it factors W in `initial_factors`.

Files keep the convention Hugging Face PEFT uses: `init_lora_weights: "pissa"` and the trained A, B.
Loading one (in either library) recomputes the residual from the base weight (the SVD of the same W
gives the same W − s·B₀A₀ up to rounding) and then loads A, B, so the logits agree. Disabling the
adapter leaves the residual model, not the base, which the declaration says (`supports_disable`).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab.methods.lora.config import LoraConfig
from peftlab.methods.lora.layer import Lora, LoraLinear
from peftlab.methods.pissa.config import DECLARATION


def _float_linear(module: nn.Module) -> bool:
    return type(module) in (nn.Linear, Conv1D)


class ResidualInitLora(Lora):
    """LoRA with factors taken from W and the residual written back (PiSSA, OLoRA)."""

    def can_wrap(self, module: nn.Module) -> bool:
        """Float linear layers, bare or in a LoRA layer (the residual needs the float weight)."""
        return _float_linear(module) or (type(module) is LoraLinear and _float_linear(module.base_layer))

    @abstractmethod
    def initial_factors(self, weight: torch.Tensor, config: LoraConfig, scaling: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(A (r × in), B (out × r)) from `weight` (out × in, float32): each initialisation's own."""

    def inject(self, model: nn.Module, name: str, config: LoraConfig) -> list[str]:
        paths = super().inject(model, name, config)
        for path in paths:
            layer = model.get_submodule(path)
            base = layer.base_layer.weight
            with torch.no_grad():
                weight = base.float().T if layer.weight_is_transposed else base.float()  # (out, in)
                lora_a, lora_b = self.initial_factors(weight, config, layer.scaling[name])
                layer.lora_A[name].weight.copy_(lora_a)
                layer.lora_B[name].weight.copy_(lora_b)
                residual = weight - layer.scaling[name] * (lora_b @ lora_a)  # (out, in)
                base.copy_((residual.T if layer.weight_is_transposed else residual).to(base.dtype))
        return paths


class Pissa(ResidualInitLora):
    declaration = DECLARATION

    def initial_factors(self, weight, config, scaling):
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)  # (out, k), (k,), (k, in)
        root = torch.sqrt(s[:config.r] / scaling)  # (r,)
        return root[:, None] * vh[:config.r], u[:, :config.r] * root  # A (r, in), B (out, r)

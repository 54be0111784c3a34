"""LoRA+: LoRA whose B factors (and one-dimensional tensors) train λ times faster than A.

    η_A = η            lora_A, the head's weight, ...           (the run's rate)
    η_B = λ · η        lora_B, and every 1-D tensor (biases)
    η_E = ε · η        LoRA factors on an embedding             (ε: embedding_lr_ratio)

The same groups as Hugging Face PEFT's `create_loraplus_optimizer`, given as per-tensor learning
rate scales (`Method.learning_rate_scales`), which `PeftModel.learning_rate_scales()` hands to the
optimizer (`train.schedule.make_optimizer`). Any LoRA-family method can train this way by mixing
`LoraPlusScales` into its method class, as `LoraPlus` does for LoRA.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from peftlab.methods.lora.layer import Lora, LoraEmbedding, _LoraBase
from peftlab.methods.loraplus.config import DECLARATION, LoraPlusConfig


class LoraPlusScales:
    """The LoRA+ grouping for a LoRA-family method (mix in before the method class)."""

    def learning_rate_scales(self, peft_model: nn.Module, name: str, config: LoraPlusConfig,
                             params: dict[str, nn.Parameter]) -> dict[str, float]:
        layers = [layer for _, layer in peft_model.adapter_layers(name) if isinstance(layer, _LoraBase)]
        embedding = {id(p) for layer in layers if isinstance(layer, LoraEmbedding)
                     for p in layer.adapter_params(name).values()}
        factor_b = {id(layer.factors(name)[1]) for layer in layers}
        scales = {}
        for key, param in params.items():
            if id(param) in embedding:
                scales[key] = config.embedding_lr_ratio
            elif id(param) in factor_b or param.ndim == 1:
                scales[key] = config.lr_ratio
        return scales


class LoraPlus(LoraPlusScales, Lora):
    declaration = DECLARATION

    def config_from_file(self, fields: dict[str, Any]) -> LoraPlusConfig:
        """LoRA's fields, plus the ratios from the file's "peftlab" block."""
        config = super().config_from_file(fields)
        saved = (fields.get("peftlab") or {}).get("config") or {}
        return config.replace(**{key: saved[key] for key in ("lr_ratio", "embedding_lr_ratio") if key in saved})

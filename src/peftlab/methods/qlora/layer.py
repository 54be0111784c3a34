"""QLoRA: LoRA on a 4-bit NormalFloat base (Dettmers et al., 2023, arXiv:2305.14314).

The frozen base linears are stored in NF4 with double quantization (``peftlab.quant``) and
dequantized on the fly; LoRA's A and B train in float32 on top:

    h = dequant(W_nf4) x + (α / r) · B A x        A: (r × in), B: (out × r), W_nf4: (out × in) 4-bit

    x ──┬── Linear4bit (packed codes + scales, ~0.516 B/param) ──┐
        └── dropout ─ A ─ B ─ ×s ─────────────────────────────────┴─▶ h

Quantization changes the base: a fresh QLoRA model computes the *quantized* base, which differs
from the float model by the NF4 error, so ``identity_at_init`` is False (a fresh adapter is an
exact no-op on the dequantized base, which the method's own tests check). Disabling the adapter
gives the quantized base too: ``prepare_base`` is the quantization, so that is the base it adds to.
``load_base`` reads a model folder straight into NF4 (``peftlab train`` loads with it), so the float
block linears never fill memory; ``prepare_base`` then finds them quantized and leaves them as they are.

Merging dequantizes a layer into a float ``nn.Linear`` / ``Conv1D`` holding W_deq + s·BA (LoRA's
merge, see ``LoraLinear``); unmerging the last adapter restores the packed layer bit for bit.
``export_merged`` turns a QLoRA model into a plain float model (every 4-bit layer dequantized),
optionally re-quantized, with the error the re-quantization adds measured.

Files are LoRA files (peft_type "LORA", the same keys): Hugging Face PEFT loads them onto a
bitsandbytes-4bit or a float base. A "peftlab" block carries the quantization options, so that
peftlab reloads them as QLoRA; a plain LoRA file still loads as ``lora``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab.core.protocol import AdapterLayer
from peftlab.core.targets import file_path, find_targets, replace_module
from peftlab.methods.lora.layer import Lora
from peftlab.methods.qlora.config import DECLARATION, QLoraConfig
from peftlab.quant.linear4bit import Linear4bit
from peftlab.quant.loading import dequantize_model, load_model_4bit, quantize_model

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class QLora(Lora):
    """LoRA's targets, layers, files and bias handling over a base whose block linears are NF4."""

    declaration = DECLARATION

    def load_base(self, name_or_path: str, kind: str, num_labels: int | None, config: QLoraConfig):
        """The base read straight into NF4 with `config`'s quantization (`load_model_4bit`): equal,
        bit for bit, to loading in float and quantizing, without the float block linears' peak."""
        return load_model_4bit(name_or_path, kind, num_labels=num_labels, modules=config.quantize_modules,
                               block_size=config.block_size, double_quant=config.double_quant,
                               compute_dtype=COMPUTE_DTYPES[config.compute_dtype])

    def prepare_base(self, model: nn.Module, config: QLoraConfig) -> None:
        """Quantize the float linears `config` selects; those in NF4 already stay as they are.

        A base from `load_base` is 4-bit already, and so is one a first QLoRA adapter prepared
        (there a selected layer may sit inside a LoRA wrapper, as its `base_layer`).
        """
        float_paths = None  # None: every block linear; `quantize_model` skips the 4-bit ones itself
        if config.quantize_modules is not None:
            float_paths = _float_layers(model, config.quantize_modules)
            if not float_paths:
                return
        quantize_model(model, float_paths, block_size=config.block_size,
                       double_quant=config.double_quant, compute_dtype=COMPUTE_DTYPES[config.compute_dtype])

    def config_from_file(self, fields: dict[str, Any]) -> QLoraConfig:
        """LoRA's fields, plus the quantization from the file's "peftlab" block."""
        config = super().config_from_file(fields)
        saved = (fields.get("peftlab") or {}).get("config") or {}
        return config.replace(**{key: saved[key] for key in _QUANTIZATION if key in saved})


_QUANTIZATION = ("block_size", "double_quant", "compute_dtype", "quantize_modules")


def _float_layers(model: nn.Module, modules: str | tuple[str, ...]) -> list[str]:
    """Paths of the still-float layers among those `modules` names, looking through adapter wrappers."""
    def layer(module: nn.Module) -> nn.Module:
        while isinstance(module, AdapterLayer):
            module = module.base_layer
        return module

    def linear(module: nn.Module) -> bool:
        return isinstance(layer(module), (nn.Linear, Conv1D, Linear4bit))

    paths = []
    for path in find_targets(model, modules, accepts=linear, method="qlora quantize_modules"):
        while isinstance(model.get_submodule(path), AdapterLayer):
            path += ".base_layer"
        if not isinstance(model.get_submodule(path), Linear4bit):
            paths.append(path)
    return paths


@dataclass(frozen=True)
class RequantizationReport:
    """What re-quantizing a merged model to NF4 costs, over the layers it re-quantized.

    max_abs / mean_abs: |W_merged - dequant(quant(W_merged))| over every weight element;
    logits_max_abs: max |logits difference| on the example batch (None without one).
    """

    layers: int
    max_abs: float
    mean_abs: float
    logits_max_abs: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"layers": self.layers, "max_abs": self.max_abs, "mean_abs": self.mean_abs,
                "logits_max_abs": self.logits_max_abs}


def export_merged(peft_model: nn.Module, *, requantize: bool = False, block_size: int | None = None,
                  example_batch: dict[str, torch.Tensor] | None = None
                  ) -> tuple[nn.Module, RequantizationReport | None]:
    """Merge the active adapters and return (plain base model, re-quantization error or None).

    The model is float (every ``Linear4bit`` dequantized, the merged layers holding W_deq + s·BA);
    with `requantize`, the layers that were 4-bit are quantized again (same block size and double
    quantization unless `block_size` is given), and the error that adds is measured against the
    float merge, on the weights and, given `example_batch`, on the logits.
    """
    was_quantized = sorted({file_path(path) for path, module in peft_model.model.named_modules()
                            if isinstance(module, Linear4bit)})  # paths in the unloaded model
    model = peft_model.merge_and_unload()
    dequantize_model(model)
    if not requantize:
        return model, None
    settings = _quantization_settings(peft_model)
    expected = _logits(model, example_batch)
    total_abs, total_count, max_abs = 0.0, 0, 0.0
    for path in was_quantized:
        layer = model.get_submodule(path)
        quantized = Linear4bit.from_linear(layer, block_size=block_size or settings["block_size"],
                                           double_quant=settings["double_quant"],
                                           compute_dtype=settings["compute_dtype"])
        weight = layer.weight.detach().float()
        error = (quantized.dequantized_weight() - (weight.t() if quantized.from_conv1d else weight)).abs()
        total_abs, total_count = total_abs + error.sum().item(), total_count + error.numel()
        max_abs = max(max_abs, error.max().item())
        replace_module(model, path, quantized)
    logits = _logits(model, example_batch)
    difference = None if expected is None else (logits - expected).abs().max().item()
    return model, RequantizationReport(len(was_quantized), max_abs, total_abs / max(total_count, 1), difference)


def _quantization_settings(peft_model: nn.Module) -> dict[str, Any]:
    config = next(c for c in peft_model.configs.values() if isinstance(c, QLoraConfig))
    return {"block_size": config.block_size, "double_quant": config.double_quant,
            "compute_dtype": COMPUTE_DTYPES[config.compute_dtype]}


def _logits(model: nn.Module, batch: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
    if batch is None:
        return None
    with torch.no_grad():
        return model(**batch).logits.float()


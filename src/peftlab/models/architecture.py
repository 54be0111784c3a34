"""Describe a loaded transformer: its blocks, its output head and its attention geometry.

Methods (prefix tuning needs per-layer key/value shapes, "all-linear" targeting must skip the
output head, layer-index targeting needs the block list) ask these helpers instead of knowing
model classes. Where the blocks live is data (the architecture table), one row per `model_type`, given relative to
`model.base_model` so the same row serves `BertModel`, `BertForSequenceClassification`, ...:

    bert        BertForSequenceClassification.bert  .encoder.layer   -> ModuleList of BertLayer
    gpt2        GPT2LMHeadModel.transformer         .h               -> ModuleList of GPT2Block
    llama       LlamaForCausalLM.model              .layers          -> ModuleList of LlamaDecoderLayer

Sizes come from the config (HF `attribute_map` lets `hidden_size` etc. work for GPT-2's `n_embd`).
"""

from __future__ import annotations

from torch import nn

from peftlab.core.architectures import ARCHITECTURES
from peftlab.errors import PeftlabError

# model_type -> dotted path of the ModuleList of transformer blocks inside `model.base_model`
# (the architecture table's `layers`, `core/architectures.py`).
LAYER_PATHS = {model_type: row.layers for model_type, row in ARCHITECTURES.items()}


class ArchitectureError(PeftlabError, ValueError):
    """The model's architecture is not in the table, or is not a Hugging Face model."""


def _config(model: nn.Module):
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "base_model"):
        raise ArchitectureError(f"{type(model).__name__} is not a Hugging Face transformers model")
    return config


def transformer_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks in order (input side first), e.g. 6 BertLayer for MiniLM."""
    model_type = _config(model).model_type
    if model_type not in LAYER_PATHS:
        raise ArchitectureError(
            f"unknown architecture {model_type!r}; known: {', '.join(sorted(LAYER_PATHS))}"
        )
    return list(model.base_model.get_submodule(LAYER_PATHS[model_type]))


def output_head_names(model: nn.Module) -> tuple[str, ...]:
    """Top-level modules outside the base model that hold parameters: the task head
    (`classifier` for BERT, `score` for GPT-2 / LLaMA classifiers, `lm_head` for causal LMs).
    Every module whose name starts with one of these (plus ".") belongs to the head. A bare base
    model has no head and gives ()."""
    _config(model)
    if model.base_model is model:
        return ()
    return tuple(
        name for name, child in model.named_children()
        if child is not model.base_model and any(True for _ in child.parameters())
    )


def num_layers(model: nn.Module) -> int:
    return len(transformer_layers(model))


def hidden_size(model: nn.Module) -> int:
    return _config(model).hidden_size


def num_attention_heads(model: nn.Module) -> int:
    return _config(model).num_attention_heads


def num_kv_heads(model: nn.Module) -> int:
    """Key/value heads: fewer than the query heads under grouped-query attention (SmolLM2: 3 of 9)."""
    config = _config(model)
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def head_dim(model: nn.Module) -> int:
    """Width of one attention head: the config's `head_dim` when set, else hidden / heads."""
    config = _config(model)
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

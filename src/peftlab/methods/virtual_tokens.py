"""Shared plumbing of the virtual-token methods (prompt tuning, prefix tuning).

Both methods give the model n positions it did not get from the tokenizer, so both must extend
what describes the sequence (attention mask, token types, position ids, labels) by n columns at
the same index, and both must drive `generate()` whose bookkeeping (cache positions, stopping,
logits processors) is written in terms of `input_ids`. The one trick used for all of it:

    input_ids       [x0 x1 ... xT-1]            ──▶  [x0 <v> <v> <v> x1 ... xT-1]   (n placeholder ids)
    attention_mask  [ 1  1 ...  0  ]            ──▶  [ 1  1   1   1   1 ...  0  ]
    labels          [y0 y1 ... yT-1]            ──▶  [y0 -100 -100 -100 y1 ...  ]

The model then sees an ordinary sequence of length n + T: padding detection by `pad_token_id`
(GPT-2 / LLaMA classifiers pool the last non-pad token), causal masks, cache positions and
`generate()` all work unchanged. Prompt tuning swaps the placeholder rows of the embedding output
for its soft prompt; prefix tuning marks them as already cached. `generate()` results get the
placeholder columns removed again, so they line up with the caller's `input_ids`.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from peftlab.core.config import MethodConfig
from peftlab.core.protocol import AdapterLayer, Method, ModelHook

_CACHE_NAMES = ("cache", "past_key_values")


class VirtualTokenMethod(Method):
    """What prompt and prefix tuning do alike: a model hook, no adapter layers (their declarations
    say so: no merge, a hook).

    Subclasses name their hook class in `hook_class`. Hugging Face PEFT saves a seq-cls head copy
    of its prompt-learning methods under ``base_model.<path>`` (one wrapper less than its tuners).
    """

    hf_module_prefix: ClassVar[str] = "base_model."
    hook_class: ClassVar[type[ModelHook]]

    def inject(self, model: nn.Module, name: str, config: MethodConfig) -> list[str]:
        return []

    def make_hook(self, model: nn.Module, name: str, config: MethodConfig) -> ModelHook:
        return self.hook_class(model, config)


def cache_argument(model: nn.Module) -> str:
    """The keyword the model's forward takes its KV cache under (transformers 5.24 renamed it)."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in _CACHE_NAMES if name in parameters), "past_key_values")


def continues_cache(kwargs: dict[str, Any]) -> bool:
    """True when the call continues a sequence whose cache already holds the virtual tokens."""
    cache = next((kwargs[n] for n in _CACHE_NAMES if kwargs.get(n) is not None), None)
    return cache is not None and cache.get_seq_length() > 0


def input_embedding_weight(model: nn.Module) -> torch.Tensor:
    """The frozen (V, d) table of the model's input embedding, read through adapter wrappers.

    A LoRA on the embedding replaces it by a wrapper that has no `.weight`; the base table is a
    `base_layer` hop (or several) down. The hooks read it for their dtype and initial values only:
    the prompt's forward hook stays on the outermost module, so it overwrites the placeholder rows
    after the wrapper added its delta, i.e. the LoRA changes the real tokens only (as in HF PEFT).
    """
    module = model.get_input_embeddings()
    while isinstance(module, AdapterLayer):
        module = module.base_layer
    return module.weight


def placeholder_id(model: nn.Module) -> int:
    """A token id that is not the pad id (so last-non-pad pooling never stops on a virtual token)."""
    return 1 if getattr(model.config, "pad_token_id", None) == 0 else 0


def insert_columns(tensor: torch.Tensor, at: int, n: int, value: float) -> torch.Tensor:
    """`tensor` (B, T, ...) with n columns filled with `value` inserted before column `at`."""
    filler = tensor.new_full((tensor.shape[0], n, *tensor.shape[2:]), value)
    return torch.cat([tensor[:, :at], filler, tensor[:, at:]], dim=1)


def remove_columns(tensor: torch.Tensor, at: int, n: int) -> torch.Tensor:
    return torch.cat([tensor[:, :at], tensor[:, at + n:]], dim=1)


def sequence_length(kwargs: dict[str, Any]) -> int:
    inputs = kwargs.get("input_ids")
    return (inputs if inputs is not None else kwargs["inputs_embeds"]).shape[1]


def batch_size(kwargs: dict[str, Any]) -> int:
    inputs = kwargs.get("input_ids")
    return (inputs if inputs is not None else kwargs["inputs_embeds"]).shape[0]


def extend_attention_mask(kwargs: dict[str, Any], at: int, n: int) -> dict[str, Any]:
    """The virtual tokens are always attended to: n ones in the 2-D attention mask at `at`."""
    mask = kwargs.get("attention_mask")
    if mask is not None:
        kwargs["attention_mask"] = insert_columns(mask, at, n, 1)
    return kwargs


def extend_sequence(kwargs: dict[str, Any], at: int, n: int, placeholder: int) -> dict[str, Any]:
    """Insert n virtual positions at `at` into every per-token input of a forward/generate call.

    input_ids get placeholder ids, token_type_ids 0, 2-D labels -100 (never scored); position ids
    give the virtual tokens positions at, ..., at + n - 1 and shift the real tokens after them by n.
    Sequence-level labels (classification, shape (B,)) are left alone.
    """
    length = sequence_length(kwargs)
    kwargs = extend_attention_mask(dict(kwargs), at, n)
    if kwargs.get("input_ids") is not None:
        kwargs["input_ids"] = insert_columns(kwargs["input_ids"], at, n, placeholder)
    if kwargs.get("token_type_ids") is not None:
        kwargs["token_type_ids"] = insert_columns(kwargs["token_type_ids"], at, n, 0)
    labels = kwargs.get("labels")
    if labels is not None and labels.dim() == 2 and labels.shape[1] == length:
        kwargs["labels"] = insert_columns(labels, at, n, -100)
    positions = kwargs.get("position_ids")
    if positions is not None:
        virtual = torch.arange(at, at + n, device=positions.device).expand(positions.shape[0], n)
        kwargs["position_ids"] = torch.cat([positions[:, :at], virtual, positions[:, at:] + n], dim=1)
    return kwargs


def without_placeholders(outputs: Any, at: int, n: int) -> Any:
    """`generate()` output (a tensor or an output object with `.sequences`) without the n placeholder columns."""
    if isinstance(outputs, torch.Tensor):
        return remove_columns(outputs, at, n)
    outputs.sequences = remove_columns(outputs.sequences, at, n)
    return outputs


def generation_kwargs(kwargs: dict[str, Any], n: int) -> dict[str, Any]:
    """`max_length` counts the placeholder columns too: raise it by n so callers keep their meaning."""
    if kwargs.get("max_length") is not None:
        kwargs = {**kwargs, "max_length": kwargs["max_length"] + n}
    return kwargs

"""Prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation"):
every attention layer attends to n trained key/value vectors in front of the real ones.

    layer l:  K' = [Pk_l; K]   V' = [Pv_l; V]          Pk_l, Pv_l: (B, n_kv_heads, n, head_dim)
              softmax(Q K'^T / √hd + mask') V'         mask' = [1 … 1 (n); attention_mask]

    stored as prompt_embeddings P: (n, 2 · L · kv_dim), kv_dim = n_kv_heads · head_dim, with the last
    dimension ordered (layer, key|value, kv head, head_dim) exactly as Hugging Face PEFT lays it out.

Trainable parameters: n · 2 · kv_dim · L. Shapes follow the key/value heads, not the query heads
(SmolLM2: 3 of 9), and prefix keys are used as they are, i.e. as keys that were rotated when cached.

Reparameterisation (`projection=True`, the paper's stabiliser): P = MLP(E) with E: (n, d) and
MLP = Linear(d, h) → tanh → Linear(h, 2 · L · kv_dim); E and the MLP train (`parameter_report()`
reports them apart), and `fold()` replaces them by the plain P they compute. Files always hold the
folded P (as Hugging Face PEFT saves it); loading a file gives a folded hook.

Mechanism: the prefix is handed to the model as an already-filled KV cache (`DynamicCache`, one
`update` per layer) together with an attention mask extended by n ones. Every attention layer of
transformers 5.x — BERT's included, although Hugging Face PEFT refuses BERT — concatenates a cache
in front of its keys and values and builds its mask over cache + new tokens, so the cache *is* the
per-layer [prefix; keys] concatenation, with GQA, rotary and padding handled by the model's own
code. (Hooking the k/v projections would not do: the mask and the causal offset are built from the
key length before those projections run.) As with a real cache, the tokens' positions start at n,
which is what Hugging Face PEFT does too. `generate()` gets n placeholder ids in front of
`input_ids` that the prefilled cache marks as already processed (see `virtual_tokens`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import DynamicCache

from peftlab.core.protocol import ModelHook
from peftlab.methods import virtual_tokens as vt
from peftlab.methods.prefix.config import DECLARATION, PrefixTuningConfig
from peftlab.models import architecture


class PrefixKeyValues(ModelHook):
    """Per-layer key/value prefixes of one adapter, plain or produced by the reparameterisation MLP."""

    def __init__(self, model: nn.Module, config: PrefixTuningConfig) -> None:
        super().__init__()
        self.num_virtual_tokens = n = config.num_virtual_tokens
        self.num_layers = architecture.num_layers(model)
        self.kv_heads = architecture.num_kv_heads(model)
        self.head_dim = architecture.head_dim(model)
        width = 2 * self.num_layers * self.kv_heads * self.head_dim
        dtype = vt.input_embedding_weight(model).dtype
        self.prompt_embeddings: nn.Parameter | None = None
        self.prefix_encoder: nn.ModuleDict | None = None
        if config.projection:
            d = architecture.hidden_size(model)
            h = config.encoder_hidden_size or d
            self.prefix_encoder = nn.ModuleDict({
                "embedding": nn.Embedding(n, d),
                "transform": nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, width)),
            }).to(dtype)
        else:
            self.prompt_embeddings = nn.Parameter(torch.randn(n, width).to(dtype))  # N(0, 1) as HF PEFT
        self._placeholder = vt.placeholder_id(model)
        self._cache_argument = vt.cache_argument(model)
        self._inserted = False

    # --- parameters -------------------------------------------------------------------------------
    def adapter_params(self) -> dict[str, nn.Parameter]:
        if self.prefix_encoder is None:
            return {"prompt_embeddings": self.prompt_embeddings}
        return {f"prefix_encoder.{key}": p for key, p in self.prefix_encoder.named_parameters()}

    def parameter_report(self) -> dict[str, int]:
        """Folded prefix size (what inference and files hold) and the MLP's trainable size apart."""
        folded = self.num_virtual_tokens * 2 * self.num_layers * self.kv_heads * self.head_dim
        mlp = 0 if self.prefix_encoder is None else sum(p.numel() for p in self.prefix_encoder.parameters())
        return {"prefix": folded, "reparameterization": mlp}

    def prefix(self) -> torch.Tensor:
        """P: (n, 2 · L · kv_dim)."""
        if self.prefix_encoder is None:
            return self.prompt_embeddings
        return self.prefix_encoder["transform"](self.prefix_encoder["embedding"].weight)

    def fold(self) -> None:
        """Replace the reparameterisation MLP by the prefix it computes (for inference and saving)."""
        if self.prefix_encoder is None:
            return
        trainable = self.prefix_encoder["embedding"].weight.requires_grad
        with torch.no_grad():
            folded = self.prefix().detach().clone()
        self.prefix_encoder = None
        self.prompt_embeddings = nn.Parameter(folded, requires_grad=trainable)

    def file_state(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"prompt_embeddings": self.prefix().detach()}

    def load_file_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.fold()
        super().load_file_state(tensors)

    def file_config(self) -> dict[str, Any]:
        return {"token_dim": self.kv_heads * self.head_dim, "num_layers": self.num_layers,
                "num_attention_heads": self.kv_heads}

    # --- the prefix as a filled cache ----------------------------------------------------------------
    def key_values(self, batch: int, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (keys, values), each (B, n_kv_heads, n, head_dim)."""
        n, L, heads, hd = self.num_virtual_tokens, self.num_layers, self.kv_heads, self.head_dim
        prefix = self.prefix().to(dtype).view(n, L, 2, heads, hd).permute(1, 2, 3, 0, 4)  # (L, 2, heads, n, hd)
        return [(prefix[layer, 0].expand(batch, -1, -1, -1), prefix[layer, 1].expand(batch, -1, -1, -1))
                for layer in range(L)]

    def _cache(self, model: nn.Module, batch: int) -> DynamicCache:
        cache = DynamicCache(config=model.config)
        for layer, (keys, values) in enumerate(self.key_values(batch, vt.input_embedding_weight(model).dtype)):
            cache.update(keys, values, layer)
        return cache

    def before_forward(self, model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = vt.extend_attention_mask(dict(kwargs), 0, self.num_virtual_tokens)
        if not vt.continues_cache(kwargs):  # a passed-in cache came from a call that had the prefix
            for name in ("cache", "past_key_values"):
                kwargs.pop(name, None)
            kwargs[self._cache_argument] = self._cache(model, vt.batch_size(kwargs))
        return kwargs

    def before_generate(self, model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
        n = self.num_virtual_tokens
        self._inserted = kwargs.get("input_ids") is not None and not vt.continues_cache(kwargs)
        if not self._inserted:
            return self.before_forward(model, kwargs)
        kwargs = vt.extend_sequence(vt.generation_kwargs(kwargs, n), 0, n, self._placeholder)
        # One cache row per sequence generate() runs (num_return_sequences / beams expand the batch).
        rows = vt.batch_size(kwargs) * max(kwargs.get("num_return_sequences") or 1, kwargs.get("num_beams") or 1)
        kwargs[self._cache_argument] = self._cache(model, rows)
        return kwargs

    def after_generate(self, outputs: Any, kwargs: dict[str, Any]) -> Any:
        return vt.without_placeholders(outputs, 0, self.num_virtual_tokens) if self._inserted else outputs


class PrefixTuning(vt.VirtualTokenMethod):
    declaration = DECLARATION
    hook_class: ClassVar[type[ModelHook]] = PrefixKeyValues

    def config_to_file(self, config: PrefixTuningConfig) -> dict[str, Any]:
        return {"num_virtual_tokens": config.num_virtual_tokens, "num_transformer_submodules": 1,
                "prefix_projection": config.projection, "encoder_hidden_size": config.encoder_hidden_size}

    def config_from_file(self, fields: dict[str, Any]) -> PrefixTuningConfig:
        return PrefixTuningConfig.from_dict({"num_virtual_tokens": fields.get("num_virtual_tokens"),
                                             "projection": fields.get("prefix_projection", False),
                                             "encoder_hidden_size": fields.get("encoder_hidden_size")})

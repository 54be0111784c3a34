"""Weighted combination of LoRA adapters into a new LoRA adapter: `peftlab.combine_loras(model, ...)`.

Sources i have factors A_i (r_i × in), B_i (out × r_i), scalings s_i and weights w_i, so their
changes are ΔW_i = s_i B_i A_i (for an embedding, in = vocab and the weight is ΔWᵀ). Per module:

    linear  A = Σ sign(w_i s_i) √|w_i s_i| A_i     B = Σ √|w_i s_i| B_i       rank r (all r_i = r)
            ΔW = B A = Σ_i Σ_j ±√|c_i c_j| B_i A_j      (c_i = w_i s_i)
            This is NOT Σ w_i ΔW_i: the cross terms B_i A_j (i ≠ j) stay. It mixes the factors, as
            Hugging Face PEFT's "linear" does, and is the weighted sum only where one factor is
            shared (e.g. adapters trained from the same A, or a single source).
    cat     A = [c_1 A_1; …; c_n A_n]  (Σ r_i × in)   B = [B_1 … B_n]  (out × Σ r_i)
            ΔW = B A = Σ_i c_i B_i A_i = Σ w_i ΔW_i exactly, at rank Σ r_i.
    svd     M = Σ w_i ΔW_i (float32) = U S Vᵀ;   B = U_r S_r,  A = V_rᵀ         rank r (default max r_i)
            ΔW = the best rank-r approximation of M (Eckart–Young); exact once r ≥ rank(M).

The new adapter has alpha = r (scaling 1): the weights and scalings live in its factors, as in
Hugging Face PEFT's `add_weighted_adapter` (the test oracle for these formulas). The sources
must adapt the same modules and train no biases. Their head copies (`modules_to_save`), if
any, are combined as parameters: θ = Σ w_i θ_i (for a linear head, logits Σ w_i head_i(h) on
the same features h).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from peftlab.core.config import check_choice, check_range
from peftlab.core.model import PeftModel
from peftlab.core.modules_to_save import ModulesToSave
from peftlab.core.targets import file_path
from peftlab.errors import ConfigError
from peftlab.methods.lora.config import LoraConfig
from peftlab.methods.lora.layer import _LoraBase

MODES = ("linear", "cat", "svd")

Factors = tuple[torch.Tensor, torch.Tensor]  # (A (r × in), B (out × r))


def combine_factors(mode: str, sources: list[tuple[Factors, float]], rank: int) -> Factors:
    """The new (A, B) from [(A_i, B_i), c_i = w_i · s_i] by `mode` (formulas in the module doc)."""
    if mode == "linear":
        a = sum(math.copysign(math.sqrt(abs(c)), c) * f[0].float() for f, c in sources)
        b = sum(math.sqrt(abs(c)) * f[1].float() for f, c in sources)
        return a, b
    if mode == "cat":
        return (torch.cat([c * f[0].float() for f, c in sources], dim=0),  # (Σ r_i, in)
                torch.cat([f[1].float() for f, _ in sources], dim=1))  # (out, Σ r_i)
    total = sum(c * (f[1].float() @ f[0].float()) for f, c in sources)  # (out, in)
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    return vh[:rank], u[:, :rank] * s[:rank]  # A (r, in), B (out, r)


def _lora_config(peft_model: PeftModel, name: str) -> LoraConfig:
    if name not in peft_model.configs:
        raise ConfigError(f"unknown adapter {name!r}: existing adapters are {list(peft_model.configs)}")
    config = peft_model.configs[name]
    if not isinstance(config, LoraConfig):
        raise ConfigError(f"adapter {name!r} is {config.method}, not LoRA: combine_loras combines LoRA adapters")
    if config.bias != "none":
        raise ConfigError(f"adapter {name!r} trains biases (bias={config.bias!r}): combine_loras combines the "
                          "low-rank factors only; use adapters with bias='none'")
    return config


def _same_paths(kind: str, found: dict[str, set[str]]) -> list[str]:
    first, *rest = found
    for other in rest:
        if found[other] != found[first]:
            only_first = sorted(found[first] - found[other])[:3]
            only_other = sorted(found[other] - found[first])[:3]
            raise ConfigError(f"adapters {first!r} and {other!r} have different {kind} (only {first!r}: "
                              f"{only_first}, only {other!r}: {only_other}): combine adapters with the same targets")
    return sorted(found[first])


def _new_rank(mode: str, ranks: dict[str, int], r: int | None) -> int:
    if r is not None and mode != "svd":
        raise ConfigError(f"r={r} is only for mode='svd': 'linear' keeps the sources' rank, 'cat' adds them up")
    if mode == "linear":
        if len(set(ranks.values())) > 1:
            raise ConfigError(f"mode='linear' needs equal ranks, got {ranks}: use mode='cat' or mode='svd'")
        return next(iter(ranks.values()))
    if mode == "cat":
        return sum(ranks.values())
    rank = max(ranks.values()) if r is None else r
    if not isinstance(rank, int) or isinstance(rank, bool):
        raise ConfigError(f"r={rank!r} must be an integer >= 1")
    check_range("r", rank, 1, None)
    return rank


def combine_loras(peft_model: PeftModel, sources: Mapping[str, float], name: str, mode: str = "linear",
                  r: int | None = None) -> None:
    """Add LoRA adapter `name` (inactive) to `peft_model` combining `sources` {adapter: weight} by `mode`."""
    check_choice("mode", mode, MODES)
    weights = {source: float(weight) for source, weight in dict(sources).items()}
    if not weights:
        raise ConfigError("sources is empty: give {adapter name: weight, ...}")
    configs = {source: _lora_config(peft_model, source) for source in weights}
    layers = {source: {file_path(p): layer for p, layer in peft_model.adapter_layers(source)
                       if isinstance(layer, _LoraBase)} for source in weights}
    heads = {source: {file_path(p): layer for p, layer in peft_model.adapter_layers(source)
                      if isinstance(layer, ModulesToSave)} for source in weights}
    for source, found in layers.items():
        if not all(layer.low_rank_delta(source) for layer in found.values()):
            raise ConfigError(f"adapter {source!r} is {configs[source].method}: its change of the weights is more "
                              "than s·B A, so its factors cannot be combined; combine LoRA adapters")
    paths = _same_paths("target modules", {s: set(found) for s, found in layers.items()})
    head_paths = _same_paths("modules_to_save", {s: set(found) for s, found in heads.items()})
    rank = _new_rank(mode, {s: c.r for s, c in configs.items()}, r)
    first = next(iter(weights))
    if mode == "svd":
        for path in paths:
            a, b = layers[first][path].factors(first)
            if rank > min(a.shape[1], b.shape[0]):
                raise ConfigError(f"r={rank} exceeds the size of {path} ({b.shape[0]} × {a.shape[1]}): "
                                  f"use r <= {min(a.shape[1], b.shape[0])}")
    peft_model.add_adapter(name, LoraConfig(r=rank, alpha=float(rank), dropout=configs[first].dropout,
                                            target_modules=tuple(paths), modules_to_save=tuple(head_paths)),
                           activate=False)
    with torch.no_grad():
        for path in paths:
            layer = layers[first][path]
            combined = combine_factors(mode, [(layer.factors(s), weights[s] * layer.scaling[s]) for s in weights],
                                       rank)
            for target, value in zip(layer.factors(name), combined):
                target.copy_(value.to(target.dtype))
        for path in head_paths:
            head = heads[first][path]
            for key, param in head.adapter_params(name).items():
                param.copy_(sum(w * head.adapter_params(s)[key].float() for s, w in weights.items()).to(param.dtype))


def delta(layer: nn.Module, name: str) -> torch.Tensor:
    """s · B A of adapter `name` on a LoRA layer, in the B·A layout (out, in), float32."""
    a, b = layer.factors(name)
    return (b.float() @ a.float()) * layer.scaling[name]

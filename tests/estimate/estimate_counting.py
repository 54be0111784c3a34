"""An independent counter of peftlab's conventions, run on instantiated (meta-device) models.

It walks the real `transformers` module tree instead of the estimator's formulas: block
linears are found by type (nn.Linear, GPT-2 Conv1D) under the model's block list, widths come
from the weights, and new modules (adapters, prefix MLP) are built as real nn.Modules.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
from transformers import AutoModelForSequenceClassification
from transformers.pytorch_utils import Conv1D

BLOCK_MARKERS = (".layer.", ".h.", ".layers.")


def build(config: dict, num_labels: int | None = None, device: str = "meta",
          attention: str | None = None) -> nn.Module:
    """The model transformers builds from `config` (a config.json dict), on `device`."""
    extra = {"num_labels": num_labels, "pad_token_id": 0} if num_labels else {}
    cfg = AutoConfig.for_model(**config, **extra)
    decoder = config["model_type"] in ("gpt2", "llama", "mistral", "qwen2")
    auto = (AutoModelForSequenceClassification if num_labels
            else AutoModelForCausalLM if decoder else AutoModel)
    with torch.device(device):
        return auto.from_config(cfg, attn_implementation=attention)


def count(module: nn.Module) -> int:
    """Distinct parameters (tied weights once), as `sum(p.numel())` over `parameters()`."""
    return sum(p.numel() for p in module.parameters())


def block_linears(model: nn.Module) -> dict[str, tuple[int, int, nn.Module]]:
    """path -> (in, out, module) for every linear map inside a transformer block."""
    out = {}
    for path, module in model.named_modules():
        if not any(marker in f".{path}" for marker in BLOCK_MARKERS):
            continue
        if isinstance(module, Conv1D):
            out[path] = (module.weight.shape[0], module.weight.shape[1], module)
        elif isinstance(module, nn.Linear):
            out[path] = (module.in_features, module.out_features, module)
    return out


def matches(path: str, targets) -> bool:
    return targets == "all-linear" or any(path == t or path.endswith("." + t) for t in targets)


def lora(model: nn.Module, r: int, targets, bias: str = "none") -> int:
    """r·(in + out) per targeted block linear, plus the biases `bias` makes trainable."""
    hits = {p: v for p, v in block_linears(model).items() if matches(p, targets)}
    total = sum(r * (i + o) for i, o, _ in hits.values())
    if bias == "all":
        total += sum(p.numel() for n, p in model.named_parameters()
                     if n.endswith("bias") and not n.startswith(("classifier", "score")))
    elif bias == "lora_only":
        total += sum(m.bias.numel() for _, _, m in hits.values() if m.bias is not None)
    return total


def ia3(model: nn.Module, roles=("keys", "values", "ffn")) -> int:
    """Key and value widths (GQA-aware) and the FFN intermediate width, per block."""
    total = 0
    for path, (i, o, _) in block_linears(model).items():
        leaf = path.rsplit(".", 1)[-1]
        if leaf in ("k_proj", "key", "k_lin") and "keys" in roles:
            total += o
        if leaf in ("v_proj", "value", "v_lin") and "values" in roles:
            total += o
        if leaf == "c_attn":
            total += (o // 3) * (("keys" in roles) + ("values" in roles))
        ffn_out = (path.endswith("mlp.c_proj") or leaf in ("down_proj", "lin2")
                   or (path.endswith("output.dense") and "attention" not in path))
        if ffn_out and "ffn" in roles:
            total += i
    return total


def key_width(model: nn.Module) -> int:
    """Width of one block's keys, read from the key projection's weight."""
    for path, (_, o, _) in block_linears(model).items():
        leaf = path.rsplit(".", 1)[-1]
        if leaf in ("k_proj", "key", "k_lin"):
            return o
        if leaf == "c_attn":
            return o // 3
    raise AssertionError("no key projection found")


def num_blocks(model: nn.Module) -> int:
    """Distinct block indices among the block linears ("...layers.3.mlp" -> 3)."""
    return len({re.search(r"\.(?:layer|h|layers)\.(\d+)\.", f".{p}").group(1)
                for p in block_linears(model)})


def adapters(model: nn.Module, m: int, per_block: int) -> int:
    d = model.get_input_embeddings().embedding_dim
    with torch.device("meta"):
        one = nn.Sequential(nn.Linear(d, m), nn.Linear(m, d))
    return count(one) * per_block * num_blocks(model)


def prefix(model: nn.Module, n: int, projection_hidden: int | None = None) -> int:
    layers, kv = num_blocks(model), key_width(model)
    if projection_hidden is None:
        return n * 2 * kv * layers
    d = model.get_input_embeddings().embedding_dim
    with torch.device("meta"):
        mlp = nn.ModuleList([nn.Embedding(n, d), nn.Linear(d, projection_hidden),
                             nn.Linear(projection_hidden, 2 * layers * kv)])
    return count(mlp)


def prompt(model: nn.Module, n: int) -> int:
    return n * model.get_input_embeddings().embedding_dim


def head(model: nn.Module) -> int:
    """The top-level `classifier` or `score` module, as peftlab's core trains it."""
    return sum(count(module) for name, module in model.named_children()
               if name in ("classifier", "score"))

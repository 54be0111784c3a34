"""Activation memory: the tensors autograd keeps between forward and backward, per block.

Why this level of detail: activations, not weights, decide whether a PEFT run fits once the
base is frozen, and they depend on the architecture. Each saved tensor is listed with its width
and the condition that keeps it. A linear's input is kept only when its weight needs a gradient
(full fine-tuning, or a LoRA on it): a frozen linear's backward needs only W, so frozen layers
save less. Units, with B the batch, T the tokens per sequence (+ prompt tokens) and T_kv the
keys per query (T + prefix tokens):

    per="token"   width × B·T            per="kv"  width × B·T_kv
    per="scores"  heads × B·T·T_kv       (eager attention's softmax output, (B, H, T, T_kv))
    per="head rows"  width × min(B·T, loss_head_rows(vocab))   (the fused loss head's chunk)

dtype "act" is the compute dtype (fp32 or bf16), "fp32" tensors are upcast by the model
(softmax, norms, the loss), "mask" is a dropout mask: bool (1 byte) from CUDA's fused dropout,
but a float noise tensor of the compute dtype from the CPU kernel (`mask_bytes`). "sdpa"
assumes a fused kernel that keeps the output and a log-sum-exp per head instead of the T×T
scores; on CPU, attention dropout makes sdpa fall back to the eager computation.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftlab.core.architectures import loss_head_rows
from peftlab.core.footprint import Footprint
from peftlab.core.shapes import ModelShape

ATTENTION = ("eager", "sdpa")


@dataclass(frozen=True)
class Saved:
    """One tensor kept for backward; `needed_by` empty means always kept."""

    name: str
    width: int
    dtype: str = "act"
    per: str = "token"
    needed_by: tuple[str, ...] = ()


def _attention_core(shape: ModelShape, fused: bool, act_bytes: int) -> list[Saved]:
    """q, k, v and the attention probabilities (or the fused kernel's statistics)."""
    q = shape.heads * shape.head_dim
    if fused:
        return [Saved("q", q), Saved("k", shape.kv_dim, per="kv"),
                Saved("v", shape.kv_dim, per="kv"), Saved("attention output", q),
                Saved("log-sum-exp", shape.heads, dtype="fp32")]
    # eager attention expands grouped keys/values to every query head before the matmuls.
    items = [Saved("q", q), Saved("k (expanded to all heads)", q, per="kv"),
             Saved("v (expanded to all heads)", q, per="kv"),
             Saved("attention probs (softmax out)", shape.heads, "fp32", "scores")]
    if shape.attention_dropout > 0:
        items += [Saved("attention dropout mask", shape.heads, "mask", "scores"),
                  Saved("attention probs after dropout", shape.heads, "fp32", "scores")]
    if act_bytes != 4:
        items.append(Saved("attention probs (compute-dtype copy)", shape.heads, "act", "scores"))
    return items


def block_tensors(shape: ModelShape, fused: bool, act_bytes: int) -> list[Saved]:
    """Every tensor one block may keep for backward, in forward order."""
    d, ff, paths = shape.hidden, shape.ffn, [m.path for m in shape.layer_linears()]
    core = _attention_core(shape, fused, act_bytes)
    context = (None if fused else
               Saved("attention context", shape.heads * shape.head_dim, needed_by=(paths[3],)))
    drop = [Saved("residual dropout mask", d, "mask")] if shape.hidden_dropout > 0 else []
    if shape.family == "llama":
        q, k, v, o, gate, up, down = paths
        return [Saved("rmsnorm 1 input", d, "fp32"),
                Saved("rmsnorm 1 normalized", d, needed_by=("norms",)),
                Saved("attention input", d, needed_by=(q, k, v)), *core,
                *([context] if context else []),
                Saved("rmsnorm 2 input", d, "fp32"),
                Saved("rmsnorm 2 normalized", d, needed_by=("norms",)),
                Saved("ffn input", d, needed_by=(gate, up)),
                Saved("gate (silu input)", ff), Saved("silu output", ff), Saved("up", ff),
                Saved("ffn activation", ff, needed_by=(down,))]
    if shape.family == "gpt2":
        c_attn, c_proj, c_fc, mlp_proj = paths
        return [Saved("layernorm 1 input", d, "fp32"),
                Saved("attention input", d, needed_by=(c_attn,)), *core,
                *([context] if context else []), *drop,
                Saved("layernorm 2 input", d, "fp32"),
                Saved("ffn input", d, needed_by=(c_fc,)),
                # gelu_new is written in Python ops: x, tanh(.), 0.5x and 1 + tanh(.) are kept.
                Saved("gelu_new intermediates", 4 * ff),
                Saved("ffn activation", ff, needed_by=(mlp_proj,)), *drop]
    q, k, v, o, fc1, fc2 = paths
    return [Saved("attention input", d, needed_by=(q, k, v)), *core,
            *([context] if context else []), *drop,
            Saved("layernorm 1 input", d, "fp32"),
            Saved("ffn input", d, needed_by=(fc1,)),
            Saved("gelu input", ff), Saved("ffn activation", ff, needed_by=(fc2,)), *drop,
            Saved("layernorm 2 input", d, "fp32")]


def model_tensors(shape: ModelShape, causal_lm: bool, classify: bool, fused_head: bool = True,
                  act_bytes: int = 4) -> list[Saved]:
    """Tensors kept outside the blocks: embedding norm/dropout, final norm, head inputs.

    fused_head: a causal LM's loss is computed with its head (`train/lm_loss.py`, where the row
    declares "linear_lm_head" and the run is not FSDP-sharded): a float32 workspace of at most
    `loss_head_rows(V)` rows of logits and the head's input gradient, instead of the logits and
    the log-softmax `transformers` keeps. In a 16-bit compute dtype a chunk's logits are computed
    in it and then upcast, so the chunk exists in both dtypes for a moment.
    """
    d, items = shape.hidden, []
    if shape.family in ("bert", "roberta", "distilbert"):
        items.append(Saved("embedding layernorm input", d, "fp32", needed_by=("embeddings",)))
    if shape.hidden_dropout > 0:
        items.append(Saved("embedding dropout mask", d, "mask", needed_by=("embeddings",)))
    if shape.is_decoder:
        items.append(Saved("final norm input", d, "fp32"))
    if classify and shape.is_decoder:
        # `score` runs on every position and always trains, so its input is kept.
        items.append(Saved("score input", d))
    if causal_lm and fused_head and "linear_lm_head" in shape.architecture.features:
        items += [Saved("loss head workspace (logits, a chunk of rows)", shape.vocab, "fp32", "head rows"),
                  Saved("loss head input gradient", d)]
        if act_bytes != 4:
            items.append(Saved("loss head chunk in the compute dtype", shape.vocab, "act", "head rows"))
    elif causal_lm:
        # transformers returns the logits (kept by the caller) and upcasts them for the loss,
        # whose log-softmax output is kept in fp32.
        items += [Saved("lm head input", d, needed_by=("lm_head",)),
                  Saved("logits", shape.vocab), Saved("log-softmax", shape.vocab, "fp32")]
    return items


def _size(item: Saved, dtype_bytes: dict[str, int], units: dict[str, int]) -> int:
    return item.width * dtype_bytes[item.dtype] * units[item.per]


def activation_bytes(shape: ModelShape, method: Footprint, *, batch_size: int, seq_len: int,
                     act_bytes: int, device: str = "cuda", attention: str = "eager",
                     gradient_checkpointing: bool = False,
                     num_labels: int | None = None, fused_head: bool = True) -> dict[str, int]:
    """Bytes of saved activations by tensor name, summed over blocks; totals under "total".

    fused_head: whether a causal LM's loss is computed with its head (see `model_tensors`).

    With gradient checkpointing each block keeps only its input (d per token) and one block
    at a time is recomputed, so one block's tensors are counted instead of L.
    """
    seq = seq_len + method.prompt_tokens()
    keys = seq + method.prefix_tokens()
    tokens = batch_size * seq
    units = {"token": tokens, "kv": batch_size * keys, "scores": batch_size * seq * keys,
             "head rows": min(tokens, loss_head_rows(shape.vocab))}
    dtype_bytes = {"act": act_bytes, "fp32": 4, "mask": 1 if device == "cuda" else act_bytes}
    fused = attention == "sdpa" and not (device == "cpu" and shape.attention_dropout > 0)
    kept = {m.path for m in method.saved_inputs(shape)}
    if method.trains_base():
        kept |= {"norms", "embeddings", "lm_head"}
    if method.prompt_tokens():
        kept.add("embeddings")

    block = {item.name: _size(item, dtype_bytes, units)
             for item in block_tensors(shape, fused, act_bytes)
             if not item.needed_by or kept & set(item.needed_by)}
    block.update({name: width * act_bytes * tokens
                  for name, width in method.extra_activations(shape).items()})
    copies = 1 if gradient_checkpointing else shape.layers
    out = {name: value * copies for name, value in block.items()}
    if gradient_checkpointing:
        out["checkpointed block inputs"] = shape.hidden * act_bytes * tokens * shape.layers
    for item in model_tensors(shape, shape.is_decoder and not num_labels, bool(num_labels), fused_head, act_bytes):
        if not item.needed_by or kept & set(item.needed_by):
            out[item.name] = _size(item, dtype_bytes, units)
    out["total"] = sum(out.values())
    return out

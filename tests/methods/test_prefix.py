"""Prefix tuning against hand-written attention, cache-free decoding and analytic parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

import peftlab
from peftlab.methods.prefix import PrefixTuningConfig
from tiny_models import tiny_batch, tiny_model

N = 3


def _prefixed(arch, task, **fields):
    model = peftlab.apply(tiny_model(arch, task), PrefixTuningConfig(num_virtual_tokens=N, **fields))
    with torch.no_grad():
        for param in model.trainable_parameters().values():
            param.normal_(0, 0.5)
    return model


def _capture(module):
    """Record the keyword inputs and the output of `module`'s next call."""
    seen = {}

    def pre(mod, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        seen["kwargs"] = kwargs

    def post(mod, args, kwargs, output):
        seen["output"] = output[0]

    handles = [module.register_forward_pre_hook(pre, with_kwargs=True),
               module.register_forward_hook(post, with_kwargs=True)]
    return seen, handles


def _attention(q, k, v, allowed):
    """softmax(q k^T / sqrt(hd), masked) v with q (B, H, T, hd), k/v (B, H, S, hd), allowed (B, 1|H, T, S)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v


def test_bert_attention_equals_attention_over_prefix_and_keys():
    model = _prefixed("bert", "classification")
    attention = model.model.bert.encoder.layer[1].attention.self
    batch = tiny_batch()  # last row padded
    seen, handles = _capture(attention)
    with torch.no_grad():
        model(**batch)
        B, T = batch["input_ids"].shape
        heads, hd = attention.num_attention_heads, attention.attention_head_size
        split = lambda x: x.view(B, T, heads, hd).transpose(1, 2)  # noqa: E731  (B, H, T, hd)
        h = seen["hidden"]
        keys, values = model.hooks["default"].key_values(B, torch.float32)[1]
        k = torch.cat([keys, split(attention.key(h))], dim=2)  # (B, H, n + T, hd)
        v = torch.cat([values, split(attention.value(h))], dim=2)
        allowed = torch.cat([torch.ones(B, N, dtype=torch.bool), batch["attention_mask"].bool()], 1)[:, None, None]
        expected = _attention(split(attention.query(h)), k, v, allowed).transpose(1, 2).reshape(B, T, -1)
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(seen["output"], expected, rtol=0, atol=1e-5)


def test_llama_gqa_rotary_attention_equals_attention_over_prefix_and_keys():
    model = _prefixed("llama", "causal-lm")
    attention = model.model.model.layers[1].self_attn
    input_ids = tiny_batch(batch=2, seq=5, pad_last=False)["input_ids"]
    seen, handles = _capture(attention)
    with torch.no_grad():
        model(input_ids=input_ids)
        B, T = input_ids.shape
        cfg = model.config
        hd, heads, kv_heads = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
        h = seen["hidden"]
        cos, sin = seen["kwargs"]["position_embeddings"]  # the model's own rotary, positions n .. n + T - 1
        q = attention.q_proj(h).view(B, T, heads, hd).transpose(1, 2)
        k = attention.k_proj(h).view(B, T, kv_heads, hd).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        prefix_k, prefix_v = model.hooks["default"].key_values(B, torch.float32)[1]
        assert prefix_k.shape == (B, kv_heads, N, hd)  # prefixes follow the KV heads
        k = torch.cat([prefix_k, k], dim=2).repeat_interleave(heads // kv_heads, dim=1)
        v = torch.cat([prefix_v, attention.v_proj(h).view(B, T, kv_heads, hd).transpose(1, 2)], dim=2)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        allowed = torch.cat([torch.ones(T, N, dtype=torch.bool), causal], dim=1)[None, None]
        expected = attention.o_proj(_attention(q, k, v, allowed).transpose(1, 2).reshape(B, T, -1))
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(seen["output"], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch,task", [("bert", "classification"), ("gpt2", "causal-lm"), ("llama", "causal-lm")])
def test_padded_row_equals_the_row_alone(arch, task):
    """The mask covers the prefix: padding a row changes nothing for its real tokens."""
    model = _prefixed(arch, task)
    batch = tiny_batch()
    real = int(batch["attention_mask"][-1].sum())
    with torch.no_grad():
        padded = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[-1]
        alone = model(input_ids=batch["input_ids"][-1:, :real]).logits[0]
    if task == "causal-lm":
        padded = padded[:real]
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("projection", [False, True])
def test_greedy_generate_equals_step_by_step_decoding_without_cache(arch, projection):
    model = _prefixed(arch, "causal-lm", projection=projection)
    input_ids = tiny_batch(batch=2, seq=5, pad_last=False)["input_ids"]
    with torch.no_grad():
        generated = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                   max_new_tokens=6, do_sample=False, pad_token_id=0)
        sequence = input_ids
        for _ in range(6):
            logits = model(input_ids=sequence, use_cache=False).logits
            sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, sequence)


def test_sampling_generate_with_several_return_sequences():
    model = _prefixed("llama", "causal-lm")
    input_ids = tiny_batch(batch=2, seq=5, pad_last=False)["input_ids"]
    torch.manual_seed(0)
    with torch.no_grad():
        generated = model.generate(input_ids=input_ids, max_new_tokens=4, min_new_tokens=4, do_sample=True,
                                   num_return_sequences=2, pad_token_id=0)
    assert generated.shape == (4, 9) and torch.equal(generated[::2, :5], input_ids)


def test_projection_folds_into_the_same_prefix(tmp_path):
    model = _prefixed("gpt2", "causal-lm", projection=True, encoder_hidden_size=16)
    hook = model.hooks["default"]
    batch = tiny_batch()
    with torch.no_grad():
        trained = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        hook.fold()
        folded = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    torch.testing.assert_close(folded, trained, rtol=0, atol=1e-6)
    assert set(hook.adapter_params()) == {"prompt_embeddings"}


def test_parameter_counts_on_tiny_llama():
    """n · 2 · kv_dim · L for the prefix; the MLP (n·d + d·h + h + h·width + width) reported apart."""
    plain = _prefixed("llama", "causal-lm")
    cfg = plain.config
    kv_dim = cfg.num_key_value_heads * cfg.head_dim
    width = 2 * cfg.num_hidden_layers * kv_dim
    assert plain.count_parameters()[0] == N * width
    assert plain.hooks["default"].parameter_report() == {"prefix": N * width, "reparameterization": 0}
    mlp = _prefixed("llama", "causal-lm", projection=True, encoder_hidden_size=16)
    d, h = cfg.hidden_size, 16
    expected_mlp = N * d + d * h + h + h * width + width
    assert mlp.hooks["default"].parameter_report() == {"prefix": N * width, "reparameterization": expected_mlp}
    assert mlp.count_parameters()[0] == expected_mlp


def test_smollm2_shape_follows_kv_heads():
    """SmolLM2-135M geometry: 30 layers, 9 query heads and 3 KV heads of 64 -> 20 · 2 · 192 · 30."""
    config = LlamaConfig(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536)
    with torch.device("meta"):
        model = peftlab.apply(LlamaForCausalLM(config), PrefixTuningConfig(num_virtual_tokens=20))
    assert model.count_parameters()[0] == 20 * 2 * 192 * 30
    keys, values = model.hooks["default"].key_values(2, torch.float32)[0]
    assert keys.shape == values.shape == (2, 3, 20, 64)

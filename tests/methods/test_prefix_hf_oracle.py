"""Hugging Face PEFT as the oracle for prefix tuning: same prefix, same logits, files both ways.

Hugging Face PEFT 0.21 refuses prefix tuning for every sequence classifier under transformers
5.24 (it looks for a `past_key_values` argument, which 5.24 renamed `cache`), so the oracle covers
the GPT-2 and LLaMA (grouped-query attention, rotary) causal LMs; `test_prefix.py` checks BERT and
the classifiers against hand-written attention and padding relationships.
"""

from __future__ import annotations

import pytest
import torch

import peftlab
from peftlab.methods.prefix import PrefixTuningConfig
from tiny_models import tiny_batch, tiny_model

peft = pytest.importorskip("peft", reason="Hugging Face PEFT (test oracle) is not installed: pip install peft")

N = 4
CASES = [("gpt2", "causal-lm"), ("llama", "causal-lm")]


def _batch():
    batch = tiny_batch()
    del batch["labels"]
    return batch


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _randomize(params, seed=5):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in params:
            param.copy_(0.3 * torch.randn(param.shape, generator=generator))


def _hf_config(task, **fields):
    task_type = "SEQ_CLS" if task == "classification" else "CAUSAL_LM"
    return peft.PrefixTuningConfig(task_type=task_type, num_virtual_tokens=N, **fields)


@pytest.mark.parametrize("arch,task", CASES)
@pytest.mark.parametrize("projection", [False, True])
def test_peftlab_file_loads_in_hf_peft_with_same_logits(arch, task, projection, tmp_path):
    batch = _batch()
    ours = peftlab.apply(tiny_model(arch, task), PrefixTuningConfig(num_virtual_tokens=N, projection=projection))
    _randomize(ours.trainable_parameters().values())
    peftlab.save_adapter(ours, tmp_path)
    theirs = peft.PeftModel.from_pretrained(tiny_model(arch, task), tmp_path)
    torch.testing.assert_close(_logits(theirs, batch), _logits(ours, batch), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch,task", CASES)
@pytest.mark.parametrize("projection", [False, True])
def test_hf_peft_file_loads_in_peftlab_with_same_logits(arch, task, projection, tmp_path):
    batch = _batch()
    theirs = peft.get_peft_model(tiny_model(arch, task), _hf_config(task, prefix_projection=projection))
    _randomize([p for p in theirs.parameters() if p.requires_grad])
    expected = _logits(theirs, batch)
    theirs.save_pretrained(tmp_path)
    ours = peftlab.load_adapter(tiny_model(arch, task), tmp_path)
    torch.testing.assert_close(_logits(ours, batch), expected, rtol=0, atol=1e-5)


def test_layout_matches_hf_peft_past_key_values():
    """The last dimension of prompt_embeddings is (layer, key|value, kv head, head_dim) in HF's order."""
    theirs = peft.get_peft_model(tiny_model("llama", "causal-lm"), _hf_config("causal-lm"))
    _randomize([theirs.prompt_encoder["default"].embedding.weight])
    hf_cache = theirs.get_prompt(batch_size=1)
    ours = peftlab.apply(tiny_model("llama", "causal-lm"), PrefixTuningConfig(num_virtual_tokens=N))
    with torch.no_grad():
        ours.hooks["default"].prompt_embeddings.copy_(theirs.prompt_encoder["default"].embedding.weight)
    for layer, (keys, values) in enumerate(ours.hooks["default"].key_values(1, torch.float32)):
        torch.testing.assert_close(keys, hf_cache.layers[layer].keys, rtol=0, atol=0)
        torch.testing.assert_close(values, hf_cache.layers[layer].values, rtol=0, atol=0)

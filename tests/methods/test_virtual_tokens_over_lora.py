"""Prompt and prefix tuning on a model whose input embedding carries a LoRA adapter.

The LoRA wrapper hides the embedding's `.weight`; the hooks read the base table through it and the
prompt still replaces the placeholder rows after the wrapper's delta, so the LoRA changes the real
tokens only (what Hugging Face PEFT does). The reference for every check is the method alone on a
copy of the base model whose embedding table is E + s·(BA)ᵀ, i.e. the LoRA folded in by hand.
"""

from __future__ import annotations

import copy

import pytest
import torch

import peftlab
from peftlab.methods.prefix import PrefixTuningConfig
from peftlab.methods.prompt import PromptTuningConfig
from tiny_models import tiny_batch, tiny_model

EMBEDDINGS = {"bert": "word_embeddings", "gpt2": "wte", "llama": "embed_tokens"}
METHODS = {"prompt": PromptTuningConfig(num_virtual_tokens=3, modules_to_save=()),
           "prefix": PrefixTuningConfig(num_virtual_tokens=3, modules_to_save=())}


def with_embedding_lora(arch, method, task="classification", hook_first=False):
    """(peft model with LoRA "l" on the input embedding and `method` as "v", the by-hand reference)."""
    base = tiny_model(arch, task)
    lora = peftlab.LoraConfig(r=4, alpha=8, target_modules=(EMBEDDINGS[arch],), modules_to_save=())
    order = [("v", METHODS[method]), ("l", lora)] if hook_first else [("l", lora), ("v", METHODS[method])]
    model = peftlab.apply(copy.deepcopy(base), order[0][1], adapter_name=order[0][0])
    model.add_adapter(*order[1])
    model.set_active(["l", "v"])
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in model.adapter_parameters("l").values():  # A = 0 at init: make the delta real
            param.copy_(0.5 * torch.randn(param.shape, generator=generator))
        for param in model.adapter_parameters("v").values():
            param.copy_(0.5 * torch.randn(param.shape, generator=generator))
        wrapper = model.model.get_input_embeddings()
        base.get_input_embeddings().weight += wrapper.delta_weight("l")  # (V, d)
    reference = peftlab.apply(base, METHODS[method], adapter_name="v")
    with torch.no_grad():
        for key, param in reference.adapter_parameters("v").items():
            param.copy_(model.adapter_parameters("v")[key])
    return model, reference


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_lora_on_the_embedding_changes_real_tokens_only(arch, method):
    model, reference = with_embedding_lora(arch, method)
    batch = tiny_batch()
    with torch.no_grad():
        ours, expected = model(**batch), reference(**batch)
        lora_off = copy.deepcopy(model)
        lora_off.set_active(["v"])
        without = lora_off(**batch)
    torch.testing.assert_close(ours.logits, expected.logits, rtol=0, atol=1e-6)
    assert (ours.logits - without.logits).abs().max() > 1e-3  # the embedding's LoRA does act


def test_prompt_added_before_the_lora_works_the_same():
    model, reference = with_embedding_lora("llama", "prompt", hook_first=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**tiny_batch()).logits, reference(**tiny_batch()).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_both_adapters_get_gradients(method):
    model, _ = with_embedding_lora("gpt2", method)
    model.train()
    model(**tiny_batch()).loss.backward()
    for name in ("l", "v"):
        for key, param in model.adapter_parameters(name).items():
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{name}: {key}"


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_generate_equals_the_reference(method):
    model, reference = with_embedding_lora("llama", method, task="causal-lm")
    prompt = tiny_batch(batch=2, pad_last=False)["input_ids"]
    settings = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        assert torch.equal(model.generate(prompt, **settings), reference.generate(prompt, **settings))

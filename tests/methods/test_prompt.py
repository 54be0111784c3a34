"""Prompt tuning against direct recomputations on tiny BERT, GPT-2 and LLaMA models."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import peftlab
from peftlab.errors import ConfigError
from peftlab.methods.prompt import PromptTuningConfig
from tiny_models import tiny_batch, tiny_model

N = 3


def _prompted(arch, task, **fields):
    model = peftlab.apply(tiny_model(arch, task), PromptTuningConfig(num_virtual_tokens=N, **fields))
    with torch.no_grad():
        model.hooks["default"].prompt_embeddings.normal_(0, 0.5)
    return model


def _manual_embeds(peft_model, input_ids, at):
    """[E(x[:at]); P; E(x[at:])] and the matching mask, written out by hand."""
    embed = peft_model.model.get_input_embeddings()
    prompt = peft_model.hooks["default"].prompt_embeddings
    tokens = embed(input_ids)
    embeds = torch.cat([tokens[:, :at], prompt.expand(len(input_ids), -1, -1), tokens[:, at:]], dim=1)
    return embeds


def _mask(mask, at):
    return torch.cat([mask[:, :at], torch.ones(len(mask), N, dtype=mask.dtype), mask[:, at:]], dim=1)


@pytest.mark.parametrize("position,at", [("auto", 1), ("after_first", 1), ("start", 0)])
def test_bert_classification_equals_hand_built_inputs(position, at):
    model = _prompted("bert", "classification", position=position)
    batch = tiny_batch()
    with torch.no_grad():
        ours = model(**batch)
        embeds = _manual_embeds(model, batch["input_ids"], at)
        expected = model.model(inputs_embeds=embeds, attention_mask=_mask(batch["attention_mask"], at),
                               labels=batch["labels"])
    torch.testing.assert_close(ours.logits, expected.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.loss, expected.loss, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_decoder_classification_pools_last_real_token(arch):
    model = _prompted(arch, "classification")
    batch = tiny_batch()  # the last row is right-padded
    with torch.no_grad():
        ours = model(**batch).logits
        embeds = _manual_embeds(model, batch["input_ids"], 0)
        hidden = model.model.base_model(inputs_embeds=embeds, attention_mask=_mask(batch["attention_mask"], 0))[0]
        last = N + batch["attention_mask"].sum(1) - 1
        expected = model.model.score(hidden[torch.arange(len(last)), last])
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_causal_lm_logits_align_with_input_ids_and_loss_skips_prompt(arch):
    model = _prompted(arch, "causal-lm")
    batch = tiny_batch()
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        ours = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
        embeds = _manual_embeds(model, batch["input_ids"], 0)
        expected = model.model(inputs_embeds=embeds, attention_mask=_mask(batch["attention_mask"], 0),
                               labels=torch.cat([torch.full((len(labels), N), -100), labels], dim=1))
    assert ours.logits.shape[:2] == batch["input_ids"].shape
    torch.testing.assert_close(ours.logits, expected.logits[:, N:], rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.loss, expected.loss, rtol=0, atol=1e-6)


def test_two_active_prompts_stack_in_front_of_the_tokens():
    model = _prompted("llama", "causal-lm")
    model.add_adapter("second", PromptTuningConfig(num_virtual_tokens=2, init="vocab"), activate=False)
    model.set_active(["default", "second"])
    input_ids = tiny_batch(batch=2, seq=5, pad_last=False)["input_ids"]
    embed = model.model.get_input_embeddings()
    first, second = model.hooks["default"].prompt_embeddings, model.hooks["second"].prompt_embeddings
    with torch.no_grad():
        ours = model(input_ids=input_ids).logits
        embeds = torch.cat([second.expand(2, -1, -1), first.expand(2, -1, -1), embed(input_ids)], dim=1)
        expected = model.model(inputs_embeds=embeds).logits[:, N + 2:]
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_zero_learning_rate_changes_nothing_between_steps():
    model = _prompted("gpt2", "causal-lm")
    model.train()
    batch = tiny_batch()
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=0.0)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    losses = []
    for _ in range(3):
        loss = model(**batch).loss
        loss.backward()
        assert model.hooks["default"].prompt_embeddings.grad.abs().sum() > 0  # the prompt is in the graph
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[0] == losses[1] == losses[2]
    for key, param in model.named_parameters():
        assert torch.equal(param, before[key]), key


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_generate_equals_step_by_step_decoding_without_cache(arch):
    model = _prompted(arch, "causal-lm")
    input_ids = tiny_batch(batch=2, seq=5, pad_last=False)["input_ids"]
    with torch.no_grad():
        generated = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                   max_new_tokens=6, do_sample=False, pad_token_id=0)
        sequence = input_ids
        for _ in range(6):
            logits = model(input_ids=sequence, use_cache=False).logits
            sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, sequence)


def test_sampling_generate_keeps_the_callers_input_ids():
    model = _prompted("llama", "causal-lm")
    input_ids = tiny_batch(batch=2, seq=5, pad_last=False)["input_ids"]
    torch.manual_seed(0)
    with torch.no_grad():
        generated = model.generate(input_ids, max_new_tokens=4, min_new_tokens=4, do_sample=True,
                                   top_k=20, pad_token_id=0)
    assert generated.shape == (2, 9) and torch.equal(generated[:, :5], input_ids)


def test_disabled_prompt_generates_like_the_base_model():
    model = _prompted("gpt2", "causal-lm")
    base = tiny_model("gpt2", "causal-lm")
    input_ids = tiny_batch(batch=1, seq=4, pad_last=False)["input_ids"]
    with torch.no_grad(), model.disable_adapters():
        ours = model.generate(input_ids=input_ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, base.generate(input_ids=input_ids, max_new_tokens=3, do_sample=False, pad_token_id=0))


def test_initialisations():
    base = tiny_model("llama", "causal-lm")
    vocab = base.get_input_embeddings().weight
    text = peftlab.apply(base, PromptTuningConfig(num_virtual_tokens=5, init="text", init_token_ids=(7, 9)))
    torch.testing.assert_close(text.hooks["default"].prompt_embeddings, vocab[[7, 9, 7, 9, 7]])
    sampled = peftlab.apply(tiny_model("llama", "causal-lm"), PromptTuningConfig(num_virtual_tokens=4, init="vocab"))
    rows = sampled.hooks["default"].prompt_embeddings
    assert all(any(torch.equal(row, v) for v in vocab) for row in rows)
    with pytest.raises(ConfigError, match="init_token_ids"):
        PromptTuningConfig(init="text")
    with pytest.raises(ConfigError, match="num_virtual_tokens=0"):
        PromptTuningConfig(num_virtual_tokens=0)


def test_from_text_tokenizes_without_special_tokens():
    class Tokenizer:
        def __call__(self, text, add_special_tokens):
            assert add_special_tokens is False
            return {"input_ids": [3, 4, 5]}

    config = PromptTuningConfig.from_text("classify this", Tokenizer(), num_virtual_tokens=8)
    assert config.init == "text" and config.init_token_ids == (3, 4, 5) and config.init_text == "classify this"


@pytest.mark.parametrize("n", [20, 100])
def test_trainable_parameters_are_n_times_d_at_4096(n):
    """The seeds' cases (20 × 4096, 100 × 4096), on a LLaMA of hidden size 4096 built on the meta device."""
    config = LlamaConfig(vocab_size=32000, hidden_size=4096, num_hidden_layers=2, num_attention_heads=32,
                         num_key_value_heads=8, intermediate_size=11008)
    with torch.device("meta"):
        model = peftlab.apply(LlamaForCausalLM(config), PromptTuningConfig(num_virtual_tokens=n))
    trainable, _ = model.count_parameters()
    assert trainable == n * 4096


@pytest.mark.parametrize("position", ["auto", "start"])
def test_save_load_keeps_the_position(position, tmp_path):
    model = _prompted("bert", "classification", position=position)
    batch = tiny_batch()
    with torch.no_grad():
        expected = model(**batch).logits
    peftlab.save_adapter(model, tmp_path)
    reloaded = peftlab.load_adapter(tiny_model("bert", "classification"), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, rtol=0, atol=1e-6)

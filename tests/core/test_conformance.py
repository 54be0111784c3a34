"""The conformance suite: every registered method, on a tiny model of every architecture in the
table (BERT, DistilBERT, RoBERTa, GPT-2, LLaMA, Mistral, Qwen2; GPT-2 and LLaMA for both tasks).

Each test asserts a relationship (fresh == base, disabled == base, merged == unmerged, ...) and
applies only where the method's declared capabilities say it must hold. A method the table says
an architecture cannot carry (prefix tuning needs a key/value cache) must refuse it instead.
"""

from __future__ import annotations

import copy

import pytest
import torch

import peftlab
from method_configs import config_for
from tiny_models import TABLE_MODELS, tiny_batch, tiny_model

from peftlab.core.architectures import ARCHITECTURES
from peftlab.core.registry import declaration

MODELS = list(dict.fromkeys([*TABLE_MODELS, ("gpt2", "classification"), ("llama", "classification")]))
METHODS = peftlab.method_names()


def _carries(method: str, arch: str) -> bool:
    return set(declaration(method).needs) <= set(ARCHITECTURES[arch].features)


CASES = [pytest.param(m, a, t, id=f"{m}-{a}-{t}") for m in METHODS for a, t in MODELS if _carries(m, a)]
REFUSED = [pytest.param(m, a, t, id=f"{m}-{a}-{t}") for m in METHODS for a, t in MODELS if not _carries(m, a)]


def batch_for(task: str) -> dict:
    batch = tiny_batch()
    if task == "causal-lm":
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return batch


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def randomize(peft_model, name: str = "default", seed: int = 3) -> None:
    """Give every adapter tensor a non-trivial value, so relationships are tested on a real delta."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in peft_model.adapter_parameters(name).values():
            param.add_(0.05 * torch.randn(param.shape, generator=generator).to(param.dtype))


def build(method: str, arch: str, task: str):
    """(PeftModel, reference): the reference is the base as the method prepares it (QLoRA: quantized)."""
    base = tiny_model(arch, task)
    config = config_for(method, arch, task)
    reference = copy.deepcopy(base)
    peftlab.get_method(method).prepare_base(reference, config)
    peft_model = peftlab.apply(base, config)
    return peft_model, reference


def capabilities(method: str):
    return peftlab.get_method(method).capabilities


@pytest.mark.parametrize("method,arch,task", CASES)
def test_fresh_adapter_is_identity(method, arch, task):
    if not capabilities(method).identity_at_init:
        pytest.skip(f"{method} is not an identity at init (declared)")
    peft_model, reference = build(method, arch, task)
    batch = batch_for(task)
    torch.testing.assert_close(logits(peft_model, batch), logits(reference, batch), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method,arch,task", CASES)
def test_disabled_equals_base(method, arch, task):
    if not capabilities(method).supports_disable:
        pytest.skip(f"{method} cannot be disabled (declared)")
    peft_model, reference = build(method, arch, task)
    randomize(peft_model)
    batch = batch_for(task)
    assert not torch.allclose(logits(peft_model, batch), logits(reference, batch), atol=1e-4)
    with peft_model.disable_adapters():
        torch.testing.assert_close(logits(peft_model, batch), logits(reference, batch), rtol=0, atol=1e-6)
    assert not torch.allclose(logits(peft_model, batch), logits(reference, batch), atol=1e-4)


@pytest.mark.parametrize("method,arch,task", CASES)
def test_merge_unmerge_relationships(method, arch, task):
    peft_model, _ = build(method, arch, task)
    batch = batch_for(task)
    if not capabilities(method).mergeable:
        with pytest.raises(peftlab.errors.MergeError, match="cannot be merged"):
            peft_model.merge()
        return
    if not capabilities(method).separate_delta:
        pytest.skip(f"{method} trains the weights themselves: there is no delta to merge (declared)")
    randomize(peft_model)
    before_weights = {k: v.clone() for k, v in peft_model.base_parameters().items()}
    unmerged = logits(peft_model, batch)

    peft_model.merge()
    merged_once = {k: v.clone() for k, v in peft_model.base_parameters().items()}
    torch.testing.assert_close(logits(peft_model, batch), unmerged, rtol=0, atol=1e-5)
    peft_model.merge()  # merging twice is merging once
    current = peft_model.base_parameters()
    for key, value in merged_once.items():
        assert torch.equal(current[key], value), key

    peft_model.unmerge()
    if capabilities(method).exact_unmerge:
        # Keys of the weights as they were (a tied head untied by the merge appears as a new key).
        current = peft_model.base_parameters()
        for key, value in before_weights.items():
            torch.testing.assert_close(current[key], value, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(peft_model, batch), unmerged, rtol=0, atol=1e-5)
    peft_model.unmerge()  # unmerging twice is unmerging once
    torch.testing.assert_close(logits(peft_model, batch), unmerged, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method,arch,task", CASES)
def test_merge_and_unload_gives_plain_model(method, arch, task):
    if not capabilities(method).mergeable:
        pytest.skip(f"{method} cannot merge (declared)")
    if not capabilities(method).separate_delta:
        pytest.skip(f"{method} trains the weights themselves: there is no delta to merge (declared)")
    peft_model, _ = build(method, arch, task)
    randomize(peft_model)
    batch = batch_for(task)
    expected = logits(peft_model, batch)
    plain = peft_model.merge_and_unload()
    assert type(plain).__name__ == type(peft_model.model).__name__
    assert not any(isinstance(m, peftlab.core.AdapterLayer) for m in plain.modules())
    torch.testing.assert_close(logits(plain, batch), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method,arch,task", CASES)
def test_three_steps_change_only_adapter_parameters(method, arch, task):
    peft_model, _ = build(method, arch, task)
    peft_model.train()
    trainable = peft_model.trainable_parameters()
    assert trainable, "an adapter must declare trainable parameters"
    assert {id(p) for p in peft_model.parameters() if p.requires_grad} == {id(p) for p in trainable.values()}
    frozen_before = {name: p.detach().clone() for name, p in peft_model.named_parameters() if not p.requires_grad}
    trainable_before = {key: p.detach().clone() for key, p in trainable.items()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)
    batch = batch_for(task)
    for _ in range(3):
        loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, param in peft_model.named_parameters():
        if name in frozen_before:
            assert torch.equal(param, frozen_before[name]), f"frozen parameter {name} changed"
    changed = [key for key, p in trainable.items() if not torch.equal(p, trainable_before[key])]
    assert changed, "no trainable parameter changed in three optimizer steps"


@pytest.mark.parametrize("method,arch,task", CASES)
def test_save_load_round_trip(method, arch, task, tmp_path):
    peft_model, _ = build(method, arch, task)
    randomize(peft_model)
    batch = batch_for(task)
    expected = logits(peft_model, batch)
    peftlab.save_adapter(peft_model, tmp_path / "adapter")
    reloaded = peftlab.load_adapter(tiny_model(arch, task), tmp_path / "adapter")
    torch.testing.assert_close(logits(reloaded, batch), expected, rtol=0, atol=1e-6)
    assert reloaded.configs["default"].method == method


@pytest.mark.parametrize("method,arch,task", REFUSED)
def test_an_architecture_without_what_the_method_needs_is_refused_before_anything_changes(method, arch, task):
    base = tiny_model(arch, task)
    model = peftlab.PeftModel(base)
    with pytest.raises(peftlab.errors.TargetError, match=f"{method} needs .* does not have: choose another method"):
        model.add_adapter("default", config_for(method, arch, task))
    assert model.configs == {} and not any(isinstance(m, peftlab.core.AdapterLayer) for m in base.modules())

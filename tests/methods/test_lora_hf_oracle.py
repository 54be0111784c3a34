"""Hugging Face PEFT as the oracle for LoRA: same weights, same logits, both directions of the file.

peft is a test-only dependency; without it these tests skip with the reason.
"""

from __future__ import annotations

import copy

import pytest
import torch

import peftlab
from tiny_models import logits_of, oracle_batch, tiny_model

peft = pytest.importorskip("peft", reason="Hugging Face PEFT (test oracle) is not installed: pip install peft")

CASES = [
    ("bert", "classification", ["query", "value"], {}),
    ("bert", "classification", ["query", "key", "value", "dense"], {"use_rslora": True}),
    ("gpt2", "classification", ["c_attn", "c_proj"], {}),
    ("gpt2", "causal-lm", ["c_attn", "c_fc", "wte"], {}),
    ("llama", "classification", ["q_proj", "k_proj", "v_proj", "o_proj"], {}),
    ("llama", "causal-lm", ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens"], {}),
]


def _randomize(params, seed=5):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in params:
            param.copy_(0.1 * torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize("arch,task,targets,extra", CASES)
def test_peftlab_file_loads_in_hf_peft_with_same_logits(arch, task, targets, extra, tmp_path):
    batch = oracle_batch(task)
    ours = peftlab.apply(tiny_model(arch, task), peftlab.LoraConfig(
        r=4, alpha=8, target_modules=tuple(targets), use_rslora=extra.get("use_rslora", False)))
    _randomize(ours.trainable_parameters().values())
    expected = logits_of(ours, batch)
    peftlab.save_adapter(ours, tmp_path)

    theirs = peft.PeftModel.from_pretrained(tiny_model(arch, task), tmp_path)
    torch.testing.assert_close(logits_of(theirs, batch), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch,task,targets,extra", CASES)
def test_hf_peft_file_loads_in_peftlab_with_same_logits(arch, task, targets, extra, tmp_path):
    batch = oracle_batch(task)
    task_type = "SEQ_CLS" if task == "classification" else "CAUSAL_LM"
    theirs = peft.get_peft_model(tiny_model(arch, task), peft.LoraConfig(
        task_type=task_type, r=4, lora_alpha=8, target_modules=targets, **extra))
    _randomize([p for p in theirs.parameters() if p.requires_grad])
    expected = logits_of(theirs, batch)
    theirs.save_pretrained(tmp_path)

    ours = peftlab.load_adapter(tiny_model(arch, task), tmp_path)
    torch.testing.assert_close(logits_of(ours, batch), expected, rtol=0, atol=1e-5)
    # And the merged model agrees too.
    torch.testing.assert_close(logits_of(ours.merge_and_unload(), batch), expected, rtol=0, atol=1e-5)


def test_trainable_parameter_count_matches_hf_peft():
    base = tiny_model("llama", "classification")
    ours = peftlab.apply(copy.deepcopy(base), peftlab.LoraConfig(r=8, target_modules="all-linear"))
    theirs = peft.get_peft_model(base, peft.LoraConfig(task_type="SEQ_CLS", r=8, target_modules="all-linear"))
    trainable_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert ours.count_parameters()[0] == trainable_theirs

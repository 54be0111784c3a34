"""Hugging Face PEFT's DoRA (`use_dora=True`) as the oracle: the same logits within 1e-5 from the
same weights, both directions of the file, and the merged models agree."""

from __future__ import annotations

import pytest
import torch

import peftlab
from peftlab.methods.dora import DoraConfig
from tiny_models import logits_of, oracle_batch, perturb, tiny_model

peft = pytest.importorskip("peft", reason="Hugging Face PEFT (test oracle) is not installed: pip install peft")

CASES = [
    ("bert", "classification", ["query", "value"]),
    ("bert", "classification", ["query", "key", "value", "dense"]),
    ("gpt2", "classification", ["c_attn", "c_proj"]),
    ("gpt2", "causal-lm", ["c_attn", "c_fc"]),
    ("llama", "classification", ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ("llama", "causal-lm", ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]),
]


@pytest.mark.parametrize("arch,task,targets", CASES)
def test_peftlab_dora_file_loads_in_hf_peft_with_same_logits(arch, task, targets, tmp_path):
    batch = oracle_batch(task)
    base = logits_of(tiny_model(arch, task), batch)
    ours = peftlab.apply(tiny_model(arch, task), DoraConfig(r=4, alpha=8, target_modules=tuple(targets)))
    perturb(ours.trainable_parameters().values())
    expected = logits_of(ours, batch)
    assert not torch.allclose(expected, base, atol=1e-3)
    peftlab.save_adapter(ours, tmp_path)

    theirs = peft.PeftModel.from_pretrained(tiny_model(arch, task), tmp_path)
    assert theirs.peft_config["default"].use_dora
    torch.testing.assert_close(logits_of(theirs, batch), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits_of(theirs.merge_and_unload(), batch), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch,task,targets", CASES)
def test_hf_peft_dora_file_loads_in_peftlab_with_same_logits(arch, task, targets, tmp_path):
    batch = oracle_batch(task)
    task_type = "SEQ_CLS" if task == "classification" else "CAUSAL_LM"
    theirs = peft.get_peft_model(tiny_model(arch, task), peft.LoraConfig(
        task_type=task_type, r=4, lora_alpha=8, target_modules=targets, use_dora=True))
    perturb([p for p in theirs.parameters() if p.requires_grad])
    expected = logits_of(theirs, batch)
    theirs.save_pretrained(tmp_path)

    ours = peftlab.load_adapter(tiny_model(arch, task), tmp_path)
    assert ours.configs["default"].method == "dora"
    torch.testing.assert_close(logits_of(ours, batch), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits_of(ours.merge_and_unload(), batch), expected, rtol=0, atol=1e-5)


def test_trainable_parameters_match_hf_peft():
    base = tiny_model("llama", "classification")
    ours = peftlab.apply(base, DoraConfig(r=8, target_modules="all-linear"))
    theirs = peft.get_peft_model(tiny_model("llama", "classification"), peft.LoraConfig(
        task_type="SEQ_CLS", r=8, target_modules="all-linear", use_dora=True))
    assert ours.count_parameters()[0] == sum(p.numel() for p in theirs.parameters() if p.requires_grad)

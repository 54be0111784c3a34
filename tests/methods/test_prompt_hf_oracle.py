"""Hugging Face PEFT as the oracle for prompt tuning: same prompt, same logits, files both ways.

Hugging Face PEFT returns causal-LM logits over [prompt; tokens]; ours are aligned with the
tokens, so they are compared with its last T positions. On BERT it prepends the prompt before
[CLS], which is `position="start"` here (files it writes load that way).
"""

from __future__ import annotations

import pytest
import torch

import peftlab
from peftlab.methods.prompt import PromptTuningConfig
from tiny_models import tiny_batch, tiny_model

peft = pytest.importorskip("peft", reason="Hugging Face PEFT (test oracle) is not installed: pip install peft")

N = 4
CASES = [("gpt2", "causal-lm"), ("llama", "causal-lm"), ("bert", "classification")]


def _batch(task):
    batch = tiny_batch()
    del batch["labels"]
    return batch


def _logits(model, batch, task, theirs=False):
    with torch.no_grad():
        logits = model(**batch).logits
    return logits[:, N:] if theirs and task == "causal-lm" else logits


def _randomize(param, seed=5):
    with torch.no_grad():
        param.copy_(0.3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("arch,task", CASES)
def test_peftlab_file_loads_in_hf_peft_with_same_logits(arch, task, tmp_path):
    batch = _batch(task)
    ours = peftlab.apply(tiny_model(arch, task), PromptTuningConfig(num_virtual_tokens=N, position="start"))
    _randomize(ours.hooks["default"].prompt_embeddings)
    peftlab.save_adapter(ours, tmp_path)
    theirs = peft.PeftModel.from_pretrained(tiny_model(arch, task), tmp_path)
    torch.testing.assert_close(_logits(theirs, batch, task, theirs=True), _logits(ours, batch, task),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch,task", CASES)
def test_hf_peft_file_loads_in_peftlab_with_same_logits(arch, task, tmp_path):
    batch = _batch(task)
    task_type = "SEQ_CLS" if task == "classification" else "CAUSAL_LM"
    theirs = peft.get_peft_model(tiny_model(arch, task), peft.PromptTuningConfig(task_type=task_type,
                                                                                 num_virtual_tokens=N))
    _randomize(theirs.prompt_encoder["default"].embedding.weight)
    if task == "classification":  # HF trains and saves the head too
        _randomize(theirs.base_model.classifier.modules_to_save["default"].weight, seed=6)
    theirs.save_pretrained(tmp_path)
    ours = peftlab.load_adapter(tiny_model(arch, task), tmp_path)
    torch.testing.assert_close(_logits(ours, batch, task), _logits(theirs, batch, task, theirs=True),
                               rtol=0, atol=1e-5)

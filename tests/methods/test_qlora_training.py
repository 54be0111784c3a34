"""QLoRA in the training loop: gradient checkpointing recomputes the 4-bit layers' forward and
must give the same losses and adapter weights as a run without it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import peftlab
from peftlab.methods.qlora import QLoraConfig
from peftlab.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))  # the tiny BERT and toy task of tests/train
from train_helpers import minilm_tokenizer, tiny_bert, toy_task  # noqa: E402


def _run(checkpointing: bool, tokenizer, task):
    torch.manual_seed(0)
    model = peftlab.apply(tiny_bert(), QLoraConfig(r=4, alpha=8, block_size=32))
    config = TrainConfig(learning_rate=1e-2, max_steps=3, batch_size=8, num_threads=1, log_every=1,
                         warmup_ratio=0.0, gradient_checkpointing=checkpointing)
    result = train(model, task, tokenizer, config, progress=False)
    assert not model.model.is_gradient_checkpointing  # switched off again after the run
    return [r["loss"] for r in result.history], {k: p.detach().clone() for k, p in model.trainable_parameters().items()}


def test_gradient_checkpointing_gives_the_same_qlora_training():
    tokenizer, task = minilm_tokenizer(), toy_task()
    plain_losses, plain = _run(False, tokenizer, task)
    losses, checkpointed = _run(True, tokenizer, task)
    assert losses == pytest.approx(plain_losses, rel=1e-5)
    assert len(losses) == 3
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], atol=1e-5, rtol=1e-4)
    assert any(not torch.equal(p, torch.zeros_like(p)) for k, p in plain.items() if "lora_B" in k)

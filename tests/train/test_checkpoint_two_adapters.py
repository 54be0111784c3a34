"""Checkpoints of a run that trains two LoRA adapters on the same modules at once.

Their file keys are equal ("<path>.lora_A.weight" in both), so the checkpoint relies on
`trainable_parameters()` keeping the two tensors apart: a resumed run must restore both.
"""

import peftlab
import pytest
import torch
from train_helpers import minilm_tokenizer, tiny_bert, toy_task

from peftlab.train import TrainConfig, train
from peftlab.train import checkpoint as checkpoint_module

RUN = TrainConfig(learning_rate=1e-2, max_steps=6, batch_size=8, num_threads=1, log_every=3,
                  checkpoint_every=3)


class Crash(Exception):
    pass


def two_loras():
    torch.manual_seed(0)
    config = peftlab.LoraConfig(r=4, alpha=8, target_modules=("query", "value"))
    model = peftlab.apply(tiny_bert(), config, adapter_name="a")
    model.add_adapter("b", config.replace(modules_to_save=()))
    model.set_active(["a", "b"])
    return model


def tensors(model):
    return {name: {k: p.detach().clone() for k, p in model.adapter_parameters(name).items()} for name in "ab"}


def test_a_resumed_two_adapter_run_restores_both_adapters(tmp_path, monkeypatch):
    tokenizer, task = minilm_tokenizer(), toy_task(train=24, dev=8)
    whole = two_loras()
    train(whole, task, tokenizer, RUN, checkpoint_dir=tmp_path / "whole", progress=False)
    expected = tensors(whole)
    original = checkpoint_module.save_checkpoint

    def save_then_crash(directory, **kwargs):
        path = original(directory, **kwargs)
        if kwargs["position"]["step"] == 3:
            raise Crash
        return path

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module, "save_checkpoint", save_then_crash)
        with pytest.raises(Crash):
            train(two_loras(), task, tokenizer, RUN, checkpoint_dir=tmp_path / "cut", progress=False)
    torch.manual_seed(7)
    resumed = two_loras()
    with torch.no_grad():  # a fresh start differs from the checkpoint everywhere the restore must reach
        for name in "ab":
            for param in resumed.adapter_parameters(name).values():
                param.add_(1.0)
    train(resumed, task, tokenizer, RUN, checkpoint_dir=tmp_path / "cut", resume_from=tmp_path / "cut", progress=False)
    for name, values in tensors(resumed).items():
        for key, value in values.items():
            assert (value - expected[name][key]).abs().max() <= 1e-6, f"{name}: {key}"

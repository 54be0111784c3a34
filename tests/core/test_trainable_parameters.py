"""What the optimizer sees when several adapters are active: every distinct tensor, once, under its own key."""

from __future__ import annotations

import torch

import peftlab
from peftlab.train.config import TrainConfig
from peftlab.train.schedule import make_optimizer
from tiny_models import tiny_batch, tiny_model


def two_loras(arch: str = "llama", bias: str = "none"):
    """LoRA adapters "a" and "b" on the same modules (the architecture's q/v default), both active."""
    config = peftlab.LoraConfig(r=4, alpha=8, bias=bias, modules_to_save=())
    model = peftlab.apply(tiny_model(arch), config, adapter_name="a")
    model.add_adapter("b", config)
    model.set_active(["a", "b"])
    return model


def test_two_loras_on_the_same_modules_both_reach_the_optimizer_and_train():
    model = two_loras()
    model.train()
    trainable = model.trainable_parameters()
    a, b = model.adapter_parameters("a"), model.adapter_parameters("b")
    assert set(a) == set(b)  # the file keys collide, which is what the optimizer keys must not do
    assert sum(p.numel() for p in trainable.values()) == sum(p.numel() for p in [*a.values(), *b.values()])
    assert {id(p) for p in trainable.values()} == {id(p) for p in [*a.values(), *b.values()]}
    assert set(trainable) == {f"{name}/{key}" for name in "ab" for key in a}
    assert set(model.learning_rate_scales()) == set(trainable)
    before = {name: {k: p.detach().clone() for k, p in model.adapter_parameters(name).items()} for name in "ab"}
    optimizer = make_optimizer(trainable, TrainConfig(learning_rate=1e-2), lr_scales=model.learning_rate_scales())
    for _ in range(3):
        model(**tiny_batch()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name in "ab":
        for key, param in model.adapter_parameters(name).items():
            assert not torch.equal(param, before[name][key]), f"{name}: {key} did not change"


def test_a_single_adapter_keeps_its_file_keys():
    model = peftlab.apply(tiny_model("llama"), peftlab.LoraConfig(r=4, modules_to_save=()))
    assert set(model.trainable_parameters()) == set(model.adapter_parameters("default"))
    both = two_loras()
    both.set_active(["b"])
    assert model.trainable_parameters().keys() == both.trainable_parameters().keys()


def test_a_base_tensor_two_adapters_unfreeze_appears_once_under_its_path():
    model = two_loras("bert", bias="all")  # LLaMA has no biases
    trainable = model.trainable_parameters()
    biases = {k for k in model.adapter_parameters("a") if k.endswith(".bias")}
    assert biases and biases == {k for k in model.adapter_parameters("b") if k.endswith(".bias")}
    assert biases <= set(trainable)  # the same tensor in both adapters: one entry, unqualified
    assert len({id(p) for p in trainable.values()}) == len(trainable)
    loras = sum(p.numel() for name in "ab" for k, p in model.adapter_parameters(name).items() if "lora_" in k)
    assert sum(p.numel() for p in trainable.values()) == loras + sum(trainable[k].numel() for k in biases)

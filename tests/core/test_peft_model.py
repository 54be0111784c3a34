"""Named adapters, freezing, modules_to_save, safe merging and parameter counts."""

from __future__ import annotations

import copy

import pytest
import torch

import peftlab
from peftlab.errors import ConfigError, MergeError
from tiny_models import tiny_batch, tiny_model


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def randomize(params, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in params:
            param.add_(0.1 * torch.randn(param.shape, generator=generator))


def two_adapter_model():
    model = peftlab.apply(tiny_model("bert"), peftlab.LoraConfig(r=2), "a")
    model.add_adapter("b", peftlab.LoraConfig(r=4, target_modules=("key",)))
    randomize(model.adapter_parameters("a").values(), 1)
    randomize(model.adapter_parameters("b").values(), 2)
    return model


def test_add_list_set_active_delete():
    model = two_adapter_model()
    batch = tiny_batch()
    assert list(model.configs) == ["a", "b"] and model.active_adapters == ("b",)
    only_b = logits(model, batch)
    model.set_active("a")
    only_a = logits(model, batch)
    assert not torch.allclose(only_a, only_b)
    assert {id(p) for p in model.parameters() if p.requires_grad} == \
        {id(p) for p in model.adapter_parameters("a").values()}
    model.set_active(["a", "b"])
    both = logits(model, batch)
    assert not torch.allclose(both, only_a) and not torch.allclose(both, only_b)
    model.delete_adapter("b")
    assert list(model.configs) == ["a"] and model.active_adapters == ("a",)
    torch.testing.assert_close(logits(model, batch), only_a)
    assert not any("key" in path for path, _ in model.adapter_layers())


def test_deleting_the_last_adapter_restores_plain_modules():
    base = tiny_model("gpt2", "causal-lm")
    reference = copy.deepcopy(base)
    model = peftlab.apply(base, peftlab.LoraConfig(r=2))
    model.delete_adapter("default")
    assert not list(model.adapter_layers())
    assert [n for n, _ in model.model.named_parameters()] == [n for n, _ in reference.named_parameters()]


def test_duplicate_and_unknown_names_are_clear_errors():
    model = two_adapter_model()
    with pytest.raises(ConfigError, match="exists already"):
        model.add_adapter("a", peftlab.LoraConfig())
    with pytest.raises(ConfigError, match=r"existing adapters are \['a', 'b'\]"):
        model.set_active("c")


def test_disable_is_a_context_and_refuses_merged_adapters():
    model = two_adapter_model()
    batch = tiny_batch()
    with model.disable_adapters():
        disabled = logits(model, batch)
    torch.testing.assert_close(disabled, logits(tiny_model("bert"), batch))
    model.merge()
    with pytest.raises(ConfigError, match="unmerge"):
        with model.disable_adapters():
            pass


def test_each_adapter_has_its_own_classifier_head():
    model = two_adapter_model()
    heads = model.model.classifier
    assert set(heads.copies) == {"a", "b"}
    assert "classifier.weight" in model.adapter_parameters("a")
    assert model.adapter_parameters("a")["classifier.weight"] is not model.adapter_parameters("b")["classifier.weight"]


def test_rank_and_dropout_validation_names_value_and_range():
    with pytest.raises(ConfigError, match=r"lora: r=0 is invalid: expected an integer >= 1 and <= 4096"):
        peftlab.LoraConfig(r=0)
    with pytest.raises(ConfigError, match="dropout=1.5"):
        peftlab.LoraConfig(dropout=1.5)
    with pytest.raises(ConfigError, match="bias='some'"):
        peftlab.LoraConfig(bias="some")


def test_safe_merge_refuses_non_finite_weights_and_leaves_model_unmerged():
    model = peftlab.apply(tiny_model("llama"), peftlab.LoraConfig(r=2))
    randomize(model.adapter_parameters("default").values(), 3)
    before = {k: v.clone() for k, v in model.base_parameters().items()}
    last_b = [p for k, p in model.adapter_parameters("default").items() if k.endswith("lora_B.weight")][-1]
    with torch.no_grad():
        last_b[0, 0] = float("inf")
    with pytest.raises(MergeError, match="non-finite"):
        model.merge(safe=True)
    assert model.merged_adapters() == []
    for key, value in model.base_parameters().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=1e-6)


def test_lora_bias_modes_train_the_right_biases():
    model = peftlab.apply(tiny_model("bert"), peftlab.LoraConfig(r=2, bias="lora_only"))
    biases = [k for k in model.trainable_parameters() if k.endswith(".bias") and "classifier" not in k]
    assert sorted(biases) == sorted(f"bert.encoder.layer.{i}.attention.self.{m}.bias"
                                    for i in range(2) for m in ("query", "value"))
    model = peftlab.apply(tiny_model("bert"), peftlab.LoraConfig(r=2, bias="all"))
    all_biases = [n for n, _ in tiny_model("bert").named_parameters() if n.endswith("bias")]
    trained = {k for k in model.trainable_parameters() if k.endswith(".bias")}
    assert trained == set(all_biases)


def test_rslora_scaling():
    assert peftlab.LoraConfig(r=16, alpha=32).scaling == 2.0
    assert peftlab.LoraConfig(r=16, alpha=32, use_rslora=True).scaling == 8.0


def test_gaussian_init_and_zero_b():
    model = peftlab.apply(tiny_model("bert"), peftlab.LoraConfig(r=8, init="gaussian"))
    params = model.adapter_parameters("default")
    a = params["bert.encoder.layer.0.attention.self.query.lora_A.weight"]
    assert abs(a.std().item() - 1 / 8) < 0.05
    assert all(torch.count_nonzero(p) == 0 for k, p in params.items() if "lora_B" in k)

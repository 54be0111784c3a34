"""Combinations of methods as one unit: apply, train jointly, conflicts, capabilities, lr scales."""

from __future__ import annotations

import copy

import pytest
import torch

import peftlab
from peftlab.core.combination_config import CombinationConfig, Component
from peftlab.errors import ConfigError, MergeError
from peftlab.train.config import TrainConfig
from peftlab.train.schedule import make_optimizer
from tiny_models import tiny_batch, tiny_model

ARCHS = ["bert", "gpt2", "llama"]


def lora_adapters(arch: str) -> CombinationConfig:
    """LoRA on attention (the architecture's q/v default) + bottleneck adapters after the FFN."""
    return peftlab.make_config("lora+adapters", lora={"r": 4, "alpha": 8},
                               adapters={"bottleneck_size": 4, "placement": "pfeiffer"})


def lora_prompt(arch: str) -> CombinationConfig:
    return peftlab.make_config("lora+prompt", lora={"r": 4, "alpha": 8},
                               prompt={"num_virtual_tokens": 3, "init": "vocab"}, lr_scales={"prompt": 300})


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def randomize(model, name="default", seed=3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.adapter_parameters(name).values():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize("arch", ARCHS)
def test_fresh_lora_plus_adapters_is_the_base_model(arch):
    base = tiny_model(arch)
    reference = copy.deepcopy(base)
    model = peftlab.apply(base, lora_adapters(arch))
    assert model.active_adapters == ("default:lora", "default:adapters")
    assert model.method("default").capabilities.identity_at_init
    torch.testing.assert_close(logits(model, tiny_batch()), logits(reference, tiny_batch()), rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("make", [lora_adapters, lora_prompt], ids=["lora+adapters", "lora+prompt"])
def test_a_few_adamw_steps_train_both_parts_and_nothing_else(arch, make):
    model = peftlab.apply(tiny_model(arch), make(arch))
    model.train()
    trainable = model.trainable_parameters()
    parts = {name: set(model.adapter_parameters(name)) for name in model.active_adapters}
    assert set(trainable) == set().union(*parts.values()) and all(parts.values())
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in trainable.values()}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = {k: p.detach().clone() for k, p in trainable.items()}
    optimizer = make_optimizer(trainable, TrainConfig(learning_rate=1e-2), lr_scales=model.learning_rate_scales())
    for _ in range(3):
        model(**tiny_batch()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, keys in parts.items():
        assert any(not torch.equal(trainable[k], before[k]) for k in keys), f"{name} did not change"
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), f"frozen {name} changed"


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_plus_prompt_equals_both_applied_by_hand(arch):
    combined = peftlab.apply(tiny_model(arch), lora_prompt(arch))
    randomize(combined)
    by_hand = peftlab.apply(tiny_model(arch), peftlab.LoraConfig(r=4, alpha=8), adapter_name="l")
    by_hand.add_adapter("p", peftlab.PromptTuningConfig(num_virtual_tokens=3, init="vocab", modules_to_save=()))
    by_hand.set_active(["l", "p"])
    mine = combined.adapter_parameters("default:lora") | combined.adapter_parameters("default:prompt")
    with torch.no_grad():
        for key, param in (by_hand.adapter_parameters("l") | by_hand.adapter_parameters("p")).items():
            param.copy_(mine[key])
    expected = logits(by_hand, tiny_batch())
    torch.testing.assert_close(logits(combined, tiny_batch()), expected, rtol=0, atol=1e-6)
    with combined.disable_adapters():
        torch.testing.assert_close(logits(combined, tiny_batch()), logits(tiny_model(arch), tiny_batch()),
                                   rtol=0, atol=1e-6)


def test_only_the_first_component_carries_the_head():
    model = peftlab.apply(tiny_model("bert"), lora_prompt("bert"))
    head = model.model.classifier
    assert list(head.copies) == ["default:lora"]
    assert model.combinations["default"].components[1].config.modules_to_save == ()


def test_capabilities_derive_from_the_parts_and_mergeable_parts_merge_by_name():
    model = peftlab.apply(tiny_model("llama"), lora_prompt("llama"))
    capabilities = model.method("default").capabilities
    assert not capabilities.mergeable and capabilities.model_hook and capabilities.supports_disable
    assert model.method("default").name == "lora+prompt"
    randomize(model)
    before = logits(model, tiny_batch())
    with pytest.raises(MergeError, match="cannot be merged"):
        model.merge()
    assert model.merged_adapters() == []
    model.merge(["default:lora"])  # LoRA folded in, the prompt stays a hook
    assert model.merged_adapters() == ["default:lora"]
    torch.testing.assert_close(logits(model, tiny_batch()), before, rtol=0, atol=1e-5)
    both_mergeable = peftlab.apply(tiny_model("llama"), peftlab.make_config("lora+ia3", ia3={
        "target_modules": ("k_proj", "down_proj"), "feedforward_modules": ("down_proj",)}))
    assert both_mergeable.method("default").capabilities.mergeable
    randomize(both_mergeable)
    unmerged = logits(both_mergeable, tiny_batch())
    both_mergeable.merge()
    torch.testing.assert_close(logits(both_mergeable, tiny_batch()), unmerged, rtol=0, atol=1e-5)


@pytest.mark.parametrize("config,message", [
    (lambda: peftlab.make_config("prompt+prefix"), "prompt .* and prefix .* both rewrite the model's inputs"),
    (lambda: peftlab.make_config("lora+ia3", lora={"target_modules": ("key", "value")}),
     "lora .* and ia3 .* both adapt bert.encoder.layer.0.attention.self.key"),
    (lambda: peftlab.make_config("lora+adapters", lora={"target_modules": "all-linear"}),
     "lora .* and adapters .* both adapt"),
    (lambda: peftlab.make_config("full+lora", lora={"bias": "all"}), "both train the base parameter"),
])
def test_conflicting_parts_are_refused_and_the_model_is_left_as_it_was(config, message):
    base = tiny_model("bert")
    reference = copy.deepcopy(base)
    model = peftlab.PeftModel(base)
    with pytest.raises(ConfigError, match=message) as raised:
        model.add_adapter("default", config())
    assert "\n" not in str(raised.value)
    assert model.configs == {} and model.combinations == {} and len(model.hooks) == 0
    assert not any(isinstance(m, peftlab.core.AdapterLayer) for m in model.model.modules())
    torch.testing.assert_close(logits(model, tiny_batch()), logits(reference, tiny_batch()), rtol=0, atol=0)


def test_lora_on_the_input_embedding_combines_with_a_prompt():
    """The prompt's hook reads the embedding through LoRA's wrapper; LoRA applies to real tokens."""
    model = peftlab.apply(tiny_model("bert"), peftlab.make_config(
        "lora+prompt", lora={"target_modules": ("query", "word_embeddings")}))
    randomize(model)
    before = {k: v.detach().clone() for k, v in model.trainable_parameters().items()}
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-2)
    for _ in range(2):
        model(**tiny_batch()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {k for k, v in model.trainable_parameters().items() if not torch.equal(v, before[k])}
    assert any("word_embeddings.lora_embedding_A" in k for k in changed)
    assert any(k.startswith("prompt") or "prompt" in k for k in changed)


def test_bad_combination_configs_are_refused():
    lora = peftlab.LoraConfig()
    with pytest.raises(ConfigError, match="at least two components"):
        CombinationConfig((Component("a", lora),))
    with pytest.raises(ConfigError, match="repeat"):
        CombinationConfig((Component("a", lora), Component("a", lora)))
    with pytest.raises(ConfigError, match="lr_scale"):
        Component("a", lora, lr_scale=0.0)
    with pytest.raises(ConfigError, match="names a method twice"):
        peftlab.make_config("lora+lora")
    with pytest.raises(ConfigError, match="unknown method 'lorax'"):
        peftlab.make_config("lorax+prompt")
    with pytest.raises(ConfigError, match="not a part"):
        peftlab.make_config("lora+prompt", ia3={})


def test_combination_name_works_for_set_active_adapter_parameters_and_delete():
    model = peftlab.apply(tiny_model("bert"), lora_prompt("bert"), adapter_name="mix")
    model.add_adapter("solo", peftlab.LoraConfig(r=2))
    assert model.active_adapters == ("solo",)
    model.set_active("mix")
    assert model.active_adapters == ("mix:lora", "mix:prompt")
    assert set(model.adapter_parameters("mix")) == set(model.trainable_parameters())
    assert model.units(model.active_adapters) == ["mix"]
    model.delete_adapter("mix")
    assert list(model.configs) == ["solo"] and model.combinations == {} and len(model.hooks) == 0


def test_learning_rate_scales_become_parameter_groups():
    model = peftlab.apply(tiny_model("bert"), lora_prompt("bert"))
    scales = model.learning_rate_scales()
    assert set(scales) == set(model.trainable_parameters())
    assert {k for k, s in scales.items() if s == 300} == {"prompt_embeddings"}
    config = TrainConfig(learning_rate=1e-3, weight_decay=0.01)
    optimizer = make_optimizer(model.trainable_parameters(), config, lr_scales=scales)
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    params = model.trainable_parameters()
    assert by_param[id(params["prompt_embeddings"])] == pytest.approx((0.3, 0.01))
    lora_a = next(k for k in params if k.endswith("lora_A.weight"))
    assert by_param[id(params[lora_a])] == pytest.approx((1e-3, 0.01))
    assert by_param[id(params["classifier.bias"])] == pytest.approx((1e-3, 0.0))
    assert len(optimizer.param_groups) == 3  # (decay, 1), (no decay, 1), (decay, 300)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)  # the schedule keeps the ratios
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([5e-4, 5e-4, 0.15])
    with pytest.raises(ConfigError, match="does not train"):
        make_optimizer(params, config, lr_scales={"nope": 2.0})
    assert all(s == 1.0 for s in peftlab.apply(tiny_model("bert"), peftlab.LoraConfig()).learning_rate_scales().values())

"""Weighted LoRA combination (`peftlab.combine_loras`): each mode against its formula, and HF PEFT."""

from __future__ import annotations

import math

import pytest
import torch

import peftlab
from peftlab.errors import ConfigError
from peftlab.methods.lora.combine import delta
from tiny_models import tiny_batch, tiny_model

TARGETS = {"bert": ("query", "value", "word_embeddings"), "llama": ("q_proj", "down_proj", "embed_tokens"),
           "gpt2": ("c_attn", "wte")}
WEIGHTS = {"a": 0.7, "b": -0.4}


def two_loras(arch: str, r_a: int = 4, r_b: int = 4, targets=None, task: str = "classification"):
    """A model with LoRA adapters "a" (α 8) and "b" (α 4) on the same modules, randomised."""
    targets = targets or TARGETS[arch]
    model = peftlab.apply(tiny_model(arch, task), peftlab.LoraConfig(r=r_a, alpha=8, target_modules=targets,
                                                                 modules_to_save=()), adapter_name="a")
    model.add_adapter("b", peftlab.LoraConfig(r=r_b, alpha=4, target_modules=targets, modules_to_save=()))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name in ("a", "b"):
            for param in model.adapter_parameters(name).values():
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))
    return model


def lora_layers(model, name):
    return [(path, layer) for path, layer in model.adapter_layers(name) if hasattr(layer, "factors")]


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_cat_delta_is_the_weighted_sum_of_deltas(arch):
    model = two_loras(arch, r_a=4, r_b=2)
    peftlab.combine_loras(model, WEIGHTS, "ab", mode="cat")
    assert model.configs["ab"].r == 6 and model.active_adapters == ("b",)
    for path, layer in lora_layers(model, "ab"):
        expected = sum(w * delta(layer, n) for n, w in WEIGHTS.items())
        torch.testing.assert_close(delta(layer, "ab"), expected, rtol=0, atol=1e-5, msg=path)
    # and the base layer's merged weight agrees: delta_weight uses the layer's own layout (Conv1D: transposed)
    for _, layer in lora_layers(model, "ab"):
        expected = sum(w * layer.delta_weight(n) for n, w in WEIGHTS.items())
        torch.testing.assert_close(layer.delta_weight("ab"), expected, rtol=0, atol=1e-5)


def test_cat_adapter_computes_the_weighted_sum_in_the_forward_pass():
    model = two_loras("llama")
    peftlab.combine_loras(model, {"a": 1.0, "b": 1.0}, "ab", mode="cat")
    batch = tiny_batch()
    with torch.no_grad():
        model.set_active(["a", "b"])
        both = model(**batch).logits
        model.set_active("ab")
        combined = model(**batch).logits
    torch.testing.assert_close(combined, both, rtol=0, atol=1e-5)


def test_svd_at_full_rank_is_the_sum_and_at_lower_rank_the_best_approximation():
    model = two_loras("bert", r_a=4, r_b=2)
    peftlab.combine_loras(model, WEIGHTS, "full", mode="svd", r=6)
    peftlab.combine_loras(model, WEIGHTS, "low", mode="svd", r=2)
    assert model.configs["low"].r == 2 and model.configs["low"].scaling == 1.0
    for path, layer in lora_layers(model, "full"):
        total = sum(w * delta(layer, n) for n, w in WEIGHTS.items())
        torch.testing.assert_close(delta(layer, "full"), total, rtol=0, atol=1e-4, msg=path)
        u, s, vh = torch.linalg.svd(total, full_matrices=False)
        best = u[:, :2] @ torch.diag(s[:2]) @ vh[:2]
        torch.testing.assert_close(delta(layer, "low"), best, rtol=0, atol=1e-4, msg=path)
        assert torch.linalg.matrix_rank(delta(layer, "low")) <= 2
        # Eckart–Young: the error is the norm of the dropped singular values
        error = torch.linalg.matrix_norm(total - delta(layer, "low"))
        assert math.isclose(float(error), float(s[2:].norm()), rel_tol=1e-3, abs_tol=1e-5)


def test_linear_mixes_the_factors_with_signed_square_root_weights():
    model = two_loras("llama")
    peftlab.combine_loras(model, WEIGHTS, "ab", mode="linear")
    assert model.configs["ab"].r == 4
    for path, layer in lora_layers(model, "ab"):
        c = {n: w * layer.scaling[n] for n, w in WEIGHTS.items()}
        a = sum(math.copysign(math.sqrt(abs(c[n])), c[n]) * layer.factors(n)[0] for n in c)
        b = sum(math.sqrt(abs(c[n])) * layer.factors(n)[1] for n in c)
        torch.testing.assert_close(delta(layer, "ab"), b @ a, rtol=0, atol=1e-5, msg=path)
        # the cross terms make it differ from the weighted sum of deltas
        total = sum(w * delta(layer, n) for n, w in WEIGHTS.items())
        assert not torch.allclose(delta(layer, "ab"), total, atol=1e-3)


def test_a_single_source_at_weight_one_reproduces_it_in_every_mode():
    model = two_loras("bert")
    for mode in ("linear", "cat", "svd"):
        peftlab.combine_loras(model, {"a": 1.0}, f"copy_{mode}", mode=mode)
        for path, layer in lora_layers(model, "a"):
            torch.testing.assert_close(delta(layer, f"copy_{mode}"), delta(layer, "a"), rtol=0, atol=1e-5)


def test_head_copies_are_combined_as_parameters():
    model = peftlab.apply(tiny_model("bert"), peftlab.LoraConfig(r=2), adapter_name="a")
    model.add_adapter("b", peftlab.LoraConfig(r=2))
    head = model.model.classifier
    with torch.no_grad():
        head.copies["a"].weight.fill_(1.0)
        head.copies["b"].weight.fill_(3.0)
    peftlab.combine_loras(model, {"a": 0.5, "b": 0.25}, "ab", mode="cat")
    torch.testing.assert_close(head.copies["ab"].weight, torch.full_like(head.copies["ab"].weight, 1.25))


def test_mismatched_sources_are_refused_with_one_line():
    model = two_loras("bert", r_a=4, r_b=2)
    with pytest.raises(ConfigError, match="needs equal ranks"):
        peftlab.combine_loras(model, WEIGHTS, "ab", mode="linear")
    with pytest.raises(ConfigError, match="only for mode='svd'"):
        peftlab.combine_loras(model, WEIGHTS, "ab", mode="cat", r=3)
    with pytest.raises(ConfigError, match="exceeds the size"):
        peftlab.combine_loras(model, WEIGHTS, "ab", mode="svd", r=100)
    with pytest.raises(ConfigError, match="mode='sum'"):
        peftlab.combine_loras(model, WEIGHTS, "ab", mode="sum")
    model.add_adapter("c", peftlab.LoraConfig(r=4, target_modules=("query",), modules_to_save=()))
    with pytest.raises(ConfigError, match="different target modules"):
        peftlab.combine_loras(model, {"a": 1.0, "c": 1.0}, "ac", mode="cat")
    model.add_adapter("i", peftlab.IA3Config(target_modules=("key",), feedforward_modules=(), modules_to_save=()))
    dora = peftlab.apply(tiny_model("llama"), peftlab.make_config("dora", r=4), adapter_name="d")
    dora.add_adapter("l", peftlab.LoraConfig(r=4))
    with pytest.raises(ConfigError, match="adapter 'd' is dora: its change of the weights is more than s·B A"):
        peftlab.combine_loras(dora, {"d": 1.0, "l": 1.0}, "dl", mode="cat")
    with pytest.raises(ConfigError, match="not LoRA"):
        peftlab.combine_loras(model, {"a": 1.0, "i": 1.0}, "ai", mode="cat")
    assert "ab" not in model.configs and "ac" not in model.configs


@pytest.mark.parametrize("mode,r", [("cat", None), ("svd", 3), ("linear", None)])
def test_hugging_face_peft_add_weighted_adapter_agrees(mode, r, tmp_path):
    peft = pytest.importorskip("peft", reason="Hugging Face PEFT (test oracle) is not installed")
    ours = two_loras("llama", r_a=4, r_b=4 if mode == "linear" else 2, targets=("q_proj", "down_proj", "embed_tokens"),
                     task="causal-lm")
    peftlab.combine_loras(ours, WEIGHTS, "ab", mode=mode, r=r)
    peftlab.save_adapter(ours, tmp_path / "a", "a")
    peftlab.save_adapter(ours, tmp_path / "b", "b")
    theirs = peft.PeftModel.from_pretrained(tiny_model("llama", "causal-lm"), tmp_path / "a", adapter_name="a")
    theirs.load_adapter(tmp_path / "b", adapter_name="b")
    theirs.add_weighted_adapter(list(WEIGHTS), list(WEIGHTS.values()), "ab", combination_type=mode, svd_rank=r)
    modules = dict(theirs.base_model.model.named_modules())
    for path, layer in lora_layers(ours, "ab"):
        their_delta = modules[path].get_delta_weight("ab")
        torch.testing.assert_close(layer.delta_weight("ab"), their_delta, rtol=0, atol=1e-5, msg=path)

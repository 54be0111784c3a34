"""Per-request adapter selection: a mixed batch equals each row run alone with its adapter."""

from __future__ import annotations

import pytest
import torch

import peftlab
from peftlab.core.row_selection import BASE
from peftlab.errors import ConfigError
from tiny_models import tiny_batch, tiny_model

TARGETS = {"bert": ("query", "value", "intermediate.dense", "word_embeddings"),
           "llama": ("q_proj", "v_proj", "down_proj", "embed_tokens")}


def three_loras(arch: str, task: str = "classification"):
    """LoRA adapters a, b (same targets) and c (fewer targets), each with its own head copy."""
    model = peftlab.apply(tiny_model(arch, task), peftlab.LoraConfig(r=4, target_modules=TARGETS[arch]),
                          adapter_name="a")
    model.add_adapter("b", peftlab.LoraConfig(r=2, alpha=4, target_modules=TARGETS[arch]))
    model.add_adapter("c", peftlab.LoraConfig(r=2, target_modules=TARGETS[arch][:1]))
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name in ("a", "b", "c"):
            for param in model.adapter_parameters(name).values():
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model


def alone(model, batch, row: int, name: str) -> torch.Tensor:
    """Row `row` of `batch` run by itself with only `name` active (BASE: adapters disabled)."""
    single = {k: v[row:row + 1] for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        if name == BASE:
            with model.disable_adapters():
                return model(**single).logits[0]
        model.set_active(name)
        return model(**single).logits[0]


@pytest.mark.parametrize("arch,task", [("bert", "classification"), ("llama", "classification"),
                                       ("llama", "causal-lm")])
def test_a_mixed_batch_equals_every_row_alone(arch, task):
    model = three_loras(arch, task)
    batch = tiny_batch(batch=5, seq=7)
    names = ["a", "b", BASE, "c", "a"]
    model.set_active("b")  # what is active does not matter to a per-request call
    with torch.no_grad():
        mixed = model(**{k: v for k, v in batch.items() if k != "labels"}, adapter_names=names).logits
    assert model.active_adapters == ("b",)
    for row, name in enumerate(names):  # a lone row keeps its padding, so every position compares
        torch.testing.assert_close(mixed[row], alone(model, batch, row, name), rtol=0, atol=1e-5,
                                   msg=f"row {row} ({name})")
    # rows really differ by adapter, so the comparison above can fail
    assert not torch.allclose(mixed[0], mixed[1], atol=1e-3) and not torch.allclose(mixed[0], mixed[2], atol=1e-3)


def test_a_combination_name_selects_all_its_parts_per_row():
    combination = peftlab.CombinationConfig((
        peftlab.Component("attn", peftlab.LoraConfig(r=2, target_modules=("query", "value"))),
        peftlab.Component("ffn", peftlab.LoraConfig(r=2, target_modules=("intermediate.dense",)))))
    model = peftlab.apply(tiny_model("bert"), combination, adapter_name="mix")
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in model.adapter_parameters("mix").values():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    batch = {k: v for k, v in tiny_batch(batch=2).items() if k != "labels"}
    with torch.no_grad():
        mixed = model(**batch, adapter_names=["mix", BASE]).logits
        model.set_active("mix")
        both = model(**batch).logits
        with model.disable_adapters():
            base = model(**batch).logits
    torch.testing.assert_close(mixed[0], both[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[1], base[1], rtol=0, atol=1e-5)


def test_refusals_are_one_line():
    model = peftlab.apply(tiny_model("bert"), peftlab.LoraConfig(r=2), adapter_name="a")
    model.add_adapter("b", peftlab.LoraConfig(r=2))
    batch = {k: v for k, v in tiny_batch(batch=2).items() if k != "labels"}
    cases = [(["a"], "2 rows"), (["a", "zzz"], "unknown adapter"), ("a", "list of adapter names")]
    model.add_adapter("p", peftlab.PromptTuningConfig(num_virtual_tokens=2, modules_to_save=()), activate=False)
    model.add_adapter("i", peftlab.IA3Config(target_modules=("key",), feedforward_modules=()), activate=False)
    model.add_adapter("bias", peftlab.LoraConfig(r=2, target_modules=("intermediate.dense",), bias="all"),
                      activate=False)
    cases += [(["a", "p"], "its hook changes the inputs"), (["i", "a"], "IA3Layer .* whole batch"),
              (["bias", BASE], "trains base-model parameters")]
    for names, message in cases:
        with pytest.raises(ConfigError, match=message) as raised:
            model(**batch, adapter_names=names)
        assert "\n" not in str(raised.value)
    model.set_active("a")
    model.merge()
    with pytest.raises(ConfigError, match="merged into the weights: call unmerge"):
        model(**batch, adapter_names=["a", "b"])
    model.unmerge()
    assert all(layer.row_adapters is None and not layer.disabled for _, layer in model.adapter_layers())

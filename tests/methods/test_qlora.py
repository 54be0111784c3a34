"""QLoRA: what it quantizes, what "identity at init" means on a 4-bit base, merge / unmerge /
export with re-quantization, its files (LoRA files with a peftlab block), storage and training.

The conformance suite covers the relationships every method shares (its reference is the base
as QLoRA prepares it: quantized); these tests cover what is QLoRA's own.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

import peftlab
from peftlab.core.targets import layer_index
from peftlab.errors import ConfigError, TargetError
from peftlab.methods.lora.layer import LoraLinear
from peftlab.methods.qlora import QLoraConfig
from peftlab.methods.qlora.layer import export_merged
from peftlab.quant import Linear4bit, nf4_bytes_per_param
from peftlab.quant.loading import dequantize_model, quantize_model
from tiny_models import tiny_batch, tiny_model

TARGETS = {"bert": ("query", "value"), "gpt2": ("c_attn", "mlp.c_proj"), "llama": ("q_proj", "v_proj", "down_proj")}
ARCHS = [("bert", "classification"), ("gpt2", "causal-lm"), ("llama", "causal-lm")]


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _batch(task):
    batch = tiny_batch()
    if task == "causal-lm":
        del batch["labels"]  # tiny_batch's labels are class labels
    return batch


def _lora_layers(peft_model):
    return [(path, layer) for path, layer in peft_model.adapter_layers("default") if isinstance(layer, LoraLinear)]


def _qlora(arch, task, **changes):
    config = QLoraConfig(r=4, alpha=8, target_modules=TARGETS[arch], block_size=32, **changes)
    return peftlab.apply(tiny_model(arch, task), config)


def _randomize(peft_model, seed=3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in peft_model.adapter_parameters("default").values():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


def _linear_kinds(model):
    return {path: type(m).__name__ for path, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D, Linear4bit))}


@pytest.mark.parametrize("arch,task", ARCHS)
def test_quantizes_block_linears_only(arch, task):
    peft_model = _qlora(arch, task)
    kinds = _linear_kinds(peft_model.model)
    quantized = [p for p, kind in kinds.items() if kind == "Linear4bit"]
    assert quantized and all(layer_index(p) is not None for p in quantized)
    # Outside the blocks (heads, BERT's pooler) everything stays float; inside, only LoRA's A and B.
    float_paths = [p for p, kind in kinds.items() if kind != "Linear4bit" and ".lora_" not in p]
    assert float_paths and all(layer_index(p) is None for p in float_paths), float_paths
    assert all(isinstance(m.weight, nn.Parameter) for m in peft_model.model.modules() if isinstance(m, nn.Embedding))


def test_quantize_modules_selects_and_refuses_the_head():
    peft_model = peftlab.apply(tiny_model("llama", "causal-lm"),
                               QLoraConfig(target_modules=("q_proj",), quantize_modules=("q_proj", "k_proj")))
    quantized = {p for p, k in _linear_kinds(peft_model.model).items() if k == "Linear4bit"}
    assert quantized == {f"model.layers.{i}.self_attn.{n}{s}" for i in range(2) for n, s in
                         (("q_proj", ".base_layer"), ("k_proj", ""))}
    with pytest.raises(TargetError, match="output head 'lm_head'"):
        peftlab.apply(tiny_model("llama", "causal-lm"), QLoraConfig(quantize_modules=("lm_head",)))


def test_config_errors_name_the_value():
    with pytest.raises(ConfigError, match="block_size=48"):
        QLoraConfig(block_size=48)
    with pytest.raises(ConfigError, match="compute_dtype='float16'"):
        QLoraConfig(compute_dtype="float16")


@pytest.mark.parametrize("arch,task", ARCHS)
def test_fresh_qlora_is_the_dequantized_base_not_the_float_base(arch, task):
    base = tiny_model(arch, task)
    dequantized = copy.deepcopy(base)
    quantize_model(dequantized, block_size=32)
    dequantize_model(dequantized)
    batch = _batch(task)
    fresh = _logits(_qlora(arch, task), batch)
    torch.testing.assert_close(fresh, _logits(dequantized, batch), rtol=0, atol=1e-6)
    # The honest difference: the quantization error (identity_at_init is declared False).
    assert (fresh - _logits(base, batch)).abs().max() > 1e-5  # float rounding is ~1e-7
    assert not peftlab.get_method("qlora").capabilities.identity_at_init


@pytest.mark.parametrize("arch,task", ARCHS)
def test_merge_gives_float_layers_and_unmerge_restores_the_packed_state(arch, task):
    peft_model = _qlora(arch, task)
    _randomize(peft_model)
    batch = _batch(task)
    unmerged = _logits(peft_model, batch)
    packed = {p: {n: b.clone() for n, b in layer.base_layer.named_buffers()} for p, layer in _lora_layers(peft_model)}
    peft_model.merge()
    bases = {p: layer.base_layer for p, layer in _lora_layers(peft_model)}
    assert all(isinstance(b, Conv1D if arch == "gpt2" else nn.Linear) for b in bases.values())
    torch.testing.assert_close(_logits(peft_model, batch), unmerged, rtol=0, atol=1e-5)
    peft_model.unmerge()
    for path, layer in _lora_layers(peft_model):
        assert isinstance(layer.base_layer, Linear4bit) and layer.quantized_base is None
        for name, buffer in layer.base_layer.named_buffers():
            assert torch.equal(buffer, packed[path][name]), (path, name)
    torch.testing.assert_close(_logits(peft_model, batch), unmerged, rtol=0, atol=1e-6)


def test_two_adapters_merge_and_unmerge_one_at_a_time():
    peft_model = _qlora("llama", "causal-lm")
    peft_model.add_adapter("other", QLoraConfig(r=2, target_modules=("q_proj",), block_size=32))
    peft_model.set_active(["default", "other"])
    _randomize(peft_model)
    with torch.no_grad():
        for param in peft_model.adapter_parameters("other").values():
            param.add_(0.05)
    batch = _batch("causal-lm")
    expected = _logits(peft_model, batch)
    peft_model.merge(["default"])
    peft_model.merge(["other"])
    torch.testing.assert_close(_logits(peft_model, batch), expected, rtol=0, atol=1e-5)
    peft_model.unmerge(["other"])
    torch.testing.assert_close(_logits(peft_model, batch), expected, rtol=0, atol=1e-5)
    peft_model.unmerge()
    assert all(isinstance(layer.base_layer, Linear4bit) for _, layer in peft_model.adapter_layers())


@pytest.mark.parametrize("arch,task", ARCHS)
def test_export_merged_is_a_float_model_and_requantization_error_is_reported(arch, task):
    batch = _batch(task)
    peft_model = _qlora(arch, task)
    _randomize(peft_model)
    expected = _logits(peft_model, batch)
    plain, report = export_merged(copy.deepcopy(peft_model))
    assert report is None and not any(isinstance(m, Linear4bit) for m in plain.modules())
    assert type(plain).__name__ == type(peft_model.model).__name__
    torch.testing.assert_close(_logits(plain, batch), expected, rtol=0, atol=1e-5)

    requantized, report = export_merged(peft_model, requantize=True, example_batch=batch)
    n_quantized = sum(isinstance(m, Linear4bit) for m in requantized.modules())
    assert report.layers == n_quantized > 0
    assert 0 < report.mean_abs < report.max_abs and report.logits_max_abs > 0
    # NF4 error is at most half the widest code gap (~0.28) times the block absmax.
    assert report.max_abs < 0.2 * max(m.dequantized_weight().abs().max().item()
                                       for m in requantized.modules() if isinstance(m, Linear4bit))
    torch.testing.assert_close(_logits(requantized, batch), expected, rtol=0, atol=report.logits_max_abs + 1e-6)


def test_files_are_lora_files_with_a_peftlab_block(tmp_path):
    peft_model = _qlora("llama", "causal-lm", compute_dtype="bfloat16")
    _randomize(peft_model)
    peftlab.save_adapter(peft_model, tmp_path / "qlora")
    fields = json.loads((tmp_path / "qlora" / "adapter_config.json").read_text())
    assert fields["peft_type"] == "LORA" and fields["r"] == 4 and fields["lora_alpha"] == 8
    assert fields["peftlab"]["method"] == "qlora" and fields["peftlab"]["config"]["block_size"] == 32
    reloaded = peftlab.load_adapter(tiny_model("llama", "causal-lm"), tmp_path / "qlora")
    assert reloaded.configs["default"] == peft_model.configs["default"].replace(modules_to_save=())
    batch = _batch("causal-lm")
    torch.testing.assert_close(_logits(reloaded, batch), _logits(peft_model, batch), rtol=0, atol=0)

    # The same tensors without the block are a plain LoRA file: they load as `lora`.
    del fields["peftlab"]
    (tmp_path / "qlora" / "adapter_config.json").write_text(json.dumps(fields))
    plain = peftlab.load_adapter(tiny_model("llama", "causal-lm"), tmp_path / "qlora")
    assert plain.configs["default"].method == "lora"


def test_hf_peft_loads_a_qlora_file_onto_the_dequantized_base(tmp_path):
    peft = pytest.importorskip("peft", reason="Hugging Face PEFT (test oracle) is not installed: pip install peft")
    peft_model = _qlora("llama", "causal-lm")
    _randomize(peft_model)
    peftlab.save_adapter(peft_model, tmp_path)
    dequantized = tiny_model("llama", "causal-lm")
    quantize_model(dequantized, block_size=32)
    dequantize_model(dequantized)
    hf_model = peft.PeftModel.from_pretrained(dequantized, str(tmp_path)).eval()
    batch = _batch("causal-lm")
    torch.testing.assert_close(_logits(hf_model, batch), _logits(peft_model, batch), rtol=0, atol=1e-5)


def test_storage_of_a_real_size_layer_is_at_most_052_bytes_per_param():
    layer = nn.Linear(576, 1536, bias=False)  # SmolLM2-135M's gate_proj
    quantized = Linear4bit.from_linear(layer)
    stored = sum(b.numel() * b.element_size() for b in quantized.buffers())
    assert stored / layer.weight.numel() == pytest.approx(nf4_bytes_per_param(layer.weight.numel()))
    assert stored / layer.weight.numel() <= 0.52

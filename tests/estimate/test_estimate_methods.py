"""Analytic trainable parameters == an independent count on instantiated models, per method."""

import functools

import estimate_counting as counting
import pytest

from peftlab.errors import ConfigError, TargetError
from peftlab.estimate import Settings, estimate
from peftlab.core.shapes import shape_from_config

ARCHS = {
    "bert": dict(model_type="bert", hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                 intermediate_size=96, vocab_size=300, max_position_embeddings=40),
    "gpt2": dict(model_type="gpt2", n_embd=48, n_layer=3, n_head=4, vocab_size=211,
                 n_positions=70),
    "llama": dict(model_type="llama", hidden_size=64, num_hidden_layers=3,
                  num_attention_heads=8, num_key_value_heads=2, intermediate_size=112,
                  vocab_size=256, max_position_embeddings=64, attention_bias=True),
}
DEFAULT_TARGETS = {"bert": ("query", "value"), "gpt2": ("c_attn",), "llama": ("q_proj", "v_proj")}
EXPLICIT_TARGETS = {"bert": ("key", "output.dense"), "gpt2": ("c_fc", "attn.c_proj"),
                    "llama": ("k_proj", "o_proj", "down_proj")}
LABELS = (None, 2)


@functools.cache
def _model(arch, num_labels):
    """Built once per (arch, labels): the counting routines only read the module tree."""
    return counting.build(ARCHS[arch], num_labels)


def _trainable(arch, num_labels, method, **hp):
    est = estimate(shape_from_config(ARCHS[arch]), method, Settings(num_labels=num_labels), **hp)
    return est, _model(arch, num_labels)


def _head(model, num_labels):
    return counting.head(model) if num_labels else 0


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_labels", LABELS)
@pytest.mark.parametrize("r", [1, 16])
@pytest.mark.parametrize("targets", ["default", "explicit", "all-linear"])
@pytest.mark.parametrize("bias", ["none", "all", "lora_only"])
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_lora(arch, num_labels, r, targets, bias, method):
    names = {"default": DEFAULT_TARGETS[arch], "explicit": EXPLICIT_TARGETS[arch],
             "all-linear": "all-linear"}[targets]
    est, model = _trainable(arch, num_labels, method, r=r, bias=bias,
                            target_modules=None if targets == "default" else names)
    assert est.trainable_params == counting.lora(model, r, names, bias) + _head(model, num_labels)
    assert est.breakdown.get("head", 0) == _head(model, num_labels)


ALL_ROLES = ("keys", "values", "ffn")
# (target_modules, scaled activations): GPT-2's fused c_attn scales its key and value slices.
IA3_CASES = [("bert", None, ALL_ROLES), ("bert", ("key",), ("keys",)),
             ("bert", ("value", r"re:.*\.layer\.\d+\.output\.dense"), ("values", "ffn")),
             ("gpt2", None, ALL_ROLES), ("gpt2", ("c_attn",), ("keys", "values")),
             ("gpt2", ("mlp.c_proj",), ("ffn",)),
             ("llama", None, ALL_ROLES), ("llama", ("k_proj",), ("keys",)),
             ("llama", ("v_proj", "down_proj"), ("values", "ffn"))]


@pytest.mark.parametrize("arch,targets,roles", IA3_CASES)
@pytest.mark.parametrize("num_labels", LABELS)
def test_ia3(arch, targets, roles, num_labels):
    est, model = _trainable(arch, num_labels, "ia3", target_modules=targets)
    assert est.trainable_params == counting.ia3(model, roles) + _head(model, num_labels)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_labels", LABELS)
@pytest.mark.parametrize("m", [1, 8, 64])
@pytest.mark.parametrize("placement,per_block", [("houlsby", 2), ("pfeiffer", 1)])
def test_adapters(arch, num_labels, m, placement, per_block):
    est, model = _trainable(arch, num_labels, "adapters", bottleneck_size=m, placement=placement)
    assert est.trainable_params == (counting.adapters(model, m, per_block)
                                    + _head(model, num_labels))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_labels", LABELS)
@pytest.mark.parametrize("n", [1, 10, 30])
@pytest.mark.parametrize("hidden", [None, 16, "d"])
def test_prefix(arch, num_labels, n, hidden):
    hp = {"num_virtual_tokens": n}
    if hidden is not None:
        hp.update(projection=True, encoder_hidden_size=None if hidden == "d" else hidden)
    est, model = _trainable(arch, num_labels, "prefix", **hp)
    width = model.get_input_embeddings().embedding_dim if hidden == "d" else hidden
    assert est.trainable_params == counting.prefix(model, n, width) + _head(model, num_labels)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_labels", LABELS)
@pytest.mark.parametrize("n", [1, 20, 100])
def test_prompt(arch, num_labels, n):
    est, model = _trainable(arch, num_labels, "prompt", num_virtual_tokens=n)
    assert est.trainable_params == counting.prompt(model, n) + _head(model, num_labels)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_labels", LABELS)
def test_full(arch, num_labels):
    est, model = _trainable(arch, num_labels, "full")
    assert est.trainable_params == counting.count(model) == est.total_params
    assert est.percent == 100


def test_prefix_projection_reported_separately():
    est = estimate("llama-2-7b", "prefix", num_virtual_tokens=20, projection=True)
    assert set(est.breakdown) == {"prefix embedding", "projection mlp"}
    assert "5,242,880 prefix parameters" in est.notes[0]


def test_file_sizes():
    est = estimate("llama-2-7b", "lora", r=8)
    assert est.file_bytes == {"float32": 4_194_304 * 4, "bfloat16": 4_194_304 * 2}


def test_bad_hyperparameters_name_value_and_range():
    with pytest.raises(ConfigError, match="lora: r=0 is invalid: expected an integer >= 1 and <= 4096"):
        estimate("gpt2", "lora", r=0)
    with pytest.raises(ConfigError, match="lora: bias='some' is invalid: expected one of 'none', 'all', 'lora_only'"):
        estimate("gpt2", "lora", bias="some")
    with pytest.raises(ConfigError, match="unknown method 'nope': choose one of full, lora"):
        estimate("gpt2", "nope")
    with pytest.raises(ConfigError, match="prompt has no option r: its options are"):
        estimate("gpt2", "prompt", r=4)
    with pytest.raises(TargetError, match="'q_proj' matches no linear in a gpt2 block; use one"):
        estimate("gpt2", "lora", target_modules=("q_proj",))
    with pytest.raises(ConfigError, match="adapters: placement='serial' is invalid"):
        estimate("bert-base", "adapters", placement="serial")
    with pytest.raises(ConfigError, match="reduction_factor=4096.0 leaves no bottleneck for width 768"):
        estimate("bert-base", "adapters", reduction_factor=4096)  # as the method refuses it (it was clamped)


@pytest.mark.parametrize("arch", ARCHS)
def test_adapters_reduction_factor(arch):
    est, model = _trainable(arch, None, "adapters", reduction_factor=16)
    d = model.get_input_embeddings().embedding_dim
    assert est.trainable_params == counting.adapters(model, d // 16, 2)

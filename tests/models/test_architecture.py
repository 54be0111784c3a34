"""Architecture helpers on tiny BERT / GPT-2 / LLaMA models and more model types from configs:
the numbers they report are checked against the instantiated modules."""

import pytest
import torch
from tiny_models import tiny_model
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from peftlab.models import (
    LAYER_PATHS,
    ArchitectureError,
    head_dim,
    hidden_size,
    num_attention_heads,
    num_kv_heads,
    num_layers,
    output_head_names,
    transformer_layers,
)

CASES = [
    ("bert", "classification", ("classifier",)),
    ("gpt2", "classification", ("score",)),
    ("gpt2", "causal-lm", ("lm_head",)),
    ("llama", "classification", ("score",)),
    ("llama", "causal-lm", ("lm_head",)),
]


@pytest.mark.parametrize("arch,task,heads", CASES)
def test_tiny_models(arch, task, heads):
    model = tiny_model(arch, task)
    layers = transformer_layers(model)
    assert num_layers(model) == len(layers) == model.config.num_hidden_layers == 2
    assert all(isinstance(layer, torch.nn.Module) for layer in layers)
    # The blocks are the model's own modules, in order.
    owned = {id(m) for m in model.modules()}
    assert all(id(layer) in owned for layer in layers)
    assert output_head_names(model) == heads
    assert hidden_size(model) == 32 and head_dim(model) * num_attention_heads(model) == 32


def test_grouped_query_attention_shapes_match_llama_projections():
    model = tiny_model("llama", "causal-lm")
    attention = transformer_layers(model)[0].self_attn
    assert num_kv_heads(model) == 2 and num_attention_heads(model) == 4
    assert attention.k_proj.out_features == num_kv_heads(model) * head_dim(model)
    assert attention.q_proj.out_features == num_attention_heads(model) * head_dim(model)


def test_gpt2_and_bert_geometry_match_weights():
    gpt2 = tiny_model("gpt2", "causal-lm")
    assert transformer_layers(gpt2)[0].attn.c_attn.weight.shape == (hidden_size(gpt2), 3 * hidden_size(gpt2))
    assert num_kv_heads(gpt2) == num_attention_heads(gpt2)
    bert = tiny_model("bert")
    assert transformer_layers(bert)[1].attention.self.key.out_features == num_kv_heads(bert) * head_dim(bert)


@pytest.mark.parametrize("model_type", sorted(LAYER_PATHS))
def test_every_table_row_resolves_on_a_bare_and_a_head_model(model_type):
    config = AutoConfig.for_model(
        model_type, vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )
    bare = AutoModel.from_config(config)
    assert num_layers(bare) == 2 and output_head_names(bare) == ()
    if model_type not in ("bert", "roberta", "distilbert"):
        assert output_head_names(AutoModelForCausalLM.from_config(config)) == ("lm_head",)


def test_unknown_architecture_and_non_hf_module():
    config = AutoConfig.for_model("t5", vocab_size=64, d_model=16, num_layers=1, num_heads=2, d_ff=32, d_kv=8)
    with pytest.raises(ArchitectureError, match="unknown architecture 't5'; known: bert"):
        transformer_layers(AutoModel.from_config(config))
    with pytest.raises(ArchitectureError, match="not a Hugging Face"):
        hidden_size(torch.nn.Linear(2, 2))

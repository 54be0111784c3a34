"""DoRA: the decomposition itself, its merge, what it refuses, and what the estimator counts.

The conformance suite (tests/core/test_conformance.py) covers fresh == base, disabled == base,
merged == unmerged, exact unmerge, training and the file round trip on every architecture;
`test_dora_hf_oracle.py` holds peftlab's DoRA to Hugging Face PEFT's.
"""

from __future__ import annotations

import pytest
import torch

import peftlab
from peftlab.errors import TargetError
from peftlab.estimate import estimate
from peftlab.methods.dora import DoraConfig
from peftlab.methods.dora.layer import DoraLinear
from peftlab.methods.lora import LoraConfig
from tiny_models import perturb, tiny_batch, tiny_model

QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")


def test_the_layer_computes_magnitude_times_normalised_direction():
    """W' = m ⊙ (W + sBA) / ‖W + sBA‖_row, as a plain matrix, against the layer's output."""
    model = peftlab.apply(tiny_model("llama", "causal-lm"), DoraConfig(r=4, alpha=8, target_modules=("q_proj",)))
    perturb(model.trainable_parameters().values(), seed=3)
    layer = model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, DoraLinear)
    weight = layer.base_layer.weight.detach()
    lora = layer.lora_B["default"].weight @ layer.lora_A["default"].weight * layer.scaling["default"]
    direction = (weight + lora) / torch.linalg.vector_norm(weight + lora, dim=1, keepdim=True)
    expected_weight = layer.lora_magnitude_vector["default"].detach()[:, None] * direction
    x = torch.randn(5, weight.shape[1])
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ expected_weight.T, rtol=0, atol=1e-5)


def test_the_magnitude_starts_at_the_row_norms_and_trains_while_the_norm_takes_no_gradient():
    model = peftlab.apply(tiny_model("bert"), DoraConfig(r=4, target_modules=("query",)))
    layer = model.model.bert.encoder.layer[0].attention.self.query
    torch.testing.assert_close(layer.lora_magnitude_vector["default"].detach(),
                               torch.linalg.vector_norm(layer.base_layer.weight, dim=1))
    assert not layer.weight_norm("default").requires_grad
    model.train()
    model(**tiny_batch()).loss.backward()
    assert layer.lora_magnitude_vector["default"].grad.abs().sum() > 0
    assert "bert.encoder.layer.0.attention.self.query.lora_magnitude_vector" in model.trainable_parameters()


def test_merge_writes_the_decomposed_weight_and_unmerge_restores_it():
    model = peftlab.apply(tiny_model("gpt2", "causal-lm"), DoraConfig(r=4, target_modules=("c_attn", "c_fc")))
    perturb(model.trainable_parameters().values(), seed=3)
    batch = tiny_batch()
    del batch["labels"]
    before = {k: v.clone() for k, v in model.base_parameters().items()}
    with torch.no_grad():
        expected = model(**batch).logits
        model.merge()
        torch.testing.assert_close(model(**batch).logits, expected, rtol=0, atol=1e-5)
        model.unmerge()
    for key, value in before.items():
        torch.testing.assert_close(model.base_parameters()[key], value, rtol=0, atol=1e-6)


def test_embeddings_and_layers_of_another_method_are_refused_with_the_reason():
    with pytest.raises(TargetError, match="dora cannot wrap .*word_embeddings .*Embedding"):
        peftlab.apply(tiny_model("bert"), DoraConfig(target_modules=("query", "word_embeddings")))
    model = peftlab.apply(tiny_model("bert"), LoraConfig(target_modules=("query",)))
    with pytest.raises(TargetError, match="dora cannot wrap .*query .*LoraLinear"):
        model.add_adapter("d", DoraConfig(target_modules=("query",)))


def test_a_lora_adapter_beside_a_dora_one_stays_plain_lora():
    model = peftlab.apply(tiny_model("bert"), DoraConfig(r=4, target_modules=("query",)), adapter_name="d")
    model.add_adapter("l", LoraConfig(r=4, target_modules=("query",)))
    layer = model.model.bert.encoder.layer[0].attention.self.query
    assert set(layer.lora_magnitude_vector) == {"d"}
    adapter = {key for key in model.adapter_parameters("l") if not key.startswith("classifier.")}
    assert adapter == {f"bert.encoder.layer.{i}.attention.self.query.lora_{f}.weight" for i in (0, 1) for f in "AB"}


def test_estimate_counts_the_magnitude_vectors():
    """llama-2-7b, r=16 on q, k, v, o: 16,777,216 LoRA parameters + 32 layers × 4 × 4096 magnitudes."""
    est = estimate("llama-2-7b", "dora", r=16, target_modules=QKVO)
    assert est.trainable_params == 16_777_216 + 32 * 4 * 4096 == 17_301_504
    assert est.breakdown["dora magnitude"] == 32 * 4 * 4096

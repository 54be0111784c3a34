"""Loading straight into 4-bit equals loading in float and quantizing afterwards, bit for bit."""

from __future__ import annotations

import pytest
import torch

from peftlab.quant import Linear4bit
from peftlab.quant.loading import load_quantized, quantize_model
from tiny_models import tiny_batch, tiny_model

CASES = [("bert", "classification"), ("gpt2", "causal-lm"), ("llama", "causal-lm"), ("llama", "classification")]


@pytest.mark.parametrize("arch,task", CASES)
def test_load_quantized_equals_quantize_after_load(arch, task, tmp_path):
    tiny_model(arch, task).save_pretrained(tmp_path)
    model_class = type(tiny_model(arch, task))
    expected = model_class.from_pretrained(tmp_path).eval()
    expected_paths = quantize_model(expected, block_size=32)
    loaded, new = load_quantized(tmp_path, model_class, expected.config, block_size=32)
    assert new == []
    assert [p for p, m in loaded.named_modules() if isinstance(m, Linear4bit)] == expected_paths
    state, reference = loaded.state_dict(), expected.state_dict()
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(state[key], value), key
    assert not any(t.device.type == "meta" for t in [*loaded.parameters(), *loaded.buffers()])
    with torch.no_grad():
        batch = {k: v for k, v in tiny_batch().items() if k != "labels"}
        torch.testing.assert_close(loaded(**batch).logits, expected(**batch).logits, rtol=0, atol=0)


def test_tied_head_stays_tied_and_a_missing_head_is_initialised(tmp_path):
    tiny_model("gpt2", "causal-lm").save_pretrained(tmp_path)
    loaded, _ = load_quantized(tmp_path, type(tiny_model("gpt2", "causal-lm")), tiny_model("gpt2", "causal-lm").config)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    # A causal-LM checkpoint loaded for classification: the score head is new and initialised.
    tiny_model("llama", "causal-lm").save_pretrained(tmp_path / "lm")
    classifier = tiny_model("llama", "classification")
    loaded, new = load_quantized(tmp_path / "lm", type(classifier), classifier.config)
    assert new == ["score.weight"] and torch.isfinite(loaded.score.weight).all()
    assert loaded.score.weight.std() > 0

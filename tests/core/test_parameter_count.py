"""A 4-bit base counts the weights it stands for: QLoRA's share of the model equals LoRA's."""

from __future__ import annotations

import sys
from pathlib import Path

import peftlab
from peftlab.core.model import model_parameter_count
from peftlab.quant.loading import quantize_model

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from train_helpers import tiny_bert  # noqa: E402


def test_qlora_and_lora_have_the_same_total_and_share_for_the_same_trainable_count():
    float_base = tiny_bert(seed=0)
    expected = sum(p.numel() for p in float_base.parameters())
    lora = peftlab.apply(tiny_bert(seed=0), peftlab.LoraConfig(r=4))
    qlora = peftlab.apply(tiny_bert(seed=0), peftlab.make_config("qlora", r=4))
    assert any(getattr(m, "is_quantized_linear", False) for m in qlora.modules())
    lora_trainable, lora_total = lora.count_parameters()
    qlora_trainable, qlora_total = qlora.count_parameters()
    assert qlora_trainable == lora_trainable and qlora_total == lora_total
    assert lora_total == expected + lora_trainable  # the base, plus A, B and the trained copy of the head
    assert qlora_trainable / qlora_total == lora_trainable / lora_total


def test_a_quantized_model_counts_its_weights_not_its_packed_codes():
    model = tiny_bert(seed=1)
    expected = model_parameter_count(model)
    assert expected == sum(p.numel() for p in model.parameters())
    quantize_model(model)
    assert model_parameter_count(model) == expected

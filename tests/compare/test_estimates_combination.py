"""The analytic estimate of a combination row in `peftlab compare`: its parts summed, the head once."""

from __future__ import annotations

import pytest
from train_helpers import tiny_bert, write_tiny_model

import peftlab
from peftlab.compare import make_plan
from peftlab.compare.estimates import estimate_method
from peftlab.compare.runs import method_config

MB = 2**20


@pytest.fixture(scope="module")
def estimates(tmp_path_factory):
    folder = write_tiny_model(tmp_path_factory.mktemp("estimates") / "model")
    plan = make_plan(model=str(folder), methods="lora,prompt,qlora,lora+prompt,qlora+prompt,lora+adapters", threads=1)
    rows = {m.method: estimate_method(plan, m, folder, num_labels=2, batch_size=8, seq_len=16, device="cpu")
            for m in plan.methods}
    return plan, rows


def test_a_combination_has_no_error_and_counts_what_the_model_trains(estimates):
    plan, rows = estimates
    for name in ("lora+prompt", "qlora+prompt", "lora+adapters"):
        assert rows[name]["error"] is None, rows[name]["error"]
        model = peftlab.apply(tiny_bert(), method_config(plan.method(name)))
        assert rows[name]["trainable_params"] == model.count_parameters()[0], name


def test_parameters_and_adapter_memory_are_the_parts_summed_with_one_head(estimates):
    _, rows = estimates
    lora, prompt, both = rows["lora"], rows["prompt"], rows["lora+prompt"]
    head = 32 * 2 + 2  # the tiny BERT's classifier Linear(32, 2): every single-method row counts it
    assert both["trainable_params"] == lora["trainable_params"] + prompt["trainable_params"] - head
    assert both["file_bytes"] == 4 * both["trainable_params"]
    assert both["percent"] == pytest.approx(100 * both["trainable_params"] / lora["total_params"])
    for key, per_parameter in (("gradients", 4), ("optimizer", 8)):  # fp32 gradients, AdamW's two fp32 states
        summed = lora["memory_mb"][key] + prompt["memory_mb"][key] - head * per_parameter / MB
        assert both["memory_mb"][key] == pytest.approx(summed, rel=1e-12)
    # One frozen base, plus each part's trainable tensors (float32) on top.
    adapter_bytes = 4 * (prompt["trainable_params"] - head)
    assert both["memory_mb"]["weights"] == pytest.approx(lora["memory_mb"]["weights"] + adapter_bytes / MB, rel=1e-12)
    # The prompt's 20 extra tokens run through LoRA's layers too: more than either part alone.
    assert both["memory_mb"]["activations"] > max(lora["memory_mb"]["activations"], prompt["memory_mb"]["activations"])


def test_a_qlora_part_keeps_its_nf4_base_in_the_combination(estimates):
    _, rows = estimates
    nf4_saving = rows["lora"]["memory_mb"]["weights"] - rows["qlora"]["memory_mb"]["weights"]
    assert nf4_saving > 0
    combined_saving = rows["lora+prompt"]["memory_mb"]["weights"] - rows["qlora+prompt"]["memory_mb"]["weights"]
    assert combined_saving == pytest.approx(nf4_saving, rel=1e-9)

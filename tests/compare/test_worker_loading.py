"""The compare worker loads each method's base as the method declares: QLoRA straight into NF4.

Peak memory is measured per method process, so a QLoRA process that first loaded the float
model would report the float model's peak as its own.
"""

from __future__ import annotations

import pytest
import torch
from train_helpers import write_tiny_model, write_toy_data

import peftlab.models
import peftlab.models.loading
from peftlab.compare import runs
from peftlab.compare.plan import make_plan
from peftlab.quant import Linear4bit


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    root = tmp_path_factory.mktemp("worker-loading")
    model, data = write_tiny_model(root / "model"), write_toy_data(root / "data", train=20, dev=8)
    return make_plan(model=str(model), data=str(data), methods="lora,qlora", threads=1)


def test_qlora_base_is_loaded_into_nf4_with_the_same_seeded_head(plan, monkeypatch):
    task = runs.load_compare_task(plan)
    floating = runs.load_base(plan, task, plan.method("lora")).model

    def no_float_load(*args, **kwargs):
        raise AssertionError("the float loader was called for QLoRA")

    monkeypatch.setattr(peftlab.models, "load_model", no_float_load)
    monkeypatch.setattr(peftlab.models.loading, "load_model", no_float_load)
    quantized = runs.load_base(plan, task, plan.method("qlora")).model
    assert any(isinstance(m, Linear4bit) for m in quantized.modules())
    assert not any(isinstance(m, Linear4bit) for m in floating.modules())
    assert torch.equal(quantized.classifier.weight, floating.classifier.weight)  # one seeded head for all

"""The quick profile's learning-rate probe: candidates scored on validation, the winner continued."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import write_tiny_model, write_toy_data

from peftlab.compare.lr_choice import PROBE_FACTORS, candidate_rates, probe_steps
from peftlab.compare.plan import make_plan
from peftlab.compare.training import run_training


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    model, data = write_tiny_model(root / "model"), write_toy_data(root / "data", train=60, dev=16)
    plan = make_plan(model=str(model), data=str(data), methods="lora", threads=1, lr_choice="probe")
    budget = dataclasses.replace(plan.budget, steps=10, batch_size=8, max_length=16, validation_fraction=0.2)
    return dataclasses.replace(plan, budget=budget)


def _adapter(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def test_the_probe_tries_every_candidate_and_the_run_continues_the_winner_exactly(tiny_plan, tmp_path):
    method = tiny_plan.method("lora")
    probed = run_training(tiny_plan, method, tmp_path / "probed", progress=False)
    probe = probed["lr_choice"]
    assert [p["learning_rate"] for p in probe["points"]] == sorted(candidate_rates(tiny_plan, method))
    assert len(probe["points"]) == len(PROBE_FACTORS) and probe["steps"] == probe_steps(tiny_plan) == 3
    assert probe["validation_rows"] == 12 and probe["train_rows"] == 48  # carved from the training rows
    best = min(p["score"] for p in probe["points"])
    assert probe["chosen"] == next(p["learning_rate"] for p in probe["points"] if p["score"] == best)
    assert probed["learning_rate"] == probe["chosen"] and probed["train"]["steps"] == 10

    # The same run started afresh at the chosen rate (no probe, no resume) ends with the same adapter.
    fresh_method = dataclasses.replace(method, learning_rate=probe["chosen"],
                                       sweep={"kind": "probe", "chosen": probe["chosen"]})
    fresh = run_training(tiny_plan, fresh_method, tmp_path / "fresh", progress=False)
    assert fresh["lr_choice"] is None and fresh["task"]["train_rows"] == probed["task"]["train_rows"]
    a, b = _adapter(tmp_path / "probed"), _adapter(tmp_path / "fresh")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert probed["quality"]["value"] == fresh["quality"]["value"]


def test_a_later_seed_trains_afresh_at_the_chosen_rate(tiny_plan, tmp_path):
    method = dataclasses.replace(tiny_plan.method("lora"), learning_rate=1e-3,
                                 sweep={"kind": "probe", "chosen": 1e-3, "resume_from": str(tmp_path / "nowhere")})
    later = run_training(tiny_plan, method, tmp_path / "seed1", progress=False, seed=tiny_plan.seed + 1)
    assert later["lr_choice"] is None and later["seed"] == tiny_plan.seed + 1 and later["train"]["steps"] == 10

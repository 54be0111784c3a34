"""The timing control: the same model timed as two entries, interleaved, comes out ≈ 1.00."""

from __future__ import annotations

import copy
import dataclasses

import torch
from train_helpers import tiny_bert

from peftlab.compare.figures import WITHIN_NOISE, ratio
from peftlab.compare.plan import make_plan
from peftlab.compare.timing import BASE, CONTROL, _Entry, ratios


def test_two_identical_modules_timed_in_interleaved_rounds_are_not_told_apart():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: a loaded machine stalls a team of threads, not one
    try:
        _time_twins()
    finally:
        torch.set_num_threads(threads)


def _time_twins():
    torch.manual_seed(0)
    base = tiny_bert().eval()
    entries = {BASE: _Entry(BASE, base), CONTROL: _Entry(CONTROL, copy.deepcopy(base))}
    plan = make_plan(threads=1)
    plan = dataclasses.replace(plan, budget=dataclasses.replace(plan.budget, latency_reps=5))
    batch = {"input_ids": torch.randint(0, 1000, (8, 32)), "attention_mask": torch.ones(8, 32, dtype=torch.long)}
    for round_index in range(31):  # round 0 warms up, then 30 rounds in alternating order
        order = [BASE, CONTROL] if round_index % 2 else [CONTROL, BASE]
        for name in order:
            entries[name].run(plan, batch, torch.device("cpu"), record=round_index > 0)
    control = ratios(entries, reference="none")[f"{CONTROL}/unmerged"]
    assert len(entries[BASE].rounds["unmerged"]) == 30
    assert control.low <= control.value <= control.high
    assert 0.85 < control.value < 1.15  # the same model: no real difference, only the machine's noise


def test_a_ratio_whose_interval_contains_one_prints_as_within_noise():
    assert ratio({"value": 1.02, "ci": [0.97, 1.06]}) == WITHIN_NOISE == "≈ 1.00 (within noise)"
    assert ratio({"value": 1.36, "ci": [1.30, 1.42]}) == "1.36× [1.30, 1.42]"

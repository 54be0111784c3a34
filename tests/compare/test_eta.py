"""The duration estimate: padded batch lengths, the probe's cost, and how the time left is corrected."""

import dataclasses

import pytest

from peftlab.compare.eta import TIMING, WORKER_START_S, Eta, phases
from peftlab.compare.lengths import padded_length
from peftlab.compare.lr_choice import PROBE_FACTORS, probe_steps
from peftlab.compare.plan import make_plan


def test_a_batch_costs_its_longest_row_not_the_median_one():
    lengths = [10] * 90 + [60] * 10  # median 10; a batch of 16 nearly always holds a 60
    assert padded_length(lengths, 16, limit=512) > 50
    assert 30 < padded_length(lengths, 16, limit=40) <= 40  # never beyond max_length
    assert padded_length([7] * 30, 16, limit=512) == 7
    assert padded_length(lengths, 1, limit=512) == pytest.approx(15, abs=4)  # one row: about the mean
    assert padded_length([], 16, limit=512) == 0.0


def test_the_estimate_counts_the_probe_steps_and_its_scoring():
    plan = make_plan(methods="lora,full", threads=1)
    calibration = {"step_s": 0.5, "eval_batch_s": 0.2, "dev_rows": 128, "train_rows": 4000}
    found = phases(plan, calibration)
    literature = phases(dataclasses.replace(plan, budget=dataclasses.replace(plan.budget, lr_choice="literature")),
                        calibration)
    extra_steps = (len(PROBE_FACTORS) - 1) * probe_steps(plan)
    extra_scoring = len(PROBE_FACTORS) * 7 * 0.2  # 400 validation rows in batches of 64
    assert found["train-full-0"] - literature["train-full-0"] == pytest.approx(extra_steps * 0.5 + extra_scoring)
    assert literature["train-full-0"] == pytest.approx(WORKER_START_S + 100 * 0.5 + 2 * 0.2)
    assert found[TIMING] == WORKER_START_S + plan.budget.timing_seconds


def test_time_left_scales_the_runs_but_not_the_capped_timing_phase():
    eta = Eta({"train-a-0": 10.0, "train-b-0": 10.0, TIMING: 100.0})
    assert eta.left_s() == 120.0
    eta.finish("train-a-0", 20.0)  # the machine is twice as slow as calibrated
    assert eta.left_s() == 10.0 * 2 + 100.0

"""Plans, radar scores and worker isolation, without training anything."""

from __future__ import annotations

import dataclasses

import pytest

import peftlab
from peftlab.compare.charts import radar_scores
from peftlab.compare.plan import PROFILES, make_plan, method_plan, parse_methods
from peftlab.compare.processes import spawn
from peftlab.core.registry import declaration, declarations
from peftlab.errors import ConfigError


def test_default_plan_covers_every_registered_method_but_variants_on_one_budget():
    plan = make_plan()
    assert [m.method for m in plan.methods] == [d.name for d in declarations() if d.variant_of is None]
    assert plan.budget == PROFILES["quick"]
    for method in plan.methods:
        declared = {f.name for f in dataclasses.fields(declaration(method.method).config_class)}
        assert set(method.fields) <= declared
        peftlab.make_config(method.method, **method.fields)  # the literature fields are valid


def test_plan_round_trips_through_json_form():
    plan = make_plan(methods="lora,full", steps=7, seed=3)
    assert type(plan).from_dict(plan.to_dict()) == plan
    assert plan.budget.steps == 7 and [m.method for m in plan.methods] == ["lora", "full"]


def test_unknown_or_repeated_methods_are_refused():
    with pytest.raises(ConfigError, match="registered methods are"):
        make_plan(methods="lora,nope")
    with pytest.raises(ConfigError, match="twice"):
        make_plan(methods="lora,lora")


@pytest.mark.parametrize("found", declarations(), ids=lambda d: d.name)
def test_every_method_is_planned_from_its_declared_literature(found):
    plan = method_plan(found.name)
    literature = found.literature
    assert (plan.learning_rate, plan.fields, plan.source) == (literature.learning_rate, dict(literature.fields),
                                                               literature.source)
    found.config_class.from_dict(plan.fields)  # the declared settings are valid fields of the method
    assert literature.sweep and literature.learning_rate in literature.sweep


def test_default_methods_are_those_that_are_no_variant():
    assert parse_methods(None) == [d.name for d in declarations() if d.variant_of is None]
    assert method_plan("lora", learning_rate=5e-4).learning_rate == 5e-4
    assert declaration("lora").variant_of is None


def test_radar_scores_put_the_best_method_of_each_axis_at_one():
    def record(name, params, accuracy, step_ms, latency, memory, learned=True):
        return {"method": name, "measurements": {
            "params": {"trainable": params}, "quality": {"metric": "accuracy", "value": accuracy, "learned": learned},
            "step_time": {"median_ms": step_ms},
            "latency": {"unmerged_ratio": {"value": latency, "ci": [latency, latency]}, "merged_ratio": None},
            "memory": {"tensor_peak": {"peak_mb": memory}}}}

    records = [record("full", 10**7, 0.8, 20.0, 1.0, 400), record("prompt", 10**3, 0.7, 10.0, 1.1, 100)]
    scores = radar_scores(records)
    assert scores["prompt"][0] == pytest.approx(1.0) and scores["full"][0] == pytest.approx(0.05)
    assert scores["full"][1] == pytest.approx(1.0) and scores["prompt"][2] == pytest.approx(1.0)
    assert scores["prompt"][4] == pytest.approx(1.0)
    # A method that did not learn has no trade-offs worth drawing.
    unlearned = record("prefix", 10**5, 0.5, 5.0, 1.0, 50, learned=False)
    assert set(radar_scores(records + [unlearned])) == {"full", "prompt"}


def test_a_failing_or_hanging_worker_becomes_an_error(tmp_path):
    broken = spawn({"phase": "train", "plan": {"not": "a plan"}}, tmp_path, "broken")
    assert broken["error"]["type"] == "KeyError" and "traceback" in broken["error"]  # reported, not lost
    hanging = spawn({"phase": "train", "plan": {"not": "a plan"}}, tmp_path, "slow", timeout=0.01)
    assert hanging["error"]["type"] == "Timeout" and "ran over" in hanging["error"]["message"]


def test_profiles_choose_learning_rates_and_fit_max_length_to_the_data():
    assert PROFILES["quick"].lr_choice == "probe" and PROFILES["tuned"].lr_choice == "sweep"
    assert all(budget.max_length is None for budget in PROFILES.values())  # fitted, never cut silently
    plan = make_plan(seeds=3, sweep_seeds=2, tune_lr=True, max_length=96)
    assert plan.budget.lr_choice == "sweep" and plan.budget.sweep_seeds == 2 and plan.budget.max_length == 96
    assert plan.run_seeds == (0, 1, 2)
    with pytest.raises(ConfigError, match="seeds=0"):
        make_plan(seeds=0)
    with pytest.raises(ConfigError, match="lr_choice"):
        make_plan(lr_choice="guess")

"""Plans, claims, radar scores and worker isolation, without training anything."""

from __future__ import annotations

import dataclasses

import pytest

import peftlab
from peftlab.compare.charts import radar_scores
from peftlab.compare.plan import PROFILES, make_plan, method_plan, parse_methods
from peftlab.core.registry import declaration, declarations
from peftlab.compare.report import Claim, check_claim
from peftlab.compare.run import spawn
from peftlab.errors import ConfigError


def test_default_plan_covers_every_registered_method_but_variants_on_one_budget():
    plan = make_plan()
    assert [m.method for m in plan.methods] == [d.name for d in declarations() if d.variant_of is None]
    assert plan.budget == PROFILES["quick"]
    for method in plan.methods:
        declared = {f.name for f in dataclasses.fields(peftlab.get_method(method.method).config_class)}
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


def _record(name, accuracy):
    return {"method": name, "measurements": {"quality": {"metric": "accuracy", "value": accuracy}}}


def test_claims_are_checked_against_the_measured_quality():
    records = {n: _record(n, a) for n, a in (("full", 0.80), ("lora", 0.79), ("prompt", 0.70))}
    close = Claim("", "lora", "close", ("full",), 2.0)
    behind = Claim("", "prompt", "behind", ("full", "lora"), 2.0)
    assert check_claim(close, records)[0] == "seen"
    assert check_claim(behind, records)[0] == "seen"
    records["prompt"] = _record("prompt", 0.79)
    assert check_claim(behind, records)[0] == "not seen"
    del records["prompt"]
    assert check_claim(behind, records)[0] == "not checked"


def test_radar_scores_put_the_best_method_of_each_axis_at_one():
    def record(name, params, accuracy, speed, latency, memory):
        return {"method": name, "measurements": {
            "params": {"trainable": params}, "quality": {"metric": "accuracy", "value": accuracy},
            "step_time": {"throughput_vs_reference": speed, "median_ms": 10.0},
            "latency": {"unmerged_ratio": latency, "merged_ratio": None}, "memory": {"training_mb": memory}}}

    scores = radar_scores([record("full", 10**7, 0.8, 1.0, 1.0, 400), record("prompt", 10**3, 0.7, 2.0, 1.1, 100)])
    assert scores["prompt"][0] == pytest.approx(1.0) and scores["full"][0] == pytest.approx(0.05)
    assert scores["full"][1] == pytest.approx(1.0) and scores["prompt"][2] == pytest.approx(1.0)
    assert scores["prompt"][4] == pytest.approx(1.0)


def test_a_crashing_worker_becomes_an_error(tmp_path):
    result = spawn({"phase": "train", "plan": {"not": "a plan"}}, tmp_path, "broken")
    assert result["error"]["type"] == "WorkerCrashed"
    assert "exited with code 1" in result["error"]["message"]

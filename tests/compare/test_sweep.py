"""The learning-rate sweep on a tiny BERT: never reads the dev set, picks its best, reproducible."""

from __future__ import annotations

import dataclasses

import pytest
from train_helpers import write_tiny_model, write_toy_data

from peftlab.compare.plan import make_plan
from peftlab.compare.runs import load_base, load_compare_task
from peftlab.compare.sweep import MAX_EXTENSIONS, choose, past_the_edge, run_sweep, sweep_grid
from peftlab.compare.training import run_training


class _Untouchable(tuple):
    """A dev split that fails the test if anything looks at it."""

    def _refuse(self, *args):
        raise AssertionError("the sweep read the dev set")

    __iter__ = __len__ = __getitem__ = __bool__ = _refuse


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    model, data = write_tiny_model(root / "model"), write_toy_data(root / "data", train=60, dev=16)
    plan = make_plan(model=str(model), data=str(data), methods="lora", threads=1, tune_lr=True)
    budget = dataclasses.replace(plan.budget, steps=3, batch_size=8, max_length=16, validation_fraction=0.2)
    return dataclasses.replace(plan, budget=budget)


def _sweep(plan):
    task = load_compare_task(plan)
    loaded = load_base(plan, task, plan.method("lora"))
    guarded = dataclasses.replace(task, dev=_Untouchable(task.dev))
    return run_sweep(plan, plan.method("lora"), guarded, loaded, progress=False)


def test_sweep_scores_every_rate_on_validation_and_chooses_the_best(tiny_plan):
    sweep = _sweep(tiny_plan)
    rates = [p["learning_rate"] for p in sweep["points"]]
    assert rates == sorted([*sweep_grid(tiny_plan.method("lora")), *sweep["extended"]])
    assert sweep["validation_rows"] == 12 and sweep["train_rows"] == 48
    assert sweep["chosen"] == choose(sweep["points"], lower_is_better=False)
    best = max(p["score"] for p in sweep["points"] if not p["diverged"])
    assert next(p for p in sweep["points"] if p["learning_rate"] == sweep["chosen"])["score"] == best


def test_sweep_is_reproducible_with_the_same_seed(tiny_plan):
    assert _sweep(tiny_plan)["points"] == _sweep(tiny_plan)["points"]


def test_choose_skips_diverged_runs_and_prefers_the_smaller_rate_on_ties():
    points = [{"learning_rate": 1e-3, "score": 0.7, "diverged": False},
              {"learning_rate": 3e-3, "score": 0.9, "diverged": True},
              {"learning_rate": 1e-2, "score": 0.7, "diverged": False},
              {"learning_rate": 3e-2, "score": None, "diverged": True}]
    assert choose(points, lower_is_better=False) == 1e-3
    assert choose(points[3:], lower_is_better=False) is None


def test_the_worker_runs_a_sweep_phase(tiny_plan, tmp_path):
    import json

    from peftlab.compare import worker
    from peftlab.io import write_json

    write_json(tmp_path / "spec.json", {"phase": "lr", "plan": tiny_plan.to_dict(), "method": "lora",
                                        "checkpoints": str(tmp_path / "lr")})
    assert worker.main([str(tmp_path / "spec.json"), str(tmp_path / "out.json")]) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["chosen"] in [p["learning_rate"] for p in result["points"]] and result["metric"] == "accuracy"


def test_a_diverging_rate_stops_early_and_is_never_chosen(tiny_plan, monkeypatch):
    """At the wild rate the loss is made to grow 30% a step (a forward hook), as a diverging run's does."""
    from peftlab.compare import sweep as sweep_module

    real_train = sweep_module.train

    def train_with_a_rising_loss_at_the_wild_rate(peft_model, task, tokenizer, settings, **kwargs):
        if settings.learning_rate == 1.0:
            calls = []

            def rising(module, args, output):
                calls.append(1)
                output["loss"] = output["loss"] * 1.3 ** len(calls)
                return output
            peft_model.model.register_forward_hook(rising)
        return real_train(peft_model, task, tokenizer, settings, **kwargs)

    monkeypatch.setattr(sweep_module, "train", train_with_a_rising_loss_at_the_wild_rate)
    monkeypatch.setattr(sweep_module, "sweep_grid", lambda method: (1e-3, 1.0))
    monkeypatch.setattr(sweep_module, "MAX_EXTENSIONS", 0)  # 1e-3 is the grid's edge
    plan = dataclasses.replace(tiny_plan, budget=dataclasses.replace(tiny_plan.budget, steps=20))
    sweep = _sweep(plan)
    sane, wild = sweep["points"]
    assert wild["diverged"] and wild["score"] is None and wild["stop_reason"] == "rising"
    assert wild["stopped_at_step"] == 10  # the first log at or after 25% of 20 steps with a previous log
    assert sane["stopped_at_step"] is None and sane["score"] is not None
    assert sweep["chosen"] == 1e-3


def test_the_reported_run_repeats_the_chosen_sweep_run(tiny_plan, tmp_path):
    """Same rows, same seeded start, same order: the model scored on dev is the one that won validation."""
    sweep = _sweep(tiny_plan)
    method = dataclasses.replace(tiny_plan.method("lora"), learning_rate=sweep["chosen"], sweep=sweep)
    plan = dataclasses.replace(tiny_plan, methods=(method,))
    reported = run_training(plan, method, tmp_path / "adapter", progress=False)
    winner = next(p for p in sweep["points"] if p["learning_rate"] == sweep["chosen"])
    assert reported["task"]["train_rows"] == sweep["train_rows"]
    assert reported["train"]["loss_history"][-1]["loss"] == winner["final_loss"]
    assert reported["quality"]["dev_rows"] == 16  # the dev set is back for the reported run


def test_past_the_edge_continues_the_grid_log_spaced():
    points = [{"learning_rate": r} for r in (1e-3, 3e-3, 1e-2)]
    assert past_the_edge(points, 1e-2) == 0.0333  # 1e-2 × (1e-2 / 3e-3), to 3 significant digits
    assert past_the_edge(points, 1e-3) == 0.000333
    assert past_the_edge([{"learning_rate": r} for r in (5e-5, 1e-4)], 1e-4) == 2e-4  # rounded, not 1.99..e-4
    assert past_the_edge(points, 3e-3) is None and past_the_edge(points, None) is None


def test_a_best_rate_on_the_edge_extends_the_sweep_at_most_max_extensions_times(tiny_plan, monkeypatch):
    """Validation accuracy is made to grow with the rate (a stand-in trainer): every best sits on the top edge."""
    from types import SimpleNamespace

    from peftlab.compare import sweep as sweep_module

    def accuracy_grows_with_the_rate(peft_model, task, tokenizer, settings, **kwargs):
        return SimpleNamespace(final_metrics={"accuracy": settings.learning_rate},
                               history=[{"loss": 0.7}, {"loss": 0.5}])

    monkeypatch.setattr(sweep_module, "train", accuracy_grows_with_the_rate)
    sweep = _sweep(tiny_plan)
    _, mid, high = sweep_grid(tiny_plan.method("lora"))
    assert len(sweep["extended"]) == MAX_EXTENSIONS
    assert sweep["extended"][0] == pytest.approx(high * high / mid, rel=1e-3)
    assert sweep["chosen"] == sweep["extended"][-1] == max(p["learning_rate"] for p in sweep["points"])

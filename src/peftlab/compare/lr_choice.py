"""Choosing each method's learning rate on a validation split before its reported runs.

At a short budget the learning rate decides more than the method: the literature's rates are
set for long runs, and at 100 steps prefix tuning at 1e-2 and prompt tuning at 0.3 stay at chance
while 1e-3 and 3e-2 learn. Every choice here is made on a validation split carved from the
TRAINING rows with the plan's seed (`runs.without_validation`); the dev set is removed from the
task before any run, and the reported runs train on the same remaining rows.

Two ways, by the plan's `lr_choice`:

probe (quick profile): a cheap look at the start of the run. Each candidate rate (the
    literature rate × `PROBE_FACTORS`) trains the first `PROBE_FRACTION` of the budget's steps,
    on the budget's own schedule (same warmup, decay still aimed at the last step), from the same
    seeded start; each is scored by its validation LOSS on at most `PROBE_ROWS` rows (a loss
    moves before accuracy does and is less noisy on few rows). The lowest loss wins (on a tie,
    the literature rate); a candidate whose loss becomes non-finite is out. The probe runs inside the first seed's training worker
    and the winner's run is not thrown away: it leaves a checkpoint (`peftlab.train.checkpoint`)
    at its last step, and the reported run resumes from it, which continues it exactly. The probe
    thus costs only the other candidates' steps: (len(PROBE_FACTORS) − 1) × PROBE_FRACTION of a
    run, plus scoring each candidate.
sweep (tuned profile): `sweep.run_sweep`, a whole-budget run per rate of a grid (and per
    `sweep_seeds` seed), scored by the validation metric, extended past the grid's edge.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from peftlab.compare.plan import ComparePlan, MethodPlan
from peftlab.compare.runs import load_base, load_compare_task
from peftlab.compare.sweep import MAX_EXTENSIONS, choose, run_sweep, sweep_grid, sweep_task, train_at

PROBE_FACTORS = (0.1, 1.0)  # × the literature rate: a decade lower, and the rate itself
PROBE_FRACTION = 0.3        # of the budget's steps, per candidate
PROBE_ROWS = 400            # validation rows scored per candidate (at most)


def probe_steps(plan: ComparePlan) -> int:
    return max(1, math.ceil(PROBE_FRACTION * plan.budget.steps))


def candidate_rates(plan: ComparePlan, method: MethodPlan) -> tuple[float, ...]:
    """The rates a method's choice starts from (a sweep may extend past its edge)."""
    if plan.budget.lr_choice == "probe":
        return tuple(float(f"{method.learning_rate * factor:.3g}") for factor in PROBE_FACTORS)
    return sweep_grid(method)


def announce(plan: ComparePlan) -> str:
    """What the choice will cost, said before it starts."""
    own = len(plan.methods) * plan.budget.steps * plan.budget.seeds
    if plan.budget.lr_choice == "probe":
        extra = sum(len(candidate_rates(plan, m)) - 1 for m in plan.methods) * probe_steps(plan)
        return (f"learning rates by a probe: each method's first run opens with {len(PROBE_FACTORS)} candidate rates "
                f"× {probe_steps(plan)} steps scored on a validation split, and the winner continues "
                f"({extra:,} extra steps, {extra / own:.0%} of the comparison's own {own:,})")
    runs = sum(len(candidate_rates(plan, m)) for m in plan.methods)
    steps = runs * plan.budget.steps * plan.budget.sweep_seeds
    return (f"learning-rate sweep first: {runs} rates × {plan.budget.sweep_seeds} seed(s) of {plan.budget.steps} "
            f"steps ({steps:,} steps, {steps / own:.1f}x the comparison's own {own:,}), up to {MAX_EXTENSIONS} "
            "more rates per method whose best rate is on its grid's edge; diverging runs stop early")


def run_probe(plan: ComparePlan, method: MethodPlan, task, loaded, progress: bool,
              checkpoints: Path) -> dict[str, Any]:
    """Score each candidate rate by validation loss after the first `probe_steps` steps; the
    record's `resume_from` is the winner's checkpoint at that step."""
    began = time.perf_counter()
    tuning, validation = sweep_task(task, plan.budget.validation_fraction, plan.seed)
    scored = validation[:PROBE_ROWS]
    points = [train_at(plan, method, loaded, tuning, scored, rate, steps=probe_steps(plan), metric="loss",
                       progress=progress, checkpoints=checkpoints / f"lr-{rate:g}")
              for rate in candidate_rates(plan, method)]
    chosen = choose(points, lower_is_better=True)
    literature = next((p for p in points if p["learning_rate"] == float(f"{method.learning_rate:.3g}")), None)
    if literature is not None and chosen is not None and literature["score"] == min(
            p["score"] for p in points if p["score"] is not None and not p["diverged"]):
        chosen = literature["learning_rate"]  # a tie is no evidence against the published rate
    return {"kind": "probe", "metric": "loss", "points": sorted(points, key=lambda p: p["learning_rate"]),
            "chosen": chosen, "resume_from": next((p["checkpoint"] for p in points if p["learning_rate"] == chosen),
                                                  None),
            "validation_rows": len(scored), "train_rows": len(tuning.train), "steps": probe_steps(plan), "seeds": 1,
            "wall_s": time.perf_counter() - began}


def choose_rate(plan: ComparePlan, method: MethodPlan, progress: bool) -> dict[str, Any]:
    """The worker phase "lr" of the tuned profile: the method's sweep (a probe runs inside the
    first seed's training run instead, see `training.run_training`)."""
    task = load_compare_task(plan)
    return run_sweep(plan, method, task, load_base(plan, task, method), progress)


"""Learning-rate sweeps (`peftlab compare --tune-lr`): each method's rate chosen on the same budget.

At a short budget the learning rate decides more than the method (soft prompts want ~1000x the
rate of full fine-tuning, and a literature default can leave a method at chance). In the tuned
profile each method first trains once per rate of its grid (its declaration's `literature.sweep`,
log-spaced around the literature default), on the comparison's step budget, from the same seeded
initialisation (with `sweep_seeds` > 1, once per seed, scored by the mean):

    train_rest, validation = task.split_validation(validation_fraction, seed)   # from TRAIN only
    for lr in grid:  score(lr) = validation metric after training on train_rest
    chosen = argmax score   (argmin for perplexity); ties go to the smaller rate

A best rate on the grid's edge extends the search one step further out (at most
`MAX_EXTENSIONS` times). The reported run then trains at the chosen rate on the same rows, from
the same initialisation (`apply_method` seeds it) and in the same seeded order: it repeats the
chosen sweep run step for step, so the model scored on the dev set is the model that won on
validation. (Retraining on all rows in a new order would not be: at short budgets soft prompts
move by 10-25 points with the data order alone, and the quick budget's 1,600 examples are fewer
than the 3,600 rows left anyway.)

The dev set is removed from the task before the sweep starts, so no sweep run can read it.
Diverging runs stop early, so a bad rate costs little: NaN/inf stops a run at once, and from
`STOP_RISING_AFTER` of the budget on a logged loss above the first logged one stops it too
(`TrainConfig.stop_if_loss_rises_after`). A run that ends with its final loss above its first
also counts as diverged. Diverged rates are never chosen.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
from pathlib import Path
from typing import Any

from peftlab.compare.plan import ComparePlan, MethodPlan
from peftlab.compare.runs import apply_method, train_config, without_validation
from peftlab.core.registry import declaration
from peftlab.data.tasks import CLASSIFICATION, Task
from peftlab.train import TrainingDivergedError, train

FALLBACK_FACTORS = (1 / 3, 1.0, 3.0)  # around the plan's rate, for a combination or a method without a grid
MAX_EXTENSIONS = 2  # extra rates past the grid's edge while the best rate sits on it
STOP_RISING_AFTER = 0.25  # of the budget: warmup is over and a working rate has brought the loss down


def sweep_grid(method: MethodPlan) -> tuple[float, ...]:
    """The rates to try: the method's declared grid (from the ranges the literature reports as
    working at short budgets); for a combination, its first part's rate × FALLBACK_FACTORS."""
    grid = () if "+" in method.method else declaration(method.method).literature.sweep
    return grid or tuple(method.learning_rate * f for f in FALLBACK_FACTORS)


def sweep_task(task: Task, fraction: float, seed: int) -> tuple[Task, tuple]:
    """(the task with its training rows minus a validation split and NO dev set, the validation rows)."""
    rest, validation = without_validation(task, fraction, seed)
    return dataclasses.replace(rest, dev=(), dev_references=()), validation


def choose(points: list[dict[str, Any]], lower_is_better: bool) -> float | None:
    """The rate of the best non-diverged point (ties: the smaller rate)."""
    usable = [p for p in points if p["score"] is not None and not p["diverged"]]
    if not usable:
        return None
    sign = 1 if lower_is_better else -1
    return min(usable, key=lambda p: (sign * p["score"], p["learning_rate"]))["learning_rate"]


def past_the_edge(points: list[dict[str, Any]], chosen: float | None) -> float | None:
    """One grid step beyond the tried rates when `chosen` is the lowest or highest of them, else None.

    A best rate on the grid's edge says only that the optimum may lie further out; the step is the
    ratio of the two outermost rates on that side, so the search stays log-spaced.
    """
    rates = sorted(p["learning_rate"] for p in points)
    if chosen is None or len(rates) < 2:
        return None
    if chosen == rates[-1]:
        return float(f"{rates[-1] * rates[-1] / rates[-2]:.3g}")  # 2e-4, not 1.9999999999999998e-4
    if chosen == rates[0]:
        return float(f"{rates[0] * rates[0] / rates[1]:.3g}")
    return None


def train_at(plan: ComparePlan, method: MethodPlan, loaded, tuning: Task, validation: tuple, rate: float, *,
             steps: int | None, metric: str, progress: bool, checkpoints: Path | None = None) -> dict[str, Any]:
    """One run at `rate` from the seeded start on `tuning`, scored on `validation`.

    `steps` stops the run after that many steps of the budget's schedule (a probe); None trains
    the whole budget. Each of the plan's `sweep_seeds` seeds trains once; the point's score is
    their mean (`score_sd` their spread), and any diverged seed marks the rate diverged. With
    `checkpoints`, a probe leaves its state at its last step there (`checkpoint` in the point),
    so the reported run at this rate can continue it instead of starting again.
    """
    seeds = [plan.seed + k for k in range(plan.budget.sweep_seeds if steps is None else 1)]
    scores, losses = [], []
    for seed in seeds:
        seeded = dataclasses.replace(plan, seed=seed)
        peft_model = apply_method(seeded, copy.deepcopy(loaded.model), method)  # the same seeded head for every rate
        settings = dataclasses.replace(train_config(seeded, method, tuning), learning_rate=rate, generate=False,
                                       stop_if_loss_rises_after=STOP_RISING_AFTER, stop_after=steps,
                                       checkpoint_every=steps if checkpoints else None, keep_checkpoints=1)
        try:
            result = train(peft_model, tuning, loaded.tokenizer, settings, progress=progress,
                           dev_examples=validation, checkpoint_dir=checkpoints)
        except TrainingDivergedError as stopped:
            return {"learning_rate": rate, "score": None, "diverged": True, "final_loss": None,
                    "stopped_at_step": stopped.step, "stop_reason": stopped.reason}
        history = [h["loss"] for h in result.history]
        if history and history[-1] > history[0] and steps is None:
            return {"learning_rate": rate, "score": None, "diverged": True, "final_loss": history[-1],
                    "stopped_at_step": None, "stop_reason": None}
        scores.append(result.final_metrics.get(metric))
        losses.append(history[-1] if history else None)
    return {"learning_rate": rate, "score": statistics.fmean(scores),
            "score_sd": statistics.stdev(scores) if len(scores) > 1 else None, "seed_scores": scores,
            "diverged": False, "final_loss": losses[0], "stopped_at_step": None, "stop_reason": None,
            "checkpoint": str(Path(checkpoints) / f"step-{steps}") if checkpoints else None}


def run_sweep(plan: ComparePlan, method: MethodPlan, task: Task, loaded, progress: bool) -> dict[str, Any]:
    """Train `method` once per rate of its grid (and seed) on `task`'s training rows; score on validation.

    While the best rate sits on the edge of the rates tried, up to `MAX_EXTENSIONS` more rates
    are tried one step further out (`past_the_edge`); points come back sorted by rate.
    """
    budget = plan.budget
    tuning, validation = sweep_task(task, budget.validation_fraction, plan.seed)
    metric = "accuracy" if task.kind == CLASSIFICATION else "loss"

    def at(rate: float) -> dict[str, Any]:
        return train_at(plan, method, loaded, tuning, validation, rate, steps=None, metric=metric, progress=progress)

    points = [at(rate) for rate in sweep_grid(method)]
    chosen = choose(points, lower_is_better=metric == "loss")
    extended = []
    while len(extended) < MAX_EXTENSIONS and (rate := past_the_edge(points, chosen)) is not None:
        extended.append(rate)
        points.append(at(rate))
        chosen = choose(points, lower_is_better=metric == "loss")
    return {"kind": "sweep", "metric": metric, "points": sorted(points, key=lambda p: p["learning_rate"]),
            "chosen": chosen, "extended": extended, "validation_rows": len(validation),
            "train_rows": len(tuning.train), "steps": budget.steps, "seeds": budget.sweep_seeds}

"""What a comparison runs: one budget for every method, plus each method's literature defaults.

Fairness is the point of `peftlab compare`, so everything that is not the method itself is
shared: the same training rows in the same seeded order, the same number of optimizer steps of
the same batch, the same maximum length, warmup, seed and dev set. What differs is what the
literature says each method needs to work at all, mostly its learning rate (soft prompts want
~1000x the rate of full fine-tuning). Those defaults are part of each method's declaration
(`MethodDeclaration.literature`, in its package's `config.py`): nothing here names a method.

A combination "a+b" (see `peftlab.core.combination`) runs with each part's literature fields;
its learning rate is the first part's, and every other part keeps its own literature rate as a
scale relative to it (lora+prompt: 1e-3, prompt × 300 = 0.3), given to the components' lr_scale.

`ComparePlan.to_dict()` is what the workers receive and what `results.json` records.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from peftlab.core.config import check_choice
from peftlab.core.registry import declaration, declarations, method_names
from peftlab.errors import ConfigError


@dataclass(frozen=True)
class Budget:
    """The shared training and measuring budget.

    steps × batch_size rows are seen in the seeded order of the first `max_train` training rows;
    the dev set (first `max_dev` rows, or prompts for causal-LM) scores every method.
    The timing phase runs `timing_rounds` rounds; in each, every method in turn trains
    `timing_steps` steps on the same fixed batch and runs `latency_reps` inference passes on a
    fixed dev batch of `latency_batch` rows (first step/pass of a turn discarded as warmup).
    """

    steps: int
    batch_size: int
    max_length: int
    warmup_ratio: float = 0.06
    max_train: int | None = None
    max_dev: int | None = None
    eval_batch_size: int = 64
    timing_rounds: int = 5
    timing_steps: int = 3
    latency_batch: int = 32
    latency_reps: int = 5
    generate: bool = True  # causal-LM: score BLEU / ROUGE-L by greedy decoding
    max_new_tokens: int = 48
    max_dev_prompts: int | None = None  # causal-LM dev prompts when `max_dev` is not set
    tune_lr: bool = False  # sweep each method's learning rate first (`peftlab.compare.sweep`)
    validation_fraction: float = 0.1  # of the training rows, held out to score the sweep

    def __post_init__(self) -> None:
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction={self.validation_fraction!r} must be in (0, 1)")
        for name in ("steps", "batch_size", "max_length", "eval_batch_size", "timing_rounds",
                     "timing_steps", "latency_batch", "latency_reps", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} must be an integer >= 1")


# quick: 100 steps of 16 (1,600 of the embedded 4,000 SST-2 training rows, in seeded order) at
# max_length 64, scored on the full 872-row dev set. All seven methods took 969 s on 2 quiet CPU
# cores (BENCHMARKS.md): 70-130 s a method for process start, model load, 100 steps and dev
# scoring, then ~2 minutes of interleaved timing.
# Greedy decoding is slow on CPU, so a causal-LM task is scored on its first 50 dev prompts.
# tuned: the quick budget after a learning-rate sweep per method (3-5 extra runs each, see sweep.py;
# 3,352 s for all seven on the same machine).
QUICK = Budget(steps=100, batch_size=16, max_length=64, max_dev=None, max_dev_prompts=50,
               timing_rounds=4, timing_steps=2, latency_reps=3)
PROFILES = {
    "quick": QUICK,
    "tuned": dataclasses.replace(QUICK, tune_lr=True),
    "full": Budget(steps=375, batch_size=32, max_length=128, max_dev=None,
                   timing_rounds=10, timing_steps=5, latency_reps=10),
}


# Training throughput is reported relative to this method, as the seeds do ("vs. full fine-tuning").
REFERENCE_METHOD = "full"


@dataclass(frozen=True)
class MethodPlan:
    """One method's run: its registered name, learning rate and config fields (JSON values)."""

    method: str
    learning_rate: float
    fields: dict[str, Any]
    source: str
    notes: tuple[str, ...] = ()
    sweep: dict[str, Any] | None = None  # the learning-rate sweep that chose `learning_rate`


@dataclass(frozen=True)
class ComparePlan:
    """Everything the workers need, JSON-serialisable."""

    model: str
    data: str
    columns: dict[str, str | None]
    profile: str
    budget: Budget
    methods: tuple[MethodPlan, ...]
    seed: int = 0
    threads: int | None = None
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ComparePlan":
        methods = tuple(MethodPlan(**{**m, "notes": tuple(m.get("notes", ()))}) for m in data["methods"])
        return cls(**{**data, "budget": Budget(**data["budget"]), "methods": methods})

    def method(self, name: str) -> MethodPlan:
        return next(m for m in self.methods if m.method == name)


def method_plan(method: str, learning_rate: float | None = None) -> MethodPlan:
    """`method`'s literature default (its declaration's `literature`)."""
    if "+" in method:
        return combination_plan(method, learning_rate)
    literature = declaration(method).literature  # raises for an unknown method
    rate = literature.learning_rate if learning_rate is None else learning_rate
    return MethodPlan(method, rate, dict(literature.fields), literature.source)


def combination_plan(method: str, learning_rate: float | None = None) -> MethodPlan:
    """A combination's plan: fields {part: its literature fields, "lr_scales": {part: rate / first rate}}."""
    parts = [method_plan(part) for part in method.split("+")]
    first = parts[0].learning_rate
    fields: dict[str, Any] = {part.method: part.fields for part in parts}
    fields["lr_scales"] = {part.method: part.learning_rate / first for part in parts[1:]}
    source = "; ".join(f"{part.method}: {part.source} (lr {part.learning_rate:g})" for part in parts)
    notes = tuple(note for part in parts for note in part.notes)
    return MethodPlan(method, first if learning_rate is None else learning_rate, fields, source, notes)


def _check_method(name: str, known: list[str]) -> str | None:
    """Why `name` (a method or "a+b") cannot be planned, or None."""
    parts = name.split("+")
    unknown = [part for part in parts if part not in known]
    if unknown:
        return f"unknown method(s) {', '.join(unknown)}"
    if len(set(parts)) != len(parts):
        return f"{name} names a method twice"
    return None


def parse_methods(text: str | None) -> list[str]:
    """A comma list of registered methods or combinations "a+b" (default: every method that is not
    a variant of another, in registry order)."""
    known = method_names()
    if not text:
        return [d.name for d in declarations() if d.variant_of is None]
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    problems = [problem for problem in map(lambda name: _check_method(name, known), chosen) if problem]
    if problems:
        raise ConfigError(f"{problems[0]}: registered methods are {', '.join(known)} (combine them as a+b)")
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"--methods {text!r} names a method twice")
    return chosen


def make_plan(*, model: str = "minilm", data: str = "sst2", columns: dict[str, str | None] | None = None,
              methods: str | None = None, profile: str = "quick", steps: int | None = None,
              seed: int = 0, threads: int | None = None, device: str = "auto",
              max_train: int | None = None, max_dev: int | None = None, tune_lr: bool = False) -> ComparePlan:
    """The plan of a comparison from command-line choices (see `Budget` and the methods' literature)."""
    check_choice("profile", profile, tuple(PROFILES))
    budget = PROFILES[profile]
    changes: dict[str, Any] = {}
    if steps is not None:
        changes["steps"] = steps
    if max_train is not None:
        changes["max_train"] = max_train
    if max_dev is not None:
        changes["max_dev"] = max_dev
    if tune_lr:
        changes["tune_lr"] = True
    budget = dataclasses.replace(budget, **changes)
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return ComparePlan(model=model, data=data, columns=dict(columns or {}), profile=profile, budget=budget,
                       methods=tuple(method_plan(m) for m in parse_methods(methods)), seed=seed,
                       threads=threads, device=device)

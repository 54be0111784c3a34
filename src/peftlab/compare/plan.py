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
import json
import os
from dataclasses import dataclass, field
from typing import Any

from peftlab.core.config import check_choice
from peftlab.core.registry import declaration, declarations, method_names
from peftlab.data.tasks import DEV_FRACTION, check_dev_fraction
from peftlab.errors import ConfigError


@dataclass(frozen=True)
class Budget:
    """The shared training and measuring budget.

    steps × batch_size rows are seen in the seeded order of the first `max_train` training rows;
    the dev set (first `max_dev` rows, or prompts for causal-LM) scores every method. Rows are
    cut at `max_length` tokens; None fits it to the data (`compare/lengths.py`: the longest
    training or dev row, at most `max_length_cap`), so nothing is cut silently.
    Each method trains `seeds` times (seeds seed, seed + 1, ...: head and adapter
    initialisation, data order, dropout); quality intervals cover the spread over seeds.
    The timing phase runs rounds (see `compare/timing.py`): in each, every method trains
    `timing_steps` steps on one fixed batch and runs `latency_reps` inference passes on a fixed
    dev batch of `latency_batch` rows; rounds go on from `timing_min_rounds` until every ratio is
    known to ±5 % or `timing_seconds` have passed.
    `lr_choice` is how each method's learning rate is chosen before its reported runs
    (`compare/lr_choice.py`): "literature" (the method's published default), "probe" (a short
    run per candidate rate on a validation split carved from the training rows), or "sweep"
    (a full-budget run per rate, `sweep_seeds` seeds each).
    """

    steps: int
    batch_size: int
    max_length: int | None
    warmup_ratio: float = 0.06
    max_length_cap: int = 256
    max_train: int | None = None
    max_dev: int | None = None
    eval_batch_size: int = 64
    seeds: int = 1
    timing_min_rounds: int = 5
    timing_seconds: float = 180.0
    timing_steps: int = 2
    latency_batch: int = 8
    latency_reps: int = 3
    generate: bool = True  # causal-LM: score BLEU / ROUGE-L by greedy decoding
    max_new_tokens: int = 48
    max_dev_prompts: int | None = None  # causal-LM dev prompts when `max_dev` is not set
    lr_choice: str = "literature"
    sweep_seeds: int = 1
    validation_fraction: float = 0.1  # of the training rows, held out to choose learning rates

    def __post_init__(self) -> None:
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction={self.validation_fraction!r} must be in (0, 1)")
        check_choice("lr_choice", self.lr_choice, LR_CHOICES)
        for name in ("steps", "batch_size", "max_length_cap", "eval_batch_size", "seeds", "timing_min_rounds",
                     "timing_steps", "latency_batch", "latency_reps", "max_new_tokens", "sweep_seeds"):
            _check_count(name, getattr(self, name))
        for name in ("max_length", "max_train", "max_dev", "max_dev_prompts"):
            if getattr(self, name) is not None:
                _check_count(name, getattr(self, name))
        if not (isinstance(self.timing_seconds, (int, float)) and self.timing_seconds > 0):
            raise ConfigError(f"timing_seconds={self.timing_seconds!r} must be a number > 0")

    @property
    def tune_lr(self) -> bool:
        """Whether the reported runs train at rates chosen on a validation split."""
        return self.lr_choice != "literature"


LR_CHOICES = ("literature", "probe", "sweep")


def _check_count(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}={value!r} must be an integer >= 1")


# quick: 100 steps of 16 (1,600 of the embedded 4,000 SST-2 training rows, in seeded order), rows
# cut only past 256 tokens, scored on the full 872-row dev set, each method's learning rate
# chosen by a short probe first (lr_choice.py). Greedy decoding is slow on CPU, so a causal-LM
# task is scored on its first 50 dev prompts. Measured durations are in the README.
# Its timing phase stops after 90 s (about 9 rounds of 7 methods on 2 cores), a fifth of the whole
# run; the report names the ratios still wider than ±5 % then, and --timing-seconds buys more.
# tuned: the same budget after a full learning-rate sweep per method (3-5 extra runs each), with
# the timing phase's own default cap.
QUICK = Budget(steps=100, batch_size=16, max_length=None, max_dev=None, max_dev_prompts=50, lr_choice="probe",
               timing_seconds=90.0)
# preview: a first table in a few minutes (worker starts, 20 steps, a short timing phase): costs,
# memory and speed are real, quality is not meaningful yet (the report says no method learned).
PROFILES = {
    "preview": dataclasses.replace(QUICK, steps=20, max_dev=256, max_dev_prompts=10, lr_choice="literature",
                                   timing_seconds=30.0, timing_min_rounds=3, timing_steps=1, latency_reps=2),
    "quick": QUICK,
    "tuned": dataclasses.replace(QUICK, lr_choice="sweep", timing_seconds=Budget.timing_seconds),
    "full": Budget(steps=375, batch_size=32, max_length=None, max_length_cap=512, max_dev=None,
                   timing_seconds=600.0, timing_steps=5, latency_reps=10, lr_choice="probe"),
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
    dev_fraction: float = DEV_FRACTION  # of the training rows held out as dev when the data has no dev split

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ComparePlan":
        methods = tuple(MethodPlan(**{**m, "notes": tuple(m.get("notes", ()))}) for m in data["methods"])
        return cls(**{**data, "budget": Budget(**data["budget"]), "methods": methods})

    def method(self, name: str) -> MethodPlan:
        return next(m for m in self.methods if m.method == name)

    @property
    def run_seeds(self) -> tuple[int, ...]:
        """The seed of each reported run of a method: seed, seed + 1, ... (`budget.seeds` of them)."""
        return tuple(self.seed + k for k in range(self.budget.seeds))


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


def with_fields(plan: ComparePlan, changes: dict[str, dict[str, Any]]) -> ComparePlan:
    """`plan` with method fields changed: {name: {field: value}}, where a name is a planned method
    or a part of a planned combination "a+b" (its key `lr_scale` scales that part's rate). Values
    are JSON values (lists for tuples); `runs.method_config` builds (and so checks) the configs."""
    planned = {name for m in plan.methods for name in (m.method, *m.method.split("+"))}
    unknown = sorted(set(changes) - planned)
    if unknown:
        raise ConfigError(f"--set names {', '.join(unknown)}, which this comparison does not run: its methods are "
                          f"{', '.join(m.method for m in plan.methods)} (write --set method.field=value)")
    methods = []
    for m in plan.methods:
        fields = json.loads(json.dumps(m.fields))
        if "+" in m.method:
            for part in m.method.split("+"):
                for key, value in changes.get(part, {}).items():
                    target = fields.setdefault("lr_scales", {}) if key == "lr_scale" else fields.setdefault(part, {})
                    target[part if key == "lr_scale" else key] = value
        else:
            fields.update(changes.get(m.method, {}))
        methods.append(dataclasses.replace(m, fields=fields))
    return dataclasses.replace(plan, methods=tuple(methods))


def make_plan(*, model: str = "minilm", data: str = "sst2", columns: dict[str, str | None] | None = None,
              methods: str | None = None, profile: str = "quick", steps: int | None = None,
              seed: int = 0, threads: int | None = None, device: str = "auto",
              max_train: int | None = None, max_dev: int | None = None, tune_lr: bool = False,
              lr_choice: str | None = None, seeds: int | None = None, sweep_seeds: int | None = None,
              max_length: int | None = None, timing_seconds: float | None = None,
              dev_fraction: float | None = None) -> ComparePlan:
    """The plan of a comparison from command-line choices (see `Budget` and the methods' literature).

    `tune_lr` is `lr_choice="sweep"`; unset arguments keep the profile's values."""
    check_choice("profile", profile, tuple(PROFILES))
    dev_fraction = DEV_FRACTION if dev_fraction is None else dev_fraction
    check_dev_fraction(dev_fraction)
    if tune_lr:
        lr_choice = "sweep"
    given = {"steps": steps, "max_train": max_train, "max_dev": max_dev, "lr_choice": lr_choice,
             "seeds": seeds, "sweep_seeds": sweep_seeds, "max_length": max_length, "timing_seconds": timing_seconds}
    budget = dataclasses.replace(PROFILES[profile], **{k: v for k, v in given.items() if v is not None})
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return ComparePlan(model=model, data=data, columns=dict(columns or {}), profile=profile, budget=budget,
                       methods=tuple(method_plan(m) for m in parse_methods(methods)), seed=seed,
                       threads=threads, device=device, dev_fraction=dev_fraction)

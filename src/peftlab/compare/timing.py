"""The timing phase: training step time and inference latency, interleaved, with intervals.

Timings taken one method after another on a shared machine measure the machine as much as the
method: a neighbour's job during method A's run makes A look slow. Here every method lives in
ONE process (one model copy each) and the phase runs in rounds. In each round every entry, in an
order rotated by one per round, does

    method entries:  `timing_steps` training steps on one fixed batch, with the training loop's
                     own step (`train.loop.training_steps`: collate, autocast, weighted loss,
                     backward, clipping, AdamW, schedule, zero_grad; optimizer state persists);
                     then `latency_reps` eval-mode forward passes on one fixed dev batch,
                     unmerged, and merged in place where the method's capabilities allow (each
                     series after one pass that is not kept: the switch from training or the
                     merge costs that pass, not the model)
    base entries:    the forward passes only: the base model, and a second copy of it, the
                     CONTROL, which must come out ≈ 1.00 × base (if it does not, the machine
                     was too noisy to tell anything apart)

after one warm-up round that is not recorded (optimizer states, first touches of memory).

A ratio (a method's step time to the reference method's, a latency to the base's) is taken per
round and summarised as the geometric mean over rounds with a bootstrap interval over rounds
(`stats.ratio_interval`). Rounds go on until every ratio's interval is within ±`MAX_HALF_WIDTH`
of its figure (after at least `MIN_ROUNDS`), or until `Budget.timing_seconds` have passed; the
result says which stopped it and lists the ratios still wider.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from typing import Any

import torch

from peftlab.compare.plan import REFERENCE_METHOD, ComparePlan, MethodPlan
from peftlab.compare.runs import (apply_method, inference_batch, load_base, load_compare_task, task_facts,
                                  train_config)
from peftlab.compare.stats import Interval, median_interval, ratio_interval
from peftlab.train import resolve_device
from peftlab.train.evaluate import make_collator
from peftlab.train.loop import training_steps
from peftlab.train.runtime import quantile
from peftlab.train.schedule import epoch_order

BASE, CONTROL = "base", "base (control)"
MIN_ROUNDS = 5
MAX_HALF_WIDTH = 0.05


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def latency(model, batch: dict[str, torch.Tensor], reps: int, device: torch.device) -> list[float]:
    """Wall times of `reps` eval-mode forward passes on `batch`, after one that is not kept: the
    first pass after training steps or a merge pays for the switch, not for the model."""
    model.eval()
    times = []
    for rep in range(reps + 1):
        start = time.perf_counter()
        model(**batch)
        _synchronize(device)
        if rep:
            times.append(time.perf_counter() - start)
    return times


class _Entry:
    """One timed model: per round, its step times and its unmerged / merged latencies."""

    def __init__(self, name: str, model, steps=None, mergeable: bool = False) -> None:
        self.name, self.model, self.steps, self.mergeable = name, model, steps, mergeable
        self.rounds: dict[str, list[list[float]]] = {"step": [], "unmerged": [], "merged": []}

    def run(self, plan: ComparePlan, batch: dict[str, torch.Tensor], device: torch.device, record: bool) -> None:
        budget = plan.budget
        measured: dict[str, list[float]] = {"step": [], "unmerged": [], "merged": []}
        if self.steps is not None:
            self.model.train()
            for _ in range(budget.timing_steps):
                start = time.perf_counter()
                self.steps.step()
                _synchronize(device)
                measured["step"].append(time.perf_counter() - start)
        measured["unmerged"] = latency(self.model, batch, budget.latency_reps, device)
        if self.mergeable:
            self.model.merge()
            try:
                measured["merged"] = latency(self.model, batch, budget.latency_reps, device)
            finally:
                self.model.unmerge()
        if record:
            for kind, times in measured.items():
                if times:
                    self.rounds[kind].append(times)


def _summary(per_round: list[list[float]]) -> dict[str, Any] | None:
    """Median, its interval over rounds, p10 / p90 of all samples, in milliseconds."""
    if not per_round:
        return None
    samples = sorted(t for times in per_round for t in times)
    middle = median_interval(per_round)
    return {"median_ms": middle.value * 1000, "ci_ms": [middle.low * 1000, middle.high * 1000],
            "p10_ms": quantile(samples, 0.1) * 1000, "p90_ms": quantile(samples, 0.9) * 1000,
            "samples": len(samples), "rounds": len(per_round)}


def _ratio(numerator: list[list[float]], denominator: list[list[float]]) -> Interval | None:
    rounds = min(len(numerator), len(denominator))
    if rounds < 2:
        return None
    return ratio_interval([statistics.median(t) for t in numerator[:rounds]],
                          [statistics.median(t) for t in denominator[:rounds]])


def timing_reference(plan: ComparePlan) -> str:
    """The method whose step time the others are compared with: full fine-tuning when compared
    (the source documents' "vs. full fine-tuning"), else the first method of the plan."""
    names = [m.method for m in plan.methods]
    return REFERENCE_METHOD if REFERENCE_METHOD in names else names[0]


def ratios(entries: dict[str, _Entry], reference: str) -> dict[str, Interval | None]:
    """Every ratio the phase reports: "<method>/step" (vs the reference's step), "<entry>/unmerged"
    and "<method>/merged" (vs the base's latency)."""
    base = entries[BASE].rounds["unmerged"]
    found: dict[str, Interval | None] = {}
    for name, entry in entries.items():
        if name == BASE:
            continue
        found[f"{name}/unmerged"] = _ratio(entry.rounds["unmerged"], base)
        if entry.mergeable:
            found[f"{name}/merged"] = _ratio(entry.rounds["merged"], base)
        if entry.steps is not None and name != reference and reference in entries:
            found[f"{name}/step"] = _ratio(entry.rounds["step"], entries[reference].rounds["step"])
    return found


def _wide(found: dict[str, Interval | None]) -> list[str]:
    return sorted(key for key, ratio in found.items() if ratio is None or ratio.relative_half_width > MAX_HALF_WIDTH)


def _build(plan: ComparePlan, method: MethodPlan, base, task, tokenizer, fixed_rows, device):
    """A method's entry: its own copy of the base, its adapter, and the loop's step on `fixed_rows`."""
    peft_model = apply_method(plan, copy.deepcopy(base), method).to(device)
    settings = dataclasses.replace(train_config(plan, method, task), batch_size=len(fixed_rows),
                                   max_steps=10**6, warmup_ratio=0.0)
    steps = training_steps(peft_model, dataclasses.replace(task, train=tuple(fixed_rows)), tokenizer, settings)
    return _Entry(method.method, peft_model, steps, peft_model.method("default").capabilities.mergeable)


def run_timing(plan: ComparePlan, progress: bool) -> dict[str, Any]:
    """{"base", "control", "methods": {name: {"step", "latency", "ratios", "error"}}, "rounds", "stop", ...}."""
    from rich.progress import Progress

    budget = plan.budget
    task = load_compare_task(plan)
    loaded = load_base(plan, task)
    device = resolve_device(plan.device)
    base = loaded.model.to(device)
    collate = make_collator(task, loaded.tokenizer, budget.max_length)
    order = epoch_order(len(task.train), plan.seed, 0)
    fixed_rows = [task.train[i] for i in order[:budget.batch_size]]
    infer_batch = inference_batch(plan, task, loaded.tokenizer, device)

    entries: dict[str, _Entry] = {BASE: _Entry(BASE, base), CONTROL: _Entry(CONTROL, copy.deepcopy(base))}
    errors: dict[str, dict[str, str]] = {}
    for method in plan.methods:
        try:
            entries[method.method] = _build(plan, method, base, task, loaded.tokenizer, fixed_rows, device)
        except Exception as error:  # noqa: BLE001 - a method that cannot be built gets an error row
            errors[method.method] = {"type": type(error).__name__, "message": str(error)}
    reference = timing_reference(plan)

    started, rounds, found = time.perf_counter(), 0, {}
    with Progress(disable=not progress) as bar:
        task_id = bar.add_task("timing (interleaved rounds)", total=budget.timing_seconds)
        while True:
            listed = list(entries.values())
            shift = rounds % len(listed)
            for entry in listed[shift:] + listed[:shift]:
                try:
                    entry.run(plan, infer_batch, device, record=rounds > 0)  # round 0 warms up
                except Exception as error:  # noqa: BLE001
                    errors[entry.name] = {"type": type(error).__name__, "message": str(error)}
                    del entries[entry.name]
                    if entry.name in (BASE, CONTROL):
                        raise
            rounds += 1
            elapsed = time.perf_counter() - started
            bar.update(task_id, completed=min(elapsed, budget.timing_seconds))
            if rounds - 1 >= MIN_ROUNDS:
                found = ratios(entries, reference)
                if not _wide(found) or elapsed >= budget.timing_seconds:
                    break
    wide = _wide(found)
    stop = {"rounds": rounds - 1, "seconds": time.perf_counter() - started, "max_half_width": MAX_HALF_WIDTH,
            "reason": "converged" if not wide else "time cap", "time_cap_s": budget.timing_seconds, "wide": wide}

    def ratio(key: str) -> dict[str, Any] | None:
        value = found.get(key)
        return value.to_dict() if value is not None else None

    methods: dict[str, Any] = {name: {"error": error} for name, error in errors.items()}
    for name, entry in entries.items():
        if name in (BASE, CONTROL):
            continue
        methods[name] = {"step": _summary(entry.rounds["step"]), "error": None,
                         "latency": {"unmerged": _summary(entry.rounds["unmerged"]),
                                     "merged": _summary(entry.rounds["merged"]) if entry.mergeable else None},
                         "ratios": {"step_vs_reference": ratio(f"{name}/step"),
                                    "unmerged_vs_base": ratio(f"{name}/unmerged"),
                                    "merged_vs_base": ratio(f"{name}/merged")}}
    rows, tokens = next(iter(infer_batch.values())).shape[:2]
    return {"base": {"latency": _summary(entries[BASE].rounds["unmerged"])},
            "control": {"latency": _summary(entries[CONTROL].rounds["unmerged"]),
                        "ratio_vs_base": ratio(f"{CONTROL}/unmerged")},
            "methods": methods, "reference": reference, "stop": stop, "task": task_facts(task),
            "threads": torch.get_num_threads(), "device": str(device),
            "train_batch_rows": len(fixed_rows), "train_batch_tokens": int(collate(fixed_rows)["input_ids"].shape[1]),
            "inference_batch_rows": int(rows), "inference_batch_tokens": int(tokens)}

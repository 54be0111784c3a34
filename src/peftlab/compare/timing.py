"""The timing phase: training step time and inference latency, interleaved across methods.

Timings taken one method after another on a shared machine measure the machine as much as the
method: a neighbour's job during method A's run makes A look slow. Here every method lives in
ONE process (one model copy each) and the phase runs in rounds; in each round every method, in
an order rotated by one per round, does

    1 + timing_steps training steps on the same fixed batch (the first is warmup, dropped)
    1 + latency_reps inference passes on the same fixed dev batch, unmerged, then merged
        (in place, where the method's capabilities say it merges), dropped warmup likewise

and the base model (no adapter) runs its inference passes as one more entry. A burst of noise
thus lands on all methods of a round alike; medians over rounds discard most of it, and the
p10..p90 spread says how noisy the machine was.

One training step is the training loop's step (`peftlab.train.loop`): collate, forward, loss,
backward, gradient clipping, AdamW step, zero_grad; the optimizer persists across rounds so its
state is allocated once, as in a real run.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch

from peftlab.compare.plan import ComparePlan
from peftlab.compare.worker import (
    apply_method, inference_batch, load_base, load_compare_task, task_facts, train_config,
)
from peftlab.train import resolve_device
from peftlab.train.evaluate import make_collator
from peftlab.train.schedule import epoch_order, make_optimizer

BASE = "base"


def spread(times: list[float]) -> dict[str, float]:
    """Median and 10th / 90th percentiles in milliseconds, with the sample count."""
    if not times:
        return {}
    ordered = sorted(times)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"median_ms": statistics.median(ordered) * 1000, "p10_ms": quantile(0.1),
            "p90_ms": quantile(0.9), "samples": len(ordered)}


class _Timed:
    """One method in the timing phase: its model, optimizer and the samples taken so far."""

    def __init__(self, name: str, peft_model, learning_rate_config) -> None:
        self.name = name
        self.model = peft_model
        self.params = list(peft_model.trainable_parameters().values())
        self.optimizer = make_optimizer(peft_model.trainable_parameters(), learning_rate_config)
        self.max_grad_norm = learning_rate_config.max_grad_norm
        self.steps: list[float] = []
        self.unmerged: list[float] = []
        self.merged: list[float] = []
        self.mergeable = peft_model.method("default").capabilities.mergeable

    def train_steps(self, batch: list, collate, count: int, device: torch.device) -> None:
        self.model.train()
        for i in range(count + 1):
            start = time.perf_counter()
            inputs = {k: v.to(device) for k, v in collate(batch).items()}
            loss = self.model(**inputs).loss
            loss.backward()
            if self.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                self.steps.append(time.perf_counter() - start)

    def infer(self, batch: dict[str, torch.Tensor], reps: int) -> None:
        self.unmerged += latency(self.model, batch, reps)
        if self.mergeable:
            self.model.merge()
            try:
                self.merged += latency(self.model, batch, reps)
            finally:
                self.model.unmerge()


@torch.no_grad()
def latency(model, batch: dict[str, torch.Tensor], reps: int) -> list[float]:
    """Wall times of `reps` eval-mode forward passes on `batch` after one warmup pass."""
    model.eval()
    device = next(model.parameters()).device
    times = []
    for i in range(reps + 1):
        start = time.perf_counter()
        model(**batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return times


def run_timing(plan: ComparePlan, progress: bool) -> dict[str, Any]:
    """{"base": {"latency": ...}, "methods": {name: {"step": ..., "latency": ..., "error": ...}}}."""
    from rich.progress import Progress

    budget = plan.budget
    task = load_compare_task(plan)
    loaded = load_base(plan, task)
    device = resolve_device(plan.device)
    base = loaded.model.to(device)
    collate = make_collator(task, loaded.tokenizer, budget.max_length)
    order = epoch_order(len(task.train), plan.seed, 0)
    train_batch = [task.train[i] for i in order[:budget.batch_size]]
    infer_batch = inference_batch(plan, task, loaded.tokenizer, device)
    train_tokens = int(collate(train_batch)["input_ids"].shape[1])

    timed: list[_Timed] = []
    errors: dict[str, dict[str, str]] = {}
    for method in plan.methods:
        try:
            peft_model = apply_method(plan, copy.deepcopy(base), method).to(device)
            timed.append(_Timed(method.method, peft_model, train_config(plan, method, task)))
        except Exception as error:  # noqa: BLE001 - a method that cannot be built gets an error row
            errors[method.method] = {"type": type(error).__name__, "message": str(error)}

    base_latency: list[float] = []
    failed: dict[str, dict[str, str]] = {}
    with Progress(disable=not progress) as bar:
        task_id = bar.add_task("timing (interleaved)", total=budget.timing_rounds * (len(timed) + 1))
        for round_index in range(budget.timing_rounds):
            shift = round_index % max(1, len(timed))
            for entry in timed[shift:] + timed[:shift]:
                if entry.name in failed:
                    continue
                try:
                    entry.train_steps(train_batch, collate, budget.timing_steps, device)
                    entry.infer(infer_batch, budget.latency_reps)
                except Exception as error:  # noqa: BLE001
                    failed[entry.name] = {"type": type(error).__name__, "message": str(error)}
                bar.advance(task_id)
            base_latency += latency(base, infer_batch, budget.latency_reps)
            bar.advance(task_id)

    methods: dict[str, Any] = {name: {"error": error} for name, error in {**errors, **failed}.items()}
    for entry in timed:
        if entry.name not in failed:
            methods[entry.name] = {"step": spread(entry.steps), "latency": {
                "unmerged": spread(entry.unmerged), "merged": spread(entry.merged) if entry.mergeable else None},
                "error": None}
    rows, tokens = next(iter(infer_batch.values())).shape[:2]
    return {"base": {"latency": spread(base_latency)}, "methods": methods, "task": task_facts(task),
            "threads": torch.get_num_threads(), "device": str(device),
            "train_batch_rows": len(train_batch), "train_batch_tokens": train_tokens,
            "inference_batch_rows": int(rows), "inference_batch_tokens": int(tokens)}

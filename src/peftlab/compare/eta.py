"""How long a comparison will take: said before it starts, and corrected as it goes.

The estimate comes from a short calibration in the parent process: the base model trains three
steps (full fine-tuning, the most expensive per step) on a batch of the budget's shape, as long as
a batch of the data padded to its longest row is on average (`lengths.padded_length`: on SST-2
about 4x the median row), and runs one evaluation batch likewise; the second and third steps
give the seconds per step. Then, per phase:

    a training run    worker start + the budget's steps (and a probe's extra steps) × the step
                      time × the method's share (1 for full fine-tuning, PEFT_STEP_SHARE for a
                      method that trains few parameters) + the dev set's evaluation batches
                      (+ a probe's: each candidate scored on its validation rows)
    a sweep           one such run per rate of its grid
    timing            its time cap (rounds usually stop earlier) + a worker start

With an executor that runs `slots` runs at once (`--parallel`, Ray), the training and sweep
phases take about 1/slots of their summed time. As the comparison runs, `Eta.line` scales the
time left of the runs by how the finished runs compared with their estimates, so a slower machine
than the calibration saw is taken into account; the timing phase is bounded by its cap and is not
scaled.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from peftlab.compare.lr_choice import PROBE_FACTORS, PROBE_ROWS, candidate_rates, probe_steps
from peftlab.compare.plan import REFERENCE_METHOD, ComparePlan

WORKER_START_S = 8.0     # importing torch and transformers, loading the task and the model
PEFT_STEP_SHARE = 0.7    # a PEFT step against a full fine-tuning step (no weight gradients, tiny optimizer)
BAR_WIDTH = 24
TIMING = "timing"        # the interleaved timing phase's name


def calibrate(plan: ComparePlan, lengths: dict[str, Any], task) -> dict[str, float]:
    """Seconds of one full fine-tuning step and of one evaluation batch of `task`, measured here."""
    import torch

    from peftlab.compare.runs import load_base

    loaded = load_base(plan, task)
    model = loaded.model
    rows = plan.budget.batch_size
    tokens = max(8, round(lengths.get("train_batch_length") or plan.budget.max_length or 64))
    eval_tokens = max(8, round(lengths.get("eval_batch_length") or tokens))
    batch = {"input_ids": torch.randint(100, 1000, (rows, tokens)),
             "attention_mask": torch.ones(rows, tokens, dtype=torch.long)}
    labels = (torch.zeros(rows, dtype=torch.long) if task.kind == "classification" else batch["input_ids"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-9)
    model.train()
    steps = []
    for _ in range(3):
        started = time.perf_counter()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps.append(time.perf_counter() - started)
    model.eval()
    evaluation = {k: v[:1, :1].expand(plan.budget.eval_batch_size, eval_tokens) for k, v in batch.items()}
    started = time.perf_counter()
    with torch.no_grad():
        model(**evaluation)
    return {"step_s": statistics.median(steps[1:]), "eval_batch_s": time.perf_counter() - started,
            "dev_rows": lengths.get("dev_rows", 0), "train_rows": lengths.get("train_rows", 0)}


def _run_s(plan: ComparePlan, method: str, calibration: dict[str, float], probe: bool = False) -> float:
    share = 1.0 if method == REFERENCE_METHOD else PEFT_STEP_SHARE
    batches = math.ceil(calibration["dev_rows"] / plan.budget.eval_batch_size)
    extra_steps = 0
    if probe:  # every candidate scored on the validation rows; all but the winner's steps are extra
        validation = min(PROBE_ROWS, calibration.get("train_rows", PROBE_ROWS))
        batches += len(PROBE_FACTORS) * math.ceil(validation / plan.budget.eval_batch_size)
        extra_steps = (len(PROBE_FACTORS) - 1) * probe_steps(plan)
    steps = (plan.budget.steps + extra_steps) * calibration["step_s"] * share
    return WORKER_START_S + steps + batches * calibration["eval_batch_s"]


def phases(plan: ComparePlan, calibration: dict[str, float]) -> dict[str, float]:
    """Estimated seconds of every phase, in the order they run."""
    found: dict[str, float] = {}
    if plan.budget.lr_choice == "sweep":
        for m in plan.methods:
            found[f"lr-{m.method}"] = len(candidate_rates(plan, m)) * plan.budget.sweep_seeds * _run_s(
                plan, m.method, calibration)
    for m in plan.methods:
        for index, seed in enumerate(plan.run_seeds):
            probe = plan.budget.lr_choice == "probe" and not index
            found[f"train-{m.method}-{seed}"] = _run_s(plan, m.method, calibration, probe)
    found[TIMING] = WORKER_START_S + plan.budget.timing_seconds
    return found


@dataclass
class Eta:
    """The estimate, the phases done so far, and the time left."""

    estimated: dict[str, float]
    slots: int = 1  # training and sweep runs computing at once
    started: float = field(default_factory=time.perf_counter)
    done: dict[str, float] = field(default_factory=dict)  # phase -> seconds it took

    @property
    def total_s(self) -> float:
        return sum(self._share(p, s) for p, s in self.estimated.items())

    def _share(self, phase: str, seconds: float) -> float:
        """A phase's seconds on the overall clock: runs that share it with others count 1/slots."""
        return seconds / self.slots if phase.startswith(("lr-", "train-")) else seconds

    def finish(self, phase: str, seconds: float) -> None:
        self.done[phase] = seconds

    def left_s(self) -> float:
        """Estimated seconds left: the runs' scaled by how the finished runs compared with their
        estimates, the timing phase's (bounded by its cap) as planned."""
        runs_done = [p for p in self.done if p in self.estimated and p != TIMING]
        planned = sum(self.estimated[p] for p in runs_done)
        scale = sum(self.done[p] for p in runs_done) / planned if planned else 1.0
        return sum(self._share(p, s) * (1.0 if p == TIMING else scale)
                   for p, s in self.estimated.items() if p not in self.done)

    def line(self) -> str:
        """`overall ▕██████░░░░░░▏ 45% · 8:10 elapsed · about 9:40 left`."""
        elapsed = time.perf_counter() - self.started
        left = self.left_s()
        share = elapsed / (elapsed + left) if elapsed + left else 1.0
        filled = round(share * BAR_WIDTH)
        return (f"overall ▕{'█' * filled}{'░' * (BAR_WIDTH - filled)}▏ {share:.0%} · {_clock(elapsed)} elapsed · "
                f"about {_clock(left)} left")


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}:{rest:02d}"

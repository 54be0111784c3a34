"""Shared helpers of the benchmark scripts: interleaved timing and robust summaries.

This machine is shared and noisy, so every comparison runs its candidates round-robin inside one
process (each repeat times every candidate once, in a rotating order) and reports medians with
their interquartile range; ratios are taken between medians measured side by side, or, with
`paired_ratio`, as the median of the per-round ratios with a bootstrap interval.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterable

import torch


def summarize(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {"median": statistics.median(ordered), "q1": quartiles[0], "q3": quartiles[2],
            "min": ordered[0], "max": ordered[-1], "n": len(ordered)}


def interleaved(candidates: dict[str, Callable[[], None]], repeats: int, warmup: int = 2,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Time each candidate `repeats` times, round-robin with a rotating start; seconds per call."""
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for name in order:
            start = clock()
            candidates[name]()
            times[name].append(clock() - start)
    return times


def paired_ratio(numerator: list[float], denominator: list[float], resamples: int = 4000,
                 seed: int = 0) -> dict[str, float]:
    """The median of per-round ratios of two candidates timed in the same `interleaved` rounds,
    with a 95 % percentile-bootstrap interval over rounds (load drifts cancel within a round)."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return {"median": statistics.median(ratios), "low": medians[int(0.025 * resamples)],
            "high": medians[int(0.975 * resamples) - 1], "rounds": len(ratios)}


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages (`/proc/loadavg`), to print beside every timing."""
    try:
        with open("/proc/loadavg") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return "unknown"


def format_row(name: str, stats: dict[str, float], reference: dict[str, float] | None = None) -> str:
    ratio = f"{stats['median'] / reference['median']:.2f}x" if reference else ""
    return (f"{name:<28} median {stats['median'] * 1e3:8.1f} ms  IQR [{stats['q1'] * 1e3:7.1f}, "
            f"{stats['q3'] * 1e3:7.1f}]  {ratio}")


def training_step(model: torch.nn.Module, parameters: Iterable[torch.nn.Parameter],
                  batch: dict[str, torch.Tensor],
                  loss_of: Callable[[torch.nn.Module, dict], torch.Tensor] | None = None) -> Callable[[], None]:
    """One forward + backward + AdamW step of `model` on `batch`, as a timing candidate.

    loss_of(model, batch): the step's loss; by default ``model(**batch).loss``.
    """
    optimizer = torch.optim.AdamW(list(parameters), lr=1e-4)

    def step() -> None:
        model.train()  # the same model may also be timed in eval mode by `inference_pass`
        loss = model(**batch).loss if loss_of is None else loss_of(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def inference_pass(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    """One no-grad eval forward of `model` on `batch` (labels dropped), as a timing candidate."""
    inputs = {key: value for key, value in batch.items() if key != "labels"}

    def run() -> None:
        model.eval()
        with torch.no_grad():
            model(**inputs)
    return run


def minilm_batch(batch: int = 8, seq: int = 128) -> dict[str, torch.Tensor]:
    """Random MiniLM-vocabulary tokens with a full attention mask and binary labels."""
    return {"input_ids": torch.randint(1000, 30000, (batch, seq)),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch,))}

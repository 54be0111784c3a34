"""What a training run is and leaves: its resumable position (`TrainState`), its outcome
(`TrainResult`) and the error that stops a diverging run. Kept apart from the loop so that
reports and checkpoints read them without the loop's machinery."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from peftlab.errors import PeftlabError


class TrainingDivergedError(PeftlabError):
    """The run stopped: its loss (or weights) became non-finite, or its loss rose.

    `reason` is "nonfinite" or "rising"; `step` is the optimizer step at which it was seen.
    """

    def __init__(self, message: str, reason: str, step: int) -> None:
        super().__init__(message)
        self.reason, self.step = reason, step

    def __reduce__(self):  # picklable with its attributes (runs may report from worker processes)
        return type(self), (str(self), self.reason, self.step)


@dataclass
class TrainState:
    """The position of a run: what a checkpoint must hold to continue it exactly.

    `batch_in_epoch` counts the micro-batches of epoch `epoch` already consumed; the example
    order of an epoch is `epoch_order(n, seed, epoch)`. Dropout draws from torch's global RNG.
    """

    step: int
    epoch: int
    batch_in_epoch: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


@dataclass
class TrainResult:
    """What a run produced: loss history, dev evaluations, final dev metrics and costs.

    Times are in seconds; `step_time` has the median and the 10th / 90th percentiles of the
    optimizer-step wall time (collation, forward, backward, update; evaluation excluded).
    `cpu_time_s` is the process's user + system CPU time over the run: on a shared machine it
    shows how much of the wall time the run actually computed. `tensor_memory` (with
    `config.track_memory`) is the peak of live tensor bytes over the training steps, split into
    weights, gradients, optimizer state and activations, with the batch shape of the peak step. A resumed run's history and
    evaluations include those before the checkpoint; its times count this process only.
    """

    steps: int
    epochs: float
    examples_seen: int
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    final_metrics: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    cpu_time_s: float = 0.0
    step_time: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    peak_gpu_memory_mb: float | None = None
    tensor_memory: dict[str, Any] | None = None  # with config.track_memory: TensorPeakTracker.to_dict()
    threads: int = 0  # torch intra-op threads the run computed with

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

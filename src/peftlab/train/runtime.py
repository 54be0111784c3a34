"""The run's surroundings: device, threads, gradient checkpointing, progress bar and cost counters.

None of this changes what the loop computes; it sets up where and how it runs and reports how
long it took, so the loop itself (`peftlab.train.loop`) reads as the optimisation algorithm.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from peftlab.core.model import PeftModel
from peftlab.errors import ConfigError
from peftlab.train.config import TrainConfig

LINE_INTERVAL_S = 10.0  # the most often a progress line is printed when the output is not a terminal


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when present, else CPU; "cuda" without a CUDA device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA device is available: use device='auto' or 'cpu'")
    return torch.device(name)


def quantile(ordered: list[float], q: float) -> float:
    """The `q`-quantile of the sorted values `ordered` (the nearest rank at or below it)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def step_time_stats(times: list[float]) -> dict[str, float]:
    """Median, 10th / 90th percentile, mean and count of per-step wall times (seconds)."""
    if not times:
        return {}
    ordered = sorted(times)
    return {"median": statistics.median(ordered), "p10": quantile(ordered, 0.1), "p90": quantile(ordered, 0.9),
            "mean": sum(ordered) / len(ordered), "count": len(ordered)}


def cpu_time_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@contextlib.contextmanager
def runtime(peft_model: PeftModel, config: TrainConfig) -> Iterator[None]:
    """Thread count, gradient checkpointing and train mode for the run, restored afterwards."""
    threads, was_training = torch.get_num_threads(), peft_model.training
    base = peft_model.model
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    if config.gradient_checkpointing:
        if not getattr(base, "supports_gradient_checkpointing", False):
            raise ConfigError(f"{type(base).__name__} does not support gradient checkpointing")
        activation_checkpointing(base, True, {"use_reentrant": False})
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        peft_model.train(was_training)
        if config.gradient_checkpointing:
            activation_checkpointing(base, False)


def activation_checkpointing(base, enable: bool, checkpoint_kwargs: dict | None = None, **options: Any) -> None:
    """Turn activation (gradient) checkpointing of the Hugging Face model `base` on or off.

    Reentrant checkpointing (the transformers default, and what models with their own checkpoint
    code use) skips the backward of a block whose inputs need no grad; with frozen embeddings
    (every PEFT method) nothing upstream needs grad, so the embedding output is made to require
    it. `options` (`every_n_layers`, `offload`) go to transformers as given.
    """
    # transformers 5.x renamed gradient_checkpointing_* to activation_checkpointing_* (the old
    # names warn); both take the kwargs for torch.utils.checkpoint.
    if enable:
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpoint_kwargs, **options)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs, **options)
        base.enable_input_require_grads()
    else:
        disable = getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable
        disable()
        base.disable_input_require_grads()


class ProgressBar:
    """A rich progress bar with loss, rates and ETA; a no-op when disabled.

    When the output is not a terminal (a log file, CI, `| tee`), a live bar cannot be redrawn, so
    the bar falls back to plain lines instead: one at most every `interval` seconds (a step or
    a loss update, whichever comes first after it), one at each change of phase ("evaluate"),
    and a last one when the run ends. `completed` starts a resumed run's bar at the step it
    resumes from; `console` and `clock` are there for tests.
    """

    def __init__(self, total: int, enabled: bool, completed: int = 0, *, interval: float = LINE_INTERVAL_S,
                 console: Console | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        console = console or Console()
        self.lines = enabled and not console.is_terminal
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            disable=not enabled or self.lines, console=console,
        )
        self.total, self.interval, self.clock = total, interval, clock
        self.task = self.bar.add_task("train", total=total, completed=completed, loss="-", rate="")
        self.first, self.started = completed, clock()
        self.last_line = self.started

    def __enter__(self) -> "ProgressBar":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)
        if self.lines and exc[0] is None:
            self._line()

    def advance(self) -> None:
        self.bar.advance(self.task)
        self._line_if_due()

    def show(self, **fields: Any) -> None:
        task = self.bar.tasks[0]
        new_phase = "description" in fields and fields["description"] != task.description
        self.bar.update(self.task, **fields)
        if new_phase and self.lines:
            self._line()
        else:
            self._line_if_due()

    def _line_if_due(self) -> None:
        if self.lines and self.clock() - self.last_line >= self.interval:
            self._line()

    def _line(self) -> None:
        task = self.bar.tasks[0]
        now = self.clock()
        done = int(task.completed)
        rate = (done - self.first) / max(now - self.started, 1e-9)  # steps/s of this process
        eta = f"ETA {(self.total - done) / rate:.0f} s" if rate > 0 and done < self.total else ""
        fields = " ".join(part for part in (f"loss {task.fields['loss']}", task.fields["rate"], eta) if part)
        self.bar.console.print(f"{task.description} step {done}/{self.total} ({100 * done / max(self.total, 1):.0f}%) "
                               f"{fields} elapsed {now - self.started:.0f} s", highlight=False, markup=False)
        self.last_line = now

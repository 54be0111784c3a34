"""The one training loop, for every method.

The loop never asks which method it trains: the optimizer sees `peft_model.trainable_parameters()`
(whatever the active adapters declare) and the forward pass is `peft_model(**batch)` (which runs
any model-level hooks). One optimizer step:

    for each of grad_accum micro-batches (batch_size examples, padded to their longest row):
        loss_i = model(**batch).loss · items_i / items_step    # items: rows or target tokens
        loss_i.backward()                                       # gradients add up
    clip ‖g‖₂ ≤ max_grad_norm;  AdamW step;  lr schedule step;  zero_grad(set_to_none)

Weighting each micro-batch by its share of the step's items makes k micro-batches of b rows give
the same gradient as one batch of k·b rows, for classification and for causal-LM (whose rows
have different numbers of target tokens).

Per-step overhead is kept small because the loop is timed against Hugging Face PEFT: the
parameter dict is built once, the running loss stays on the device and is read (a sync) only
every `log_every` steps, which is also where a NaN / infinite loss is caught.

Everything a resumed run needs lives in one `TrainState` (step, epoch, position in the epoch,
optimizer, scheduler; the data order is recomputed from the seed and the epoch number).
"""

from __future__ import annotations

import contextlib
import math
import resource
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from peftlab.core.model import PeftModel
from peftlab.data.tasks import Task
from peftlab.errors import ConfigError, PeftlabError
from peftlab.train.config import TrainConfig
from peftlab.train.evaluate import evaluate, loss_items, make_collator
from peftlab.train.report import write_run
from peftlab.train.schedule import epoch_order, make_optimizer, make_scheduler, warmup_steps


class TrainingDivergedError(PeftlabError):
    """The training loss became NaN or infinite."""


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
    shows how much of the wall time the run actually computed.
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA device is available: use device='auto' or 'cpu'")
    return torch.device(name)


def _step_time_stats(times: list[float]) -> dict[str, float]:
    if not times:
        return {}
    ordered = sorted(times)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"median": statistics.median(ordered), "p10": quantile(0.1), "p90": quantile(0.9),
            "mean": sum(ordered) / len(ordered), "count": len(ordered)}


def _cpu_time_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@contextlib.contextmanager
def _runtime(peft_model: PeftModel, config: TrainConfig) -> Iterator[None]:
    """Thread count, gradient checkpointing and train mode for the run, restored afterwards."""
    threads, was_training = torch.get_num_threads(), peft_model.training
    base = peft_model.model
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    if config.gradient_checkpointing:
        if not getattr(base, "supports_gradient_checkpointing", False):
            raise ConfigError(f"{type(base).__name__} does not support gradient checkpointing")
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # Reentrant checkpointing (which models with their own checkpoint code may still use)
        # skips the backward of a block whose inputs need no grad; with frozen embeddings (every
        # PEFT method) nothing upstream needs grad, so make the embedding output require it.
        base.enable_input_require_grads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        peft_model.train(was_training)
        if config.gradient_checkpointing:
            base.gradient_checkpointing_disable()
            base.disable_input_require_grads()


class _Progress:
    """A rich progress bar with loss, rates and ETA; a no-op when disabled.

    When the output is not a terminal (a log file, CI), each loss update is printed as a line
    instead, since a live bar cannot be redrawn there.
    """

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled,
        )
        self.lines = enabled and not self.bar.console.is_terminal
        self.total = total
        self.task = self.bar.add_task("train", total=total, loss="-", rate="")

    def __enter__(self) -> "_Progress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def advance(self) -> None:
        self.bar.advance(self.task)

    def show(self, **fields: Any) -> None:
        self.bar.update(self.task, **fields)
        if self.lines and "loss" in fields:
            task = self.bar.tasks[0]
            remaining = task.time_remaining
            self.bar.console.print(f"step {int(task.completed)}/{self.total} loss {fields['loss']} "
                                   f"{fields.get('rate', '')} ETA {remaining or 0:.0f} s", highlight=False)


def train(
    peft_model: PeftModel,
    task: Task,
    tokenizer,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    dev_examples=None,
) -> TrainResult:
    """Train the active adapters of `peft_model` on `task.train`; score on the dev set.

    `dev_examples` replaces `task.dev` for periodic and final evaluation (e.g. a validation split
    from `task.split_validation`). With `out_dir`, the adapter and `metrics.json` are written
    there at the end (see `peftlab.train.report`). The model is left on the run's device, in the
    train/eval mode it had before.
    """
    if not task.train:
        raise ConfigError(f"task {task.name!r} has no training examples")
    params = peft_model.trainable_parameters()
    if not params:
        raise ConfigError("the model has no trainable parameters: apply an adapter first")
    device = resolve_device(config.device)
    dev = task.dev if dev_examples is None else tuple(dev_examples)
    peft_model.to(device)

    batches_per_epoch = math.ceil(len(task.train) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    optimizer = make_optimizer(params, config)
    state = TrainState(0, 0, 0, optimizer, make_scheduler(optimizer, warmup_steps(config, total), total))
    result = TrainResult(steps=0, epochs=0.0, examples_seen=0)

    started, cpu_started = time.perf_counter(), _cpu_time_s()
    with _runtime(peft_model, config), _Progress(total, progress) as bar:
        _run(peft_model, list(params.values()), device, task, tokenizer, config, state, total,
             batches_per_epoch, dev, result, bar)
        evaluated = time.perf_counter()
        if result.evaluations and result.evaluations[-1]["step"] == state.step and not config.generate:
            result.final_metrics = result.evaluations[-1]["dev"]
        elif dev:
            bar.show(description="evaluate")
            result.final_metrics = _evaluate(peft_model, task, tokenizer, config, dev, final=True)
        result.eval_time_s += time.perf_counter() - evaluated
        bar.show(description="done")
    result.wall_time_s = time.perf_counter() - started
    result.cpu_time_s = _cpu_time_s() - cpu_started
    result.peak_rss_mb = _peak_rss_mb()
    if device.type == "cuda":
        result.peak_gpu_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
    if out_dir is not None:
        write_run(out_dir, peft_model, task, config, result)
    return result


def _evaluate(peft_model: PeftModel, task: Task, tokenizer, config: TrainConfig, dev,
              final: bool = False) -> dict[str, Any]:
    return evaluate(peft_model, task, tokenizer, examples=dev, batch_size=config.eval_batch_size,
                    max_length=config.max_length, bf16=config.bf16, chat=config.chat,
                    generate=final and config.generate, max_new_tokens=config.max_new_tokens)


def _step_indices(state: TrainState, config: TrainConfig, num_examples: int, batches_per_epoch: int,
                  orders: dict[int, list[int]]) -> list[list[int]]:
    """The example indices of the next step's micro-batches (a step never spans two epochs)."""
    if state.batch_in_epoch >= batches_per_epoch:
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    if state.epoch not in orders:
        orders.clear()
        orders[state.epoch] = epoch_order(num_examples, config.seed, state.epoch)
    order, size = orders[state.epoch], config.batch_size
    start = state.batch_in_epoch
    stop = min(start + config.grad_accum, batches_per_epoch)
    state.batch_in_epoch = stop
    return [order[j * size:(j + 1) * size] for j in range(start, stop)]


def _run(peft_model: PeftModel, param_list: list[torch.nn.Parameter], device: torch.device, task: Task, tokenizer,
         config: TrainConfig, state: TrainState, total: int, batches_per_epoch: int, dev, result: TrainResult,
         bar: _Progress) -> None:
    collate = make_collator(task, tokenizer, config.max_length, config.chat)
    optimizer, scheduler = state.optimizer, state.scheduler
    orders: dict[int, list[int]] = {}
    step_times: list[float] = []
    window_loss = torch.zeros((), device=device)  # summed step losses since the last log, on device
    window_steps, window_examples, window_start = 0, 0, time.perf_counter()

    torch.manual_seed(config.seed)  # the dropout stream
    peft_model.train()
    optimizer.zero_grad(set_to_none=True)
    while state.step < total:
        step_start = time.perf_counter()
        batches = [collate([task.train[i] for i in rows])
                   for rows in _step_indices(state, config, len(task.train), batches_per_epoch, orders)]
        step_items = max(1, sum(loss_items(b["labels"]) for b in batches))
        step_examples = sum(len(b["labels"]) for b in batches)
        for batch in batches:
            weight = loss_items(batch["labels"]) / step_items
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                loss = peft_model(**batch).loss.float() * weight
            loss.backward()
            window_loss += loss.detach()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(param_list, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        window_steps += 1
        window_examples += step_examples
        result.examples_seen += step_examples
        step_times.append(time.perf_counter() - step_start)
        bar.advance()

        epoch = state.epoch + state.batch_in_epoch / batches_per_epoch
        if state.step % config.log_every == 0 or state.step == total:
            mean_loss = window_loss.item() / window_steps
            if not math.isfinite(mean_loss):
                raise TrainingDivergedError(
                    f"the training loss became {mean_loss} by step {state.step} (checked every "
                    f"{config.log_every} steps): lower the learning rate (now {config.learning_rate}), "
                    "keep max_grad_norm set, or check the data")
            elapsed = time.perf_counter() - window_start
            record = {"step": state.step, "epoch": round(epoch, 4), "loss": mean_loss,
                      "learning_rate": scheduler.get_last_lr()[0],
                      "steps_per_s": window_steps / elapsed, "examples_per_s": window_examples / elapsed}
            result.history.append(record)
            bar.show(loss=f"{mean_loss:.4f}",
                     rate=f"{record['steps_per_s']:.2f} step/s {record['examples_per_s']:.0f} ex/s")
            window_loss.zero_()
            window_steps, window_examples, window_start = 0, 0, time.perf_counter()
        result.steps, result.epochs = state.step, epoch

        if config.eval_every and state.step % config.eval_every == 0 and dev:
            evaluated = time.perf_counter()
            bar.show(description="evaluate")
            metrics = _evaluate(peft_model, task, tokenizer, config, dev)
            result.evaluations.append({"step": state.step, "epoch": round(epoch, 4), "dev": metrics})
            bar.show(description="train")
            result.eval_time_s += time.perf_counter() - evaluated
            window_start += time.perf_counter() - evaluated  # evaluation is not training time
    result.train_time_s = sum(step_times)
    result.step_time = _step_time_stats(step_times)

"""The one training loop, for every method.

The loop never asks which method it trains: the optimizer sees `peft_model.trainable_parameters()`
(whatever the active adapters declare) and the forward pass is `peft_model(**batch)` (which runs
any model-level hooks). One optimizer step:

    for each of grad_accum micro-batches (batch_size examples, padded to their longest row):
        loss_i = model(**batch).loss · items_i / items_step    # items: rows or target tokens
        loss_i.backward()                                       # gradients add up
    (several processes: DDP or FSDP2 sum the gradients over ranks, see `peftlab.train.distributed`)
    clip ‖g‖₂ ≤ max_grad_norm;  AdamW step;  lr schedule step;  zero_grad(set_to_none)

Weighting each micro-batch by its share of the step's items makes k micro-batches of b rows give
the same gradient as one batch of k·b rows, for classification and for causal-LM (whose rows
have different numbers of target tokens).

Per-step overhead is kept small because the loop is timed against Hugging Face PEFT: a decoder's
head and loss are one node (`train.lm_loss`), the parameter dict is built once, the running loss
stays on the device and is read (a sync) only every `log_every` steps, which is also where a NaN /
infinite loss (and, with `stop_if_loss_rises_after`, a rising loss) stops the run.

Everything a resumed run needs lives in one `TrainState` (step, epoch, position in the epoch,
optimizer, scheduler; the data order is recomputed from the seed and the epoch number) plus the
RNG states and the loss record, which `peftlab.train.checkpoint` writes every `checkpoint_every`
steps. A checkpoint is only written from a finite state, so the last one stays good when a run
diverges.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from peftlab.core.model import PeftModel
from peftlab.data.tasks import Task
from peftlab.errors import ConfigError
from peftlab.train import checkpoint, distributed
from peftlab.train.config import TrainConfig
from peftlab.train.evaluate import evaluate, loss_items, make_collator
from peftlab.train.lm_loss import FusedLmHead, head_arguments
from peftlab.train.memory import TensorPeakTracker
from peftlab.train.records import TrainingDivergedError, TrainResult, TrainState
from peftlab.train.report import write_run
from peftlab.train.runtime import (ProgressBar, cpu_time_s, peak_rss_mb, resolve_device, runtime,
                                  step_time_stats)
from peftlab.train.schedule import make_optimizer, make_scheduler, step_indices, warmup_steps


# How far above the first logged loss a later one must be to count as rising: the loss of a sane
# but slow run wanders a few percent around its start (windows of a few noisy batches).
RISING_MARGIN = 0.10


def train(
    peft_model: PeftModel,
    task: Task,
    tokenizer,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    dev_examples=None,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    on_log: Callable[[str, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train the active adapters of `peft_model` on `task.train`; score on the dev set.

    `dev_examples` replaces `task.dev` for periodic and final evaluation (e.g. a validation split
    from `task.split_validation`). With `out_dir`, the adapter and `metrics.json` are written
    there at the end (see `peftlab.train.report`). With `config.checkpoint_every`, checkpoints go
    to `checkpoint_dir` (default `out_dir/checkpoints`); `resume_from` (a checkpoint folder or a
    checkpoints folder) continues a run exactly where its checkpoint left it. Under `torchrun`
    the run is data-parallel (`peftlab.train.distributed`); rank 0 alone writes files and
    evaluates, and the other ranks' results have no dev metrics. The model is left on the run's
    device, in the train/eval mode it had before.

    `on_log(kind, record)` (an experiment tracker, see `peftlab.tracking`) is called on rank 0
    with each history record ("train": step, loss, learning_rate, steps_per_s, examples_per_s)
    and each dev evaluation ("eval": step and the metrics, the final one included).
    """
    if not task.train:
        raise ConfigError(f"task {task.name!r} has no training examples")
    params = peft_model.trainable_parameters()
    if not params:
        raise ConfigError("the model has no trainable parameters: apply an adapter first")
    if config.checkpoint_every and checkpoint_dir is None:
        if out_dir is None:
            raise ConfigError("checkpoint_every is set but there is nowhere to write: pass out_dir or checkpoint_dir")
        checkpoint_dir = Path(out_dir) / checkpoint.CHECKPOINTS
    if config.fsdp and resume_from is not None:
        raise ConfigError("--resume is not available with fsdp (its runs write no checkpoints): start a new run")
    ddp = distributed.setup(config.device)
    engine = distributed.parallelize(peft_model, ddp, fsdp=config.fsdp)
    params = peft_model.trainable_parameters()  # new objects (DTensors) when sharded
    dev = task.dev if dev_examples is None else tuple(dev_examples)

    batches_per_epoch = math.ceil(len(task.train) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    optimizer = make_optimizer(params, config, peft_model.learning_rate_scales())
    state = TrainState(0, 0, 0, optimizer, make_scheduler(optimizer, warmup_steps(config, total), total))
    result = TrainResult(steps=0, epochs=0.0, examples_seen=0)
    loop = _Loop(peft_model, list(params.values()), engine, task, tokenizer, config, state, total,
                 batches_per_epoch, dev, result, checkpoint_dir)
    loop.on_log = on_log if ddp.main else None
    if resume_from is not None:
        loop.resume(checkpoint.find_checkpoint(resume_from))

    started, cpu_started = time.perf_counter(), cpu_time_s()
    with runtime(peft_model, config), ProgressBar(total, progress and ddp.main, state.step) as bar:
        result.threads = torch.get_num_threads()  # as `runtime` set them for the run
        loop.memory = TensorPeakTracker(peft_model, optimizer, ddp.device.type) if config.track_memory else None
        loop.run(bar)
        if loop.memory is not None:
            result.tensor_memory = loop.memory.to_dict()
        evaluated = time.perf_counter()
        if result.evaluations and result.evaluations[-1]["step"] == state.step and not config.generate:
            result.final_metrics = result.evaluations[-1]["dev"]
        elif dev and (ddp.main or engine.sharded):  # sharded, every rank takes part in each forward
            bar.show(description="evaluate")
            with distributed.evaluating(peft_model):
                metrics = _evaluate(peft_model, task, tokenizer, config, dev, final=True)
            result.final_metrics = metrics if ddp.main else {}
            loop.notify("eval", {"step": state.step, **result.final_metrics})
        result.eval_time_s += time.perf_counter() - evaluated
        bar.show(description="done")
    result.wall_time_s = time.perf_counter() - started
    result.cpu_time_s = cpu_time_s() - cpu_started
    result.peak_rss_mb = peak_rss_mb()
    if ddp.device.type == "cuda":
        result.peak_gpu_memory_mb = torch.cuda.max_memory_allocated(ddp.device) / 2**20
    if out_dir is not None:
        with distributed.whole_adapters(peft_model):  # sharded: the adapter tensors gathered on every rank
            if ddp.main:
                write_run(out_dir, peft_model, task, config, result)
    ddp.barrier()
    return result


def training_steps(peft_model: PeftModel, task: Task, tokenizer, config: TrainConfig) -> "_Loop":
    """The loop's own optimizer step over `task.train`, ready to be called again and again.

    `steps = training_steps(...)`, then `steps.step()` runs exactly what a training run runs per
    step (collation, autocast, item-weighted loss, backward, clipping, AdamW, schedule,
    zero_grad); the optimizer state persists between calls as in a run. Single process, no
    logging, no evaluation, no checkpoints: `peftlab compare` times methods with it.
    """
    params = peft_model.trainable_parameters()
    if not params:
        raise ConfigError("the model has no trainable parameters: apply an adapter first")
    engine = distributed.parallelize(peft_model, distributed.Distributed(0, 1, resolve_device(config.device)))
    batches_per_epoch = math.ceil(len(task.train) / config.batch_size)
    total = config.max_steps or 1
    optimizer = make_optimizer(params, config, peft_model.learning_rate_scales())
    state = TrainState(0, 0, 0, optimizer, make_scheduler(optimizer, warmup_steps(config, total), total))
    loop = _Loop(peft_model, list(params.values()), engine, task, tokenizer, config, state, total,
                 batches_per_epoch, (), TrainResult(0, 0.0, 0), None)
    loop.start()
    return loop


def _evaluate(peft_model: PeftModel, task: Task, tokenizer, config: TrainConfig, dev,
              final: bool = False) -> dict[str, Any]:
    return evaluate(peft_model, task, tokenizer, examples=dev, batch_size=config.eval_batch_size,
                    max_length=config.max_length, bf16=config.bf16, chat=config.chat,
                    generate=final and config.generate, max_new_tokens=config.max_new_tokens)


def _nonfinite_loss(value: float, step: int, config: TrainConfig) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"the training loss became {value} by step {step} (checked every {config.log_every} steps): lower the "
        f"learning rate (now {config.learning_rate}), keep max_grad_norm set, or check the data", "nonfinite", step)


class _Loop:
    """The optimisation steps of one run, with logging, checks, evaluation and checkpoints.

    The loss window sums the (item-weighted) step losses since the last log on the device; with
    several ranks each holds its share, summed over the ranks when it is read.
    """

    def __init__(self, peft_model: PeftModel, params: list[torch.nn.Parameter], engine: distributed.Engine,
                 task: Task, tokenizer, config: TrainConfig, state: TrainState, total: int, batches_per_epoch: int,
                 dev, result: TrainResult, checkpoint_dir: str | Path | None) -> None:
        self.model, self.params, self.task, self.tokenizer = peft_model, params, task, tokenizer
        self.engine, self.ddp = engine, engine.dist
        self.config, self.state, self.total, self.batches_per_epoch = config, state, total, batches_per_epoch
        self.dev, self.result, self.checkpoint_dir = dev, result, checkpoint_dir
        self.collate = make_collator(task, tokenizer, config.max_length, config.chat)
        self.orders: dict[int, list[int]] = {}
        self.step_times: list[float] = []
        self.window_loss = torch.zeros((), device=self.ddp.device)  # summed step losses since the last log
        self.window_steps, self.window_examples = 0, 0
        self.resumed: tuple[Path, dict[str, Any]] | None = None  # (checkpoint, its state.json) after resume()
        self.memory: TensorPeakTracker | None = None  # counts live tensor bytes when set (track_memory)
        self.tracked_size = 0  # rows × tokens of the biggest batch the tracker has counted
        self.bar = ProgressBar(total, enabled=False)
        self.lm_head = None if engine.sharded else FusedLmHead.for_model(peft_model.model)  # FSDP: HF's loss

    @property
    def epoch(self) -> float:
        return self.state.epoch + self.state.batch_in_epoch / self.batches_per_epoch

    @functools.cached_property
    def fingerprint(self) -> str:
        return checkpoint.data_fingerprint(self.task.train)

    # --- the tracking hook (`train(on_log=...)`), rank 0 only ---------------------------------------
    on_log: Callable[[str, dict[str, Any]], None] | None = None

    def notify(self, kind: str, record: dict[str, Any]) -> None:
        if self.on_log is not None:
            self.on_log(kind, record)

    def resume(self, folder: Path) -> None:
        record = checkpoint.read_checkpoint(folder)
        checkpoint.check_compatible(record, folder, config=self.config, peft_model=self.model,
                                    fingerprint=self.fingerprint, world_size=self.ddp.world_size)
        checkpoint.restore(folder, record, peft_model=self.model, optimizer=self.state.optimizer,
                           scheduler=self.state.scheduler)
        self.state.step, self.state.epoch, self.state.batch_in_epoch = (
            record["step"], record["epoch"], record["batch_in_epoch"])
        progress = record["progress"]
        self.result.history, self.result.evaluations = progress["history"], progress["evaluations"]
        self.result.examples_seen, self.result.steps = progress["examples_seen"], self.state.step
        self.result.epochs = self.epoch
        window = progress["window"]
        self.window_loss.fill_(window["loss"] if self.ddp.main else 0.0)  # rank 0 carries the whole sum
        self.window_steps, self.window_examples = window["steps"], window["examples"]
        self.resumed = folder, record

    def run(self, bar: ProgressBar) -> None:
        self.bar = bar
        self.start()
        config, state = self.config, self.state
        end = min(self.total, config.stop_after or self.total)
        while state.step < end:
            self.step()
            if state.step % config.log_every == 0 or state.step == end:
                self.log()
            if config.eval_every and state.step % config.eval_every == 0 and self.dev:
                self.evaluate()
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                self.save()  # after the evaluation of the same step, which it then records
        self.result.train_time_s = sum(self.step_times)
        self.result.step_time = step_time_stats(self.step_times)

    def start(self) -> None:
        """Seed (or restore) the dropout streams and enter train mode with no gradients held."""
        if self.resumed is None:
            torch.manual_seed(self.config.seed + 1_000_003 * self.ddp.rank)  # each rank's dropout stream
        else:  # the streams continue where the checkpoint left them
            checkpoint.restore_rng(*self.resumed, self.ddp.rank, self.ddp.device)
        self.window_start = time.perf_counter()
        self.model.train()
        self.state.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """One optimizer step over this rank's share of the next grad_accum micro-batches."""
        started, state, config = time.perf_counter(), self.state, self.config
        rows = step_indices(state, config, len(self.task.train), self.batches_per_epoch, self.orders)
        mine = [self.ddp.shard(micro) for micro in rows]
        batches = [self.collate([self.task.train[i] for i in own]) if own else None for own in mine]
        local_items = [loss_items(b["labels"]) if b is not None else 0 for b in batches]
        step_items = max(1, sum(self.ddp.sum_counts(local_items)))
        shape = max((tuple(b["input_ids"].shape) for b in batches if b is not None), default=(0, 0))
        with self._memory_scope(shape):
            for index, (batch, items) in enumerate(zip(batches, local_items)):
                if batch is None:  # no rows here: a stand-in row of weight 0 keeps the ranks' collectives in step
                    batch = self.collate([self.task.train[rows[index][0]]])
                batch = {k: v.to(self.ddp.device, non_blocking=True) for k, v in batch.items()}
                with self.engine.accumulate(last=index == len(batches) - 1):
                    with torch.autocast(self.ddp.device.type, dtype=torch.bfloat16, enabled=config.bf16), \
                            head_arguments(self.lm_head) as extra:
                        loss = self.engine.module(**batch, **extra).loss.float() * (items / step_items)
                    loss.backward()
                self.window_loss += loss.detach()
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
            state.optimizer.step()
            if self.memory is not None:  # the step's gradients and optimizer state are still alive
                self.memory.end_of_step(self.params, shape=shape)
        state.scheduler.step()
        state.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        step_examples = sum(len(r) for r in rows)
        self.window_steps += 1
        self.window_examples += step_examples
        self.result.examples_seen += step_examples
        self.result.steps, self.result.epochs = state.step, self.epoch
        self.step_times.append(time.perf_counter() - started)
        self.bar.advance()

    def _memory_scope(self, shape: tuple[int, ...]):
        """The tracker, for the steps that can set a new peak; else nothing.

        Counting every op costs Python time, so only these steps are counted: the first two (the
        optimizer state appears in the first) and every step whose batch is bigger than any
        counted before. A step with a batch no bigger than a counted one holds no more tensors:
        what lives across steps (weights, optimizer state) is counted from the first step on.
        """
        size = shape[0] * shape[1] if len(shape) > 1 else 0
        if self.memory is None or (self.state.step >= 2 and size <= self.tracked_size):
            return contextlib.nullcontext()
        self.tracked_size = max(self.tracked_size, size)
        return self.memory

    def _window_sum(self) -> float:
        """The loss window summed over the ranks (a sync); afterwards rank 0 alone holds it."""
        total = self.ddp.sum_(self.window_loss.clone()).item()
        self.window_loss.fill_(total if self.ddp.main else 0.0)
        return total

    def log(self) -> None:
        """Record the window's mean loss; stop on a non-finite or (if asked) a rising loss."""
        step, config = self.state.step, self.config
        mean_loss = self._window_sum() / self.window_steps
        if not math.isfinite(mean_loss):
            raise _nonfinite_loss(mean_loss, step, config)
        history = self.result.history
        fraction = config.stop_if_loss_rises_after
        if (fraction is not None and history and step >= fraction * self.total
                and mean_loss > (1 + RISING_MARGIN) * history[0]["loss"]):
            raise TrainingDivergedError(
                f"the training loss rose from {history[0]['loss']:.4f} (step {history[0]['step']}) to "
                f"{mean_loss:.4f} at step {step} of {self.total} (stop_if_loss_rises_after={fraction}): lower "
                f"the learning rate (now {config.learning_rate})", "rising", step)
        elapsed = time.perf_counter() - self.window_start
        record = {"step": step, "epoch": round(self.epoch, 4), "loss": mean_loss,
                  "learning_rate": self.state.scheduler.get_last_lr()[0],
                  "steps_per_s": self.window_steps / elapsed, "examples_per_s": self.window_examples / elapsed}
        history.append(record)
        self.notify("train", record)
        self.bar.show(loss=f"{mean_loss:.4f}",
                      rate=f"{record['steps_per_s']:.2f} step/s {record['examples_per_s']:.0f} ex/s")
        self.window_loss.zero_()
        self.window_steps, self.window_examples, self.window_start = 0, 0, time.perf_counter()

    def save(self) -> None:
        """Write a checkpoint (rank 0) unless the state is non-finite, which stops the run instead."""
        step, window = self.state.step, self._window_sum()
        if not math.isfinite(window):
            raise _nonfinite_loss(window / max(1, self.window_steps), step, self.config)
        finite = torch.stack([p.detach().isfinite().all() for p in self.params]).all()
        if not bool(finite):  # the last update overflowed although the loss before it was finite
            raise TrainingDivergedError(
                f"the trainable weights became non-finite at step {step}: lower the learning rate (now "
                f"{self.config.learning_rate}) or keep max_grad_norm set", "nonfinite", step)
        rng_states = self.ddp.gather_objects(checkpoint.capture_rng(self.ddp.device))
        if self.ddp.main:
            saved = time.perf_counter()
            state = self.state
            checkpoint.save_checkpoint(
                self.checkpoint_dir, peft_model=self.model, optimizer=state.optimizer, scheduler=state.scheduler,
                position={"step": step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch},
                progress={"history": self.result.history, "evaluations": self.result.evaluations,
                          "examples_seen": self.result.examples_seen,
                          "window": {"loss": window, "steps": self.window_steps, "examples": self.window_examples}},
                config=self.config, fingerprint=self.fingerprint, rng_states=rng_states,
                keep=self.config.keep_checkpoints)
            self.window_start += time.perf_counter() - saved  # writing is not training time
        self.ddp.barrier()

    def evaluate(self) -> None:
        """Score the dev set on rank 0 (the other ranks wait; sharded, they compute with it) and record it."""
        if self.engine.sharded and not self.ddp.main:
            with distributed.evaluating(self.model):
                _evaluate(self.model, self.task, self.tokenizer, self.config, self.dev)
        if self.ddp.main:
            evaluated = time.perf_counter()
            self.bar.show(description="evaluate")
            with distributed.evaluating(self.model):
                metrics = _evaluate(self.model, self.task, self.tokenizer, self.config, self.dev)
            self.result.evaluations.append({"step": self.state.step, "epoch": round(self.epoch, 4), "dev": metrics})
            self.notify("eval", {"step": self.state.step, **metrics})
            self.bar.show(description="train")
            self.result.eval_time_s += time.perf_counter() - evaluated
            self.window_start += time.perf_counter() - evaluated  # evaluation is not training time
        self.ddp.barrier()

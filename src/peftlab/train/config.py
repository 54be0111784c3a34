"""`TrainConfig`: everything about a training run that is not the method's own hyperparameters.

Method hyperparameters (rank, alpha, targets, ...) live in the method's `MethodConfig`; this
config holds the optimisation, data and runtime settings that are the same for every method, so
one loop trains them all and a comparison changes only the method config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from peftlab.core.config import check_choice, check_range
from peftlab.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and runtime settings of one training run.

    learning_rate:    AdamW peak learning rate (adapters like 5e-4..1e-3, full fine-tuning ~5e-5).
    epochs / max_steps: run length; `max_steps` (optimizer steps) wins when set.
    batch_size:       examples per forward pass (a micro-batch).
    grad_accum:       micro-batches per optimizer step; the effective batch is batch_size × grad_accum.
    warmup_ratio / warmup_steps: linear warmup length, as a fraction of all steps or a count
                      (`warmup_steps` wins when set); then linear decay to zero.
    weight_decay:     AdamW decoupled decay on matrices only (never on biases, norms or vectors).
    max_grad_norm:    global L2 clipping of the trainable gradients (None: no clipping).
    seed:             seeds the data order, dropout and (in the CLI) adapter initialisation.
    eval_every:       evaluate on the dev set every N optimizer steps (None: only at the end).
    eval_batch_size:  examples per evaluation forward pass.
    log_every:        update the loss shown and recorded every N steps (each update syncs the device).
    max_length:       tokens per example after truncation (padding is per batch, never to this).
    num_threads:      torch intra-op threads for the run (None: leave torch's setting).
    device:           "auto" (CUDA when present, else CPU) | "cpu" | "cuda".
    bf16:             run forward and loss under bfloat16 autocast (weights stay float32).
    gradient_checkpointing: recompute activations in the backward pass (less memory, ~30% slower).
    chat:             causal-LM prompts go through the tokenizer's chat template.
    generate:         the final evaluation of a causal-LM task also decodes greedily and reports
                      BLEU / ROUGE-L (periodic evaluations report loss and perplexity only).
    max_new_tokens:   decoding length limit for `generate`.
    checkpoint_every: write a checkpoint every N optimizer steps (None: never); see
                      `peftlab.train.checkpoint` for what it holds and where it goes.
    keep_checkpoints: how many of the newest checkpoints stay on disk (older ones are deleted).
    stop_if_loss_rises_after: a fraction f of the run: from step f·total on, a logged window loss
                      more than 10% above the first logged one stops the run (`TrainingDivergedError`, reason
                      "rising"); meant for learning-rate sweeps, where a rising loss wastes time.
    stop_after:       end the run after this many optimizer steps of its schedule (None: run it all):
                      the schedule (warmup, decay) still spans the whole run, so this is its start
                      exactly; learning-rate probes use it.
    fsdp:             with several processes (torchrun), shard every parameter over them with
                      FSDP2 instead of replicating the model (`peftlab.train.distributed`): for
                      models larger than one device. One process trains unsharded. No checkpoints.
    track_memory:     count live tensor bytes during the training steps (`peftlab.train.memory`):
                      the result's `tensor_memory` holds their peak and its split; only the first
                      two steps and those with a bigger batch than any before are counted (a few
                      microseconds per operation there, nothing elsewhere).
    """

    learning_rate: float = 5e-4
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 32
    grad_accum: int = 1
    warmup_ratio: float = 0.06
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    seed: int = 0
    eval_every: int | None = None
    eval_batch_size: int = 64
    log_every: int = 10
    max_length: int = 128
    num_threads: int | None = None
    device: str = "auto"
    bf16: bool = False
    gradient_checkpointing: bool = False
    chat: bool = False
    generate: bool = False
    max_new_tokens: int = 64
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    stop_if_loss_rises_after: float | None = None
    stop_after: int | None = None
    track_memory: bool = False
    fsdp: bool = False

    def __post_init__(self) -> None:
        check_range("learning_rate", self.learning_rate, 0, 1.0, low_inclusive=False)
        check_range("epochs", self.epochs, 0, None, low_inclusive=False)
        for name in ("batch_size", "grad_accum", "eval_batch_size", "log_every", "max_length",
                     "max_new_tokens", "keep_checkpoints"):
            _check_int(name, getattr(self, name), 1)
        for name in ("max_steps", "eval_every", "num_threads", "checkpoint_every", "stop_after"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        if self.warmup_steps is not None:
            _check_int("warmup_steps", self.warmup_steps, 0)
        check_range("warmup_ratio", self.warmup_ratio, 0, 1)
        check_range("weight_decay", self.weight_decay, 0, None)
        if self.max_grad_norm is not None:
            check_range("max_grad_norm", self.max_grad_norm, 0, None, low_inclusive=False)
        if self.stop_if_loss_rises_after is not None:
            check_range("stop_if_loss_rises_after", self.stop_if_loss_rises_after, 0, 1)
        _check_int("seed", self.seed, 0)
        check_choice("device", self.device, DEVICES)
        if self.fsdp and self.checkpoint_every:
            raise ConfigError("checkpoint_every is not available with fsdp (sharded optimizer states are not "
                              "saved): train sharded without checkpoints, or data-parallel without --fsdp")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _check_int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} must be an integer >= {low}")
    check_range(name, value, low, None)

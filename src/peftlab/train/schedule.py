"""Optimizer, learning-rate schedule and data order: the pieces of a run that must be reproducible.

    lr(step) = peak · step / warmup                       for step < warmup
             = peak · (total − step) / (total − warmup)   afterwards, reaching 0 at `total`

`step` counts optimizer steps already taken, so the first update uses lr(0) (zero with warmup,
as in Hugging Face's `get_linear_schedule_with_warmup`).

The data order of epoch e is a permutation drawn from a generator seeded with (seed, e) alone,
so it is the same for every method and a resumed run can recompute it from the epoch number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from peftlab.errors import ConfigError
from peftlab.train.config import TrainConfig
from peftlab.train.records import TrainState


def linear_schedule_factor(step: int, warmup: int, total: int) -> float:
    """The multiplier of the peak learning rate before optimizer step `step` (0-based)."""
    if step < warmup:
        return step / warmup
    if total <= warmup:
        return 1.0
    return max(0.0, (total - step) / (total - warmup))


def warmup_steps(config: TrainConfig, total_steps: int) -> int:
    if config.warmup_steps is not None:
        return min(config.warmup_steps, total_steps)
    return math.ceil(config.warmup_ratio * total_steps)


def make_optimizer(params: dict[str, nn.Parameter], config: TrainConfig,
                   lr_scales: Mapping[str, float] | None = None) -> torch.optim.AdamW:
    """AdamW over `params` (the trainable ones only); decay only on tensors of two or more dims.

    One-dimensional tensors are biases, norm scales and per-channel vectors (IA³ scales, whose
    neutral value is 1, not 0): decaying them toward zero would pull against their meaning.

    `lr_scales` (parameter name -> factor, e.g. `PeftModel.learning_rate_scales()`; missing
    names 1.0) gives each parameter the rate `config.learning_rate · factor`: one parameter
    group per (weight decay, factor). The schedule multiplies every group's rate by the same
    factor, so the ratios hold for the whole run.
    """
    scales = dict(lr_scales or {})
    unknown = sorted(set(scales) - set(params))
    if unknown:
        raise ConfigError(f"lr_scales names {len(unknown)} parameter(s) the optimizer does not train "
                          f"({', '.join(unknown[:3])}): pass the scales of the same model's trainable parameters")
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in params.items():
        scale = float(scales.get(name, 1.0))
        if not scale > 0:
            raise ConfigError(f"lr_scales[{name!r}]={scale!r} must be > 0")
        decay = config.weight_decay if param.ndim >= 2 else 0.0
        groups.setdefault((decay, scale), []).append(param)
    return torch.optim.AdamW([{"params": group, "weight_decay": decay, "lr": config.learning_rate * scale}
                              for (decay, scale), group in groups.items()], lr=config.learning_rate)


def make_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_schedule_factor(step, warmup, total))


def epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """The example indices of `epoch` in training order (a seeded permutation)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_examples, generator=generator).tolist()


def step_indices(state: TrainState, config: TrainConfig, num_examples: int, batches_per_epoch: int,
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

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

import torch
from torch import nn

from peftlab.train.config import TrainConfig


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


def make_optimizer(params: dict[str, nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `params` (the trainable ones only); decay only on tensors of two or more dims.

    One-dimensional tensors are biases, norm scales and per-channel vectors (IA³ scales, whose
    neutral value is 1, not 0): decaying them toward zero would pull against their meaning.
    """
    decay = [p for p in params.values() if p.ndim >= 2]
    no_decay = [p for p in params.values() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate)


def make_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_schedule_factor(step, warmup, total))


def epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """The example indices of `epoch` in training order (a seeded permutation)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_examples, generator=generator).tolist()

"""The domain of every numeric command-line flag, in one table.

`FLAG_DOMAINS` says what makes sense for each flag at all (a count >= 1, a fraction in [0, 1],
a finite number > 0, ...); `declare_flag_domains` makes every command check its flags against
it as they are parsed, so `--lr nan`, `--batch-size 0` or `--max-train -5` end as one `error:`
line before any work starts, whatever command has the flag. The range a value must finally
satisfy stays with the config it fills (`TrainConfig`, a method config: e.g. r <= 4096, dropout
< 1). A new numeric flag must be declared here; the CLI tests check that every command's are.
Light on purpose: `peftlab --help` imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import typer


@dataclass(frozen=True)
class Domain:
    """The values a numeric flag accepts: integers or finite numbers from `low` (excluded if
    `low_open`) up to `high` (excluded if `high_open`). NaN and the infinities are never accepted."""

    integer: bool
    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    @property
    def description(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        if self.high is not None:
            return f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below


COUNT = Domain(integer=True, low=1)
NATURAL = Domain(integer=True, low=0)
CLASSES = Domain(integer=True, low=2)  # a classifier separates at least two classes (one output is regression)
POSITIVE = Domain(integer=False, low=0, low_open=True)
NON_NEGATIVE = Domain(integer=False, low=0)
FRACTION = Domain(integer=False, low=0, high=1)
HELD_OUT = Domain(integer=False, low=0, high=1, high_open=True)  # a part of the rows that leaves some behind

FLAG_DOMAINS: dict[str, Domain] = {
    # method config flags
    "--r": COUNT, "--alpha": POSITIVE, "--dropout": FRACTION, "--block-size": COUNT,
    "--double-quant-block-size": COUNT, "--bottleneck-size": COUNT, "--reduction-factor": POSITIVE,
    "--num-virtual-tokens": COUNT, "--encoder-hidden-size": COUNT, "--lr-ratio": POSITIVE,
    "--embedding-lr-ratio": POSITIVE,
    # run length, optimisation and evaluation
    "--lr": POSITIVE, "--epochs": POSITIVE, "--steps": COUNT, "--batch-size": COUNT, "--grad-accum": COUNT,
    "--warmup-ratio": FRACTION, "--warmup-steps": NATURAL, "--weight-decay": NON_NEGATIVE,
    "--max-grad-norm": NON_NEGATIVE, "--seed": NATURAL, "--eval-every": COUNT, "--log-every": COUNT,
    "--max-length": COUNT, "--max-new-tokens": COUNT, "--threads": COUNT, "--checkpoint-every": COUNT,
    "--keep-checkpoints": COUNT, "--stop-if-loss-rises-after": FRACTION,
    # comparison
    "--seeds": COUNT, "--sweep-seeds": COUNT, "--parallel": COUNT, "--timing-seconds": POSITIVE,
    # data and task
    "--max-train": COUNT, "--max-dev": COUNT, "--dev-fraction": HELD_OUT, "--num-labels": CLASSES, "--seq-len": COUNT,
    "--examples": COUNT, "--tasks": COUNT, "--storage-mb": POSITIVE, "--processes": COUNT,
}


def takes_number(param) -> bool:
    """Whether a typer parameter takes a number (its annotation's bare type, as typer reads it)."""
    bare_type = getattr(param, "bare_type", None)
    return callable(bare_type) and bare_type() in ("int", "float") and not getattr(param, "is_flag", False)


def flag_name(param) -> str:
    """The flag a parameter is known by: its first long option (`--r` for `--r/--rank`)."""
    return next((opt for opt in param.opts if opt.startswith("--")), param.name or "")


def _checked(domain: Domain, flag: str, callback):
    """A parameter callback that refuses values outside `domain`, then runs `callback` (if any)."""
    def check(ctx, param, value):
        if value is not None and not domain.accepts(value):
            raise typer.BadParameter(f"must be {domain.description}, got {value!r}", ctx=ctx, param=param,
                                     param_hint=flag)
        return value if callback is None else callback(ctx, param, value)

    check.domain = domain
    return check


def declare_flag_domains(command) -> Any:
    """Make `command` check each of its numeric flags named in `FLAG_DOMAINS` as it is parsed (in
    place, idempotent). Works on the click command typer builds, whichever click it vendors. A flag
    of the same name that takes text elsewhere (estimate's `--parallel true`, a bottleneck adapter
    setting, vs compare's `--parallel 2`) is left alone."""
    for param in command.params:
        domain = FLAG_DOMAINS.get(flag_name(param)) if takes_number(param) else None
        if domain is not None and getattr(param.callback, "domain", None) is None:
            param.callback = _checked(domain, flag_name(param), param.callback)
    return command

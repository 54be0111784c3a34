"""How sure a comparison is: bootstrap intervals for quality and timing, and which gaps are real.

Quality. Every method is scored on the same dev units (rows for accuracy, macro-F1 and
perplexity; prompts for BLEU and ROUGE-L), once per training seed. The interval of a score comes
from a two-level bootstrap: each of `RESAMPLES` replicates draws the seeds with replacement and
the dev units with replacement, and scores the method on that draw (averaged over the drawn
seeds). A *difference* between two methods is bootstrapped on the SAME draws for both (paired:
the same dev units, the same seed numbers, which share the data order and initialisation), so
the variation the two have in common (hard rows, a lucky order) cancels:

    Δ_r = score_A(seeds_r, units_r) − score_B(seeds_r, units_r),   r = 1..RESAMPLES
    95 % interval = the 2.5th and 97.5th percentiles of Δ_r

An interval of a difference that contains 0 means the two methods cannot be told apart at this
budget. With one seed the interval covers the dev sample only; with `--seeds N` it also covers
training noise.

Timing. Every method is timed once per round, interleaved (see `compare/timing.py`). The ratio of
two entries is computed per round, where both met the same machine state; its figure is the
geometric mean over rounds, and its interval a bootstrap over rounds (`ratio_interval`). An
absolute time is the median over all samples, its interval a bootstrap over rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from peftlab.data.metrics import bleu_from_statistics

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A figure and its 95 % interval."""

    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    @property
    def relative_half_width(self) -> float:
        """Half the interval's width relative to the figure (0.05 = ±5 %)."""
        return (self.high - self.low) / 2 / abs(self.value) if self.value else math.inf

    def to_dict(self) -> dict[str, float | list[float]]:
        return {"value": self.value, "ci": [self.low, self.high]}


def percentile_interval(value: float, replicates: np.ndarray) -> Interval:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Interval(float(value), float(low), float(high))


# --- quality metrics over resampled dev units --------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """A dev metric as a function of resampled units.

    `score(units, draws)` takes one seed's per-unit data (first axis: units) and index draws of
    shape (R, N) and returns the R scores. `higher_is_better` orients rankings; `points` is the
    factor that turns a score into the unit of the report (100 for fractions).
    """

    name: str
    score: Callable[[np.ndarray, np.ndarray], np.ndarray]
    higher_is_better: bool = True
    points: float = 1.0


def _mean(units: np.ndarray, draws: np.ndarray) -> np.ndarray:
    return units[draws].mean(axis=1)


def _perplexity(units: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """units (N, 2): summed loss and target tokens per dev row."""
    sums = units[draws].sum(axis=1)  # (R, 2)
    return np.exp(np.minimum(sums[:, 0] / np.maximum(sums[:, 1], 1), 50.0))


def _bleu(units: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """units (N, 10): sacreBLEU's sufficient statistics per prompt (`data.metrics.bleu_statistics`)."""
    return np.array([bleu_from_statistics(summed) for summed in units[draws].sum(axis=1)])  # (R,)


def macro_f1_metric(labels: Sequence[int], num_labels: int) -> Metric:
    """Macro-F1 of per-row predictions against `labels` (both resampled together)."""
    truth = np.asarray(labels)

    def score(predictions: np.ndarray, draws: np.ndarray) -> np.ndarray:
        p, y = predictions[draws], truth[draws]  # (R, N)
        f1 = []
        for c in range(num_labels):
            tp = ((p == c) & (y == c)).sum(axis=1)
            wrong = ((p == c) != (y == c)).sum(axis=1)
            f1.append(np.where(tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0))
        return np.mean(f1, axis=0)

    return Metric("macro_f1", score, points=100.0)


ACCURACY = Metric("accuracy", _mean, points=100.0)  # units: 1.0 where the prediction is right
ROUGE_L = Metric("rouge_l", _mean)                   # units: per-prompt ROUGE-L (0-100)
BLEU_METRIC = Metric("bleu", _bleu)                 # units: per-prompt sufficient statistics
PERPLEXITY = Metric("perplexity", _perplexity, higher_is_better=False)


# --- the two-level bootstrap -------------------------------------------------------------------
@dataclass(frozen=True)
class Draws:
    """The resampling shared by every method of one metric: dev units and seed positions."""

    units: np.ndarray  # (R, N) indices into the dev units
    seeds: np.ndarray  # (R, S) indices into the seeds

    @classmethod
    def make(cls, units: int, seeds: int, resamples: int = RESAMPLES, seed: int = 0) -> "Draws":
        rng = np.random.default_rng(seed)
        return cls(rng.integers(0, units, size=(resamples, units)), rng.integers(0, seeds, size=(resamples, seeds)))


def replicates(metric: Metric, runs: Sequence[np.ndarray], draws: Draws) -> np.ndarray:
    """(R,) bootstrap scores of one method; `runs` holds one per-unit array per seed.

    A method with one run (a deterministic baseline such as the majority class) uses it for
    every drawn seed.
    """
    per_seed = np.stack([metric.score(np.asarray(run), draws.units) for run in runs])  # (S, R)
    positions = np.minimum(draws.seeds, len(runs) - 1)                                 # (R, S)
    return per_seed[positions, np.arange(draws.units.shape[0])[:, None]].mean(axis=1)


def point(metric: Metric, runs: Sequence[np.ndarray]) -> float:
    """The score on the dev set as it is, averaged over the seeds."""
    whole = np.arange(len(runs[0]))[None, :]
    return float(np.mean([metric.score(np.asarray(run), whole)[0] for run in runs]))


def interval(metric: Metric, runs: Sequence[np.ndarray], draws: Draws) -> Interval:
    return percentile_interval(point(metric, runs), replicates(metric, runs, draws))


def difference(metric: Metric, a: Sequence[np.ndarray], b: Sequence[np.ndarray], draws: Draws) -> Interval:
    """Paired interval of score(a) − score(b) on the same draws."""
    return percentile_interval(point(metric, a) - point(metric, b),
                               replicates(metric, a, draws) - replicates(metric, b, draws))


# --- timing over rounds ------------------------------------------------------------------------
def ratio_interval(numerator: Sequence[float], denominator: Sequence[float], resamples: int = RESAMPLES,
                   seed: int = 0) -> Interval:
    """Geometric mean over rounds of numerator/denominator (paired by round), bootstrapped over rounds."""
    logs = np.log(np.asarray(numerator, dtype=float)) - np.log(np.asarray(denominator, dtype=float))
    draws = np.random.default_rng(seed).integers(0, len(logs), size=(resamples, len(logs)))
    return percentile_interval(math.exp(logs.mean()), np.exp(logs[draws].mean(axis=1)))


def median_interval(per_round: Sequence[Sequence[float]], resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Median of all samples, bootstrapped over rounds (each round keeps its samples together)."""
    rounds = [np.asarray(r, dtype=float) for r in per_round if len(r)]
    draws = np.random.default_rng(seed).integers(0, len(rounds), size=(resamples, len(rounds)))
    medians = [np.median(np.concatenate([rounds[i] for i in draw])) for draw in draws]
    return percentile_interval(float(np.median(np.concatenate(rounds))), np.asarray(medians))

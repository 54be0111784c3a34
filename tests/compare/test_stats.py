"""The bootstrap behind every interval of a comparison, on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from peftlab.compare import stats
from peftlab.compare.stats import Draws
from peftlab.data.metrics import bleu_statistics, corpus_bleu, macro_f1, rouge_l


def _correct(n: int, right: int, seed: int) -> np.ndarray:
    """A 0/1 vector with `right` ones in a seeded order (a method's per-row correctness)."""
    vector = np.zeros(n)
    vector[:right] = 1.0
    return np.random.default_rng(seed).permutation(vector)


def test_identical_score_vectors_have_a_difference_interval_that_contains_zero():
    scores = _correct(400, 300, seed=1)
    draws = Draws.make(400, 1)
    diff = stats.difference(stats.ACCURACY, [scores], [scores.copy()], draws)
    assert diff.value == 0.0 and diff.contains(0.0) and diff.low == diff.high == 0.0


def test_a_shifted_score_vector_is_told_apart_and_the_interval_brackets_the_shift():
    better = _correct(400, 300, seed=1)
    worse = better.copy()
    worse[np.flatnonzero(better)[:40]] = 0.0  # 40 rows the better method gets right, the worse one not
    draws = Draws.make(400, 1)
    diff = stats.difference(stats.ACCURACY, [better], [worse], draws)
    assert diff.value == pytest.approx(0.1)
    assert not diff.contains(0.0) and diff.low > 0.0 and diff.low < 0.1 < diff.high


def test_unpaired_noise_of_the_same_size_is_not_told_apart():
    """Two methods with equal accuracy but different wrong rows: the paired interval still contains 0."""
    draws = Draws.make(400, 1)
    diff = stats.difference(stats.ACCURACY, [_correct(400, 300, seed=1)], [_correct(400, 300, seed=2)], draws)
    assert diff.value == 0.0 and diff.contains(0.0)


def test_the_interval_of_a_score_covers_it_and_narrows_with_more_rows():
    small = stats.interval(stats.ACCURACY, [_correct(100, 75, seed=3)], Draws.make(100, 1))
    large = stats.interval(stats.ACCURACY, [_correct(1600, 1200, seed=3)], Draws.make(1600, 1))
    assert small.low < 0.75 < small.high and large.low < 0.75 < large.high
    assert (large.high - large.low) < (small.high - small.low) / 3  # 16x the rows: ~1/4 the width


def test_seeds_widen_the_interval_by_their_spread():
    """Three seeds of 60 %, 75 % and 90 % on the same rows: the seed draw dominates the interval."""
    runs = [_correct(800, right, seed=5) for right in (480, 600, 720)]
    one = stats.interval(stats.ACCURACY, runs[1:2], Draws.make(800, 1))
    three = stats.interval(stats.ACCURACY, runs, Draws.make(800, 3))
    assert three.value == pytest.approx(0.75)
    assert (three.high - three.low) > 3 * (one.high - one.low)


def test_metric_functions_equal_the_scores_they_resample_on_the_whole_dev_set():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    f1 = stats.macro_f1_metric(labels.tolist(), 3)
    assert stats.point(f1, [predictions]) == pytest.approx(macro_f1(predictions.tolist(), labels.tolist(), 3))
    hypotheses = ["the cat sat on the mat", "a dog runs in the park", "it is raining today"]
    references = [("the cat is on the mat", "a cat sat on a mat"), ("the dog runs in a park",), ("it rains today",)]
    bleu_units = np.asarray(bleu_statistics(hypotheses, references), dtype=float)
    assert stats.point(stats.BLEU_METRIC, [bleu_units]) == pytest.approx(corpus_bleu(hypotheses, references))
    from peftlab.data.metrics import rouge_l_per_hypothesis

    rouge_units = np.asarray(rouge_l_per_hypothesis(hypotheses, references))
    assert stats.point(stats.ROUGE_L, [rouge_units]) == pytest.approx(rouge_l(hypotheses, references))
    losses = np.array([[2.0, 4], [6.0, 4]])  # summed loss, tokens per row: mean loss 1.0
    assert stats.point(stats.PERPLEXITY, [losses]) == pytest.approx(np.e)


def test_ratio_intervals_over_rounds_contain_one_for_identical_entries_and_not_for_a_slower_one():
    """Per-round noise shared by both entries (the machine) cancels in the paired ratio."""
    rng = np.random.default_rng(7)
    machine = np.exp(rng.normal(0.0, 0.3, 12))          # a noisy machine: ±30 % from round to round
    base = 0.1 * machine * np.exp(rng.normal(0, 0.02, 12))
    twin = 0.1 * machine * np.exp(rng.normal(0, 0.02, 12))
    slower = 0.115 * machine * np.exp(rng.normal(0, 0.02, 12))
    same = stats.ratio_interval(twin, base)
    assert same.contains(1.0) and same.relative_half_width < 0.05
    assert stats.ratio_interval(slower, base).low > 1.1


def test_median_interval_brackets_the_median():
    rounds = [[0.10, 0.11], [0.12, 0.10], [0.09, 0.11], [0.10, 0.13]]
    found = stats.median_interval(rounds)
    assert found.value == pytest.approx(0.105) and found.low <= found.value <= found.high

"""benchmarks/common.py: the paired ratio the timing scripts report."""

from benchmark_scripts import load_benchmark


def test_paired_ratio_is_the_median_of_per_round_ratios_with_an_interval_that_holds_it():
    common = load_benchmark("common")
    # Round 5 ran while the machine was loaded: both candidates slowed, their ratio did not.
    numerator, denominator = [2.0, 2.2, 1.8, 2.0, 8.0], [1.0, 1.1, 0.9, 1.0, 4.0]
    ratio = common.paired_ratio(numerator, denominator)
    assert ratio["median"] == 2.0 and ratio["low"] == ratio["high"] == 2.0 and ratio["rounds"] == 5
    spread = common.paired_ratio([1.0, 1.2, 0.9, 1.1, 1.0, 1.3], [1.0] * 6)
    assert spread["low"] < spread["median"] < spread["high"]
    assert 0.9 <= spread["low"] and spread["high"] <= 1.3

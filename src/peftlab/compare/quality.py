"""Quality verdicts: each method's dev score with its interval, whether it learned, and which
differences between methods are real (see `stats.py` for the bootstrap).

Inputs are the training workers' per-seed results: each carries the dev metrics and what every
dev unit contributed (`quality.per_example` / `per_prompt`, see `runs.py`). Outputs:

- per method and metric: the score (mean over seeds) with its 95 % interval, each seed's score
  and, with several seeds, their standard deviation (all in the metric's own units: accuracy as
  a fraction; `points` is the factor the report shows them in);
- the baseline a method must beat to have learned anything: the majority class of the training
  labels (classification) or the base model without training (generation, scored by the timing
  worker); a method whose paired difference to it is below `LEARNING_MARGINS` (or whose
  interval of that difference contains 0) "did not learn at this budget";
- among the methods that learned: the ranking by score, the paired difference between
  neighbours and to the reference method, and tiers: the best method and every method
  indistinguishable from it form the first tier, the best of the rest and those
  indistinguishable from it the second, and so on. A ranking never orders methods within a tier.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from peftlab.compare import stats
from peftlab.compare.stats import Draws, Interval, Metric

# How far above the baseline a method must be to have learned: accuracy points, ROUGE-L / BLEU
# points, or a relative drop of perplexity.
LEARNING_MARGINS = {"accuracy": 5.0, "macro_f1": 5.0, "rouge_l": 5.0, "bleu": 5.0, "perplexity": 0.05}
LOSS_FELL = 0.95  # a final training loss below this fraction of the first logged one "fell"


def metrics_for(kind: str, facts: dict[str, Any], available: Sequence[str]) -> dict[str, Metric]:
    """The dev metrics with intervals for a task: classification accuracy and macro-F1;
    generation ROUGE-L and BLEU (when decoded) and perplexity."""
    if kind == "classification":
        labels = facts["labels"]
        return {"accuracy": stats.ACCURACY, "macro_f1": stats.macro_f1_metric(labels, facts["num_labels"])}
    found = {"perplexity": stats.PERPLEXITY}
    if "rouge_l" in available:
        found = {"rouge_l": stats.ROUGE_L, "bleu": stats.BLEU_METRIC, **found}
    return found


def units(metric: str, quality: dict[str, Any]) -> np.ndarray:
    """One run's per-unit data for `metric` (see the `stats` metric functions)."""
    rows, prompts = quality.get("per_example") or {}, quality.get("per_prompt") or {}
    if metric == "accuracy":
        return (np.asarray(rows["predictions"]) == np.asarray(rows["labels"])).astype(float)
    if metric == "macro_f1":
        return np.asarray(rows["predictions"])
    if metric == "perplexity":
        return np.stack([np.asarray(rows["loss_sum"], dtype=float), np.asarray(rows["tokens"], dtype=float)], axis=1)
    if metric == "rouge_l":
        return np.asarray(prompts["rouge_l"], dtype=float)
    return np.asarray(prompts["bleu_statistics"], dtype=float)  # bleu


def majority_baseline(labels: Sequence[int], train_label_counts: Sequence[int]) -> dict[str, Any]:
    """The predictor that always answers the training set's most frequent label."""
    majority = int(np.argmax(train_label_counts))
    return {"per_example": {"predictions": [majority] * len(labels), "labels": list(labels)},
            "name": "majority class", "label": majority}


def _difference_dict(diff: Interval) -> dict[str, Any]:
    return {"diff": diff.value, "ci": [diff.low, diff.high], "distinguishable": not diff.contains(0.0)}


def _learned(metric: str, m: Metric, diff: Interval, baseline_value: float) -> bool:
    """Above the baseline by the margin, and the interval of the gap excludes 0."""
    if m.higher_is_better:
        return diff.low > 0 and diff.value * m.points >= LEARNING_MARGINS[metric]
    return diff.high < 0 and -diff.value >= LEARNING_MARGINS[metric] * baseline_value


def likely_cause(record_quality: dict[str, Any], budget: dict[str, Any], learning_rate: float,
                 truncated_share: float | None) -> str:
    """Why a method did not learn, read from its training loss."""
    first, last = record_quality.get("first_train_loss"), record_quality.get("final_train_loss")
    if first is None or last is None:
        return "no training loss was recorded"
    if last >= LOSS_FELL * first:
        return (f"its training loss did not fall ({first:.3f} → {last:.3f}): the learning rate "
                f"({learning_rate:g}) does not suit {budget['steps']} steps; try --tune-lr or more --steps")
    cut = (f"; {truncated_share:.0%} of the rows were truncated at max_length {budget['max_length']}"
           if truncated_share else "")
    return (f"its training loss fell ({first:.3f} → {last:.3f}) but the dev score did not follow: "
            f"{budget['steps']} steps × {budget['batch_size']} rows are too few for it{cut}")


def analyse(runs: dict[str, list[dict[str, Any]]], *, kind: str, facts: dict[str, Any],
            baseline: dict[str, Any] | None, reference: str | None) -> dict[str, Any]:
    """Intervals, learned verdicts, ranking, tiers and paired differences (see the module doc).

    runs: method -> the `quality` dicts of its seed runs (same seeds, same order for every method).
    facts: {"labels", "num_labels"} for classification.
    baseline: a `quality`-like dict of the untrained predictor, or None.
    """
    scored = {name: qs for name, qs in runs.items() if qs and all(q.get("per_example") for q in qs)}
    if not scored:
        return {"metric": None, "methods": {}, "ranking": [], "tiers": [], "learned": [], "any_learned": False}
    first = next(iter(scored.values()))[0]
    metrics = metrics_for(kind, facts, list(first.get("dev", {})))
    headline = first["metric"] if first["metric"] in metrics else next(iter(metrics))
    count = {name: len(units(name, first)) for name in metrics}
    seeds = max(len(qs) for qs in scored.values())
    draws = {name: Draws.make(count[name], seeds, seed=i) for i, name in enumerate(metrics)}

    per_method: dict[str, Any] = {}
    runs_of = {name: {metric: [units(metric, q) for q in qs] for metric in metrics} for name, qs in scored.items()}
    for name, data in runs_of.items():
        entry: dict[str, Any] = {"intervals": {}, "seed_values": {}, "sd": {}}
        for metric, m in metrics.items():
            entry["intervals"][metric] = stats.interval(m, data[metric], draws[metric]).to_dict()
            values = [stats.point(m, [run]) for run in data[metric]]
            entry["seed_values"][metric] = values
            entry["sd"][metric] = statistics.stdev(values) if len(values) > 1 else None
        per_method[name] = entry

    m = metrics[headline]
    sign = 1 if m.higher_is_better else -1
    baseline_entry = None
    learned = list(per_method)
    if baseline is not None and (baseline.get("per_example") or baseline.get("per_prompt")):
        base_runs = [units(headline, baseline)]
        base_value = stats.point(m, base_runs)
        baseline_entry = {"name": baseline.get("name", "baseline"),
                          **stats.interval(m, base_runs, draws[headline]).to_dict()}
        learned = []
        for name, data in runs_of.items():
            diff = stats.difference(m, data[headline], base_runs, draws[headline])
            per_method[name]["vs_baseline"] = _difference_dict(diff)
            per_method[name]["learned"] = _learned(headline, m, diff, base_value)
            if per_method[name]["learned"]:
                learned.append(name)
    ranking = sorted(learned, key=lambda n: -sign * per_method[n]["intervals"][headline]["value"])

    def paired(a: str, b: str) -> dict[str, Any]:
        diff = stats.difference(m, runs_of[a][headline], runs_of[b][headline], draws[headline])
        return {"a": a, "b": b, **_difference_dict(diff)}

    pairs = [paired(a, b) for i, a in enumerate(ranking) for b in ranking[i + 1:]]
    distinguishable = {(p["a"], p["b"]): p["distinguishable"] for p in pairs}
    tiers: list[list[str]] = []
    left = list(ranking)
    while left:
        top = left[0]
        tier = [top] + [n for n in left[1:] if not distinguishable[(top, n)]]
        tiers.append(tier)
        left = [n for n in left if n not in tier]
    vs_reference = {}
    if reference in runs_of:
        vs_reference = {name: paired(name, reference) for name in runs_of if name != reference}
    return {"metric": headline, "points": m.points, "higher_is_better": m.higher_is_better,
            "seeds": seeds, "methods": per_method, "baseline": baseline_entry,
            "ranking": ranking, "tiers": tiers, "learned": learned, "any_learned": bool(learned),
            "neighbours": [p for p in pairs if ranking.index(p["b"]) == ranking.index(p["a"]) + 1],
            "pairs": pairs, "reference": reference if reference in runs_of else None, "vs_reference": vs_reference}

"""Scores for classification (accuracy, macro-F1) and generation (BLEU, ROUGE-L).

Accuracy and macro-F1 are fractions in [0, 1]. BLEU and ROUGE-L are on the 0-100 scale that the
E2E / LoRA papers report. Generation metrics take one hypothesis per *prompt* and the full tuple
of that prompt's references (`Task.dev_references`), because E2E is scored multi-reference:
an output is right if it matches any of the ~8 human sentences for its meaning representation.
"""

from __future__ import annotations

from typing import Sequence

import sacrebleu
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from peftlab.data.readers import DataError


def _check_lengths(a: Sequence, b: Sequence, what: str) -> None:
    if len(a) != len(b):
        raise DataError(f"{len(a)} predictions but {len(b)} {what}")
    if not a:
        raise DataError("no predictions to score")


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of positions where prediction == label."""
    _check_lengths(predictions, labels, "labels")
    return sum(int(p) == int(y) for p, y in zip(predictions, labels)) / len(labels)


def macro_f1(predictions: Sequence[int], labels: Sequence[int], num_labels: int | None = None) -> float:
    """Unweighted mean over classes of F1 = 2·TP / (2·TP + FP + FN).

    Classes are `range(num_labels)` when given, else those occurring in labels or predictions;
    a class with no true and no predicted example scores 0, as in scikit-learn's default.
    """
    _check_lengths(predictions, labels, "labels")
    pairs = [(int(p), int(y)) for p, y in zip(predictions, labels)]
    classes = range(num_labels) if num_labels is not None else sorted({c for pair in pairs for c in pair})
    scores = []
    for c in classes:
        tp = sum(p == c and y == c for p, y in pairs)
        wrong = sum((p == c) != (y == c) for p, y in pairs)  # FP + FN
        scores.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
    return sum(scores) / len(scores)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """sacreBLEU corpus score (default 13a tokenisation) with a variable number of references
    per hypothesis: sacreBLEU wants reference *streams*, so group i's j-th reference goes to
    stream j and groups with fewer references contribute None there."""
    _check_lengths(hypotheses, references, "reference groups")
    if any(len(refs) == 0 for refs in references):
        raise DataError("every hypothesis needs at least one reference")
    width = max(len(refs) for refs in references)
    streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]
    return sacrebleu.corpus_bleu(list(hypotheses), streams).score


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> list[list[int]]:
    """Per hypothesis, sacreBLEU's sufficient statistics [sys_len, ref_len, matches for n = 1..4,
    totals for n = 1..4]. Corpus BLEU is a function of their sums (`bleu_from_statistics`), which
    is what lets a bootstrap resample prompts without re-tokenising."""
    _check_lengths(hypotheses, references, "reference groups")
    bleu, rows = BLEU(), []
    for hypothesis, refs in zip(hypotheses, references):
        score = bleu.corpus_score([hypothesis], [[ref] for ref in refs])
        rows.append([score.sys_len, score.ref_len, *score.counts, *score.totals])
    return rows


def bleu_from_statistics(summed: Sequence[int]) -> float:
    """Corpus BLEU from summed `bleu_statistics` rows (sacreBLEU's default exponential smoothing)."""
    summed = [int(v) for v in summed]
    return BLEU.compute_bleu(summed[2:6], summed[6:10], summed[0], summed[1], smooth_method="exp").score


def rouge_l_per_hypothesis(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
    """ROUGE-L F-measure × 100 (rouge-score, no stemming) of each hypothesis, best over its references."""
    _check_lengths(hypotheses, references, "reference groups")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [100.0 * max(scorer.score(ref, hyp)["rougeL"].fmeasure for ref in refs)
            for hyp, refs in zip(hypotheses, references)]


def rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """ROUGE-L (see `rouge_l_per_hypothesis`) averaged over hypotheses."""
    best = rouge_l_per_hypothesis(hypotheses, references)
    return sum(best) / len(best)


def generation_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"bleu": ..., "rouge_l": ...} for one hypothesis per reference group."""
    return {"bleu": corpus_bleu(hypotheses, references), "rouge_l": rouge_l(hypotheses, references)}

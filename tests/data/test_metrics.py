"""Metrics against hand-computed values and against sacreBLEU called directly."""

import pytest
import sacrebleu

from peftlab.data import DataError, accuracy, corpus_bleu, generation_scores, macro_f1, rouge_l


def test_accuracy_and_macro_f1_by_hand():
    predictions = [0, 0, 1, 1, 1, 2]
    labels = [0, 1, 1, 1, 2, 2]
    assert accuracy(predictions, labels) == pytest.approx(4 / 6)
    # class 0: TP1 FP1 FN0 -> 2/3; class 1: TP2 FP1 FN1 -> 4/6; class 2: TP1 FP0 FN1 -> 2/3
    assert macro_f1(predictions, labels) == pytest.approx((2 / 3 + 4 / 6 + 2 / 3) / 3)
    # An absent class declared through num_labels scores 0 and pulls the mean down.
    assert macro_f1([0, 1], [0, 1], num_labels=3) == pytest.approx(2 / 3)
    with pytest.raises(DataError, match="2 predictions but 1"):
        accuracy([0, 1], [0])


def test_bleu_matches_sacrebleu_with_variable_reference_counts():
    hypotheses = ["the cat sat on the mat", "a dog ran in the park today", "it rains"]
    references = [
        ("the cat sat on a mat", "there is a cat on the mat"),
        ("a dog ran in the park",),
        ("it is raining", "rain falls", "it rains a lot"),
    ]
    streams = [
        ["the cat sat on a mat", "a dog ran in the park", "it is raining"],
        ["there is a cat on the mat", None, "rain falls"],
        [None, None, "it rains a lot"],
    ]
    expected = sacrebleu.corpus_bleu(hypotheses, streams).score
    assert corpus_bleu(hypotheses, references) == pytest.approx(expected)
    assert 0 < expected < 100
    exact = "the same five words here"  # >= 4 tokens, so 4-gram precision is defined
    assert corpus_bleu([exact], [("other", exact)]) == pytest.approx(100.0)


def test_rouge_l_is_best_reference_then_mean():
    # "the cat sat" vs "the cat sat on the mat": LCS 3, P = 3/3, R = 3/6, F = 2/3.
    # "a dog" vs "the dog": LCS 1, P = R = 1/2, F = 1/2; vs "dog a": LCS 1 too -> best 1/2.
    hypotheses = ["the cat sat", "a dog"]
    references = [("the cat sat on the mat", "mat"), ("the dog", "dog a")]
    assert rouge_l(hypotheses, references) == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert rouge_l(["x y"], [("q", "x y")]) == pytest.approx(100.0)


def test_generation_scores_keys():
    scores = generation_scores(["a b c d"], [("a b c d",)])
    assert scores == {"bleu": pytest.approx(100.0), "rouge_l": pytest.approx(100.0)}
    with pytest.raises(DataError, match="at least one reference"):
        corpus_bleu(["a"], [()])

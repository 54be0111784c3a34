"""Quality verdicts on constructed dev results (baselines, learned or not, tiers, claims) and the
max_length fitted to the data."""

from __future__ import annotations

import numpy as np

from peftlab.compare.claims import NOT_CHECKED, NOT_SEEN, SEEN, UNDECIDED, Claim, check_claim
from peftlab.compare.quality import analyse, majority_baseline

LABELS = [0, 1] * 300  # 600 dev rows, balanced


def _quality(correct_rows: int, seed: int, first_loss: float = 0.69, final_loss: float = 0.4) -> dict:
    """A method's quality record whose predictions are right on `correct_rows` seeded rows."""
    rng = np.random.default_rng(seed)
    right = set(rng.permutation(len(LABELS))[:correct_rows].tolist())
    predictions = [y if i in right else 1 - y for i, y in enumerate(LABELS)]
    return {"metric": "accuracy", "value": correct_rows / len(LABELS), "dev": {"accuracy": correct_rows / len(LABELS)},
            "per_example": {"predictions": predictions, "labels": LABELS},
            "first_train_loss": first_loss, "final_train_loss": final_loss}


def _analyse(accuracies: dict[str, int]) -> dict:
    runs = {name: [_quality(right, seed=i)] for i, (name, right) in enumerate(accuracies.items())}
    baseline = majority_baseline(LABELS, [310, 290])  # the training set's majority: label 0
    return analyse(runs, kind="classification", facts={"labels": LABELS, "num_labels": 2},
                   baseline=baseline, reference="full")


def test_a_method_near_the_majority_class_did_not_learn_and_is_not_ranked():
    found = _analyse({"full": 480, "lora": 477, "prompt": 312})  # 80 %, 79.5 %, 52 % (majority 50 %)
    assert found["baseline"]["value"] == 0.5
    assert found["methods"]["prompt"]["learned"] is False and "prompt" not in found["ranking"]
    assert found["methods"]["full"]["learned"] and found["methods"]["lora"]["learned"]


def test_indistinguishable_methods_share_a_tier_and_a_clear_gap_makes_a_new_one():
    found = _analyse({"full": 480, "lora": 477, "ia3": 420})  # 80 %, 79.5 %, 70 %
    assert found["ranking"] == ["full", "lora", "ia3"]
    assert found["tiers"] == [["full", "lora"], ["ia3"]]
    lora_vs_full = found["vs_reference"]["lora"]
    assert lora_vs_full["ci"][0] < 0 < lora_vs_full["ci"][1] and not lora_vs_full["distinguishable"]
    assert found["vs_reference"]["ia3"]["distinguishable"] and found["vs_reference"]["ia3"]["ci"][1] < 0
    assert [(p["a"], p["b"]) for p in found["neighbours"]] == [("full", "lora"), ("lora", "ia3")]


def test_when_no_method_learned_there_is_no_ranking():
    found = _analyse({"full": 310, "lora": 300, "prompt": 305})
    assert not found["any_learned"] and found["ranking"] == [] and found["tiers"] == []


def test_seed_runs_give_mean_and_spread():
    runs = {"full": [_quality(480, 0), _quality(450, 1), _quality(420, 2)],
            "lora": [_quality(470, 3), _quality(460, 4), _quality(430, 5)]}
    found = analyse(runs, kind="classification", facts={"labels": LABELS, "num_labels": 2},
                    baseline=majority_baseline(LABELS, [1, 0]), reference="full")
    full = found["methods"]["full"]
    assert full["seed_values"]["accuracy"] == [0.8, 0.75, 0.7] and abs(full["sd"]["accuracy"] - 0.05) < 1e-12
    assert abs(full["intervals"]["accuracy"]["value"] - 0.75) < 1e-12 and found["seeds"] == 3


def _results(accuracies: dict[str, int]) -> dict:
    quality = _analyse(accuracies)
    return {"quality": quality, "methods": [{"method": name, "measurements": {"quality": {"value": 1}}}
                                            for name in accuracies]}


def test_claims_are_decided_on_intervals():
    close = Claim("", "lora", "close", ("full",), 2.0)
    behind = Claim("", "prompt", "behind", ("full", "lora"), 2.0)
    results = _results({"full": 480, "lora": 477, "prompt": 420})  # lora −0.5, prompt −10 points
    assert check_claim(behind, results)[0] == SEEN
    assert check_claim(close, results)[0] in (SEEN, UNDECIDED)  # 600 rows: ±~2.5 points around −0.5
    assert check_claim(close, _results({"full": 480, "lora": 420, "prompt": 410}))[0] == NOT_SEEN
    assert check_claim(behind, _results({"full": 480, "lora": 477, "prompt": 476}))[0] == UNDECIDED
    assert check_claim(behind, _results({"full": 480, "lora": 477, "prompt": 520}))[0] == NOT_SEEN


def test_a_claim_about_a_method_that_did_not_learn_is_not_checked():
    behind = Claim("", "prompt", "behind", ("full", "lora"), 2.0)
    verdict, detail = check_claim(behind, _results({"full": 480, "lora": 477, "prompt": 305}))
    assert verdict == NOT_CHECKED and "did not learn" in detail


def test_max_length_is_fitted_to_the_longest_row_and_cut_rows_are_counted():
    from train_helpers import minilm_tokenizer

    from peftlab.compare.lengths import fit_max_length
    from peftlab.data.tasks import ClassificationExample, Task

    tokenizer = minilm_tokenizer()
    short, long = "good film", " ".join(["word"] * 40)
    task = Task("pairs", "classification",
                train=(ClassificationExample(short, 0, short), ClassificationExample(long, 1, long)),
                dev=(ClassificationExample(short, 1, long),), label_names=("0", "1"))
    longest = len(tokenizer(long, long)["input_ids"])  # a pair counts both texts and 3 special tokens
    fitted = fit_max_length(task, tokenizer, cap=256)
    assert fitted["longest"] == longest and fitted["max_length"] == 8 * -(-longest // 8)
    assert fitted["train_truncated"] == fitted["dev_truncated"] == 0 and fitted["warning"] is None
    capped = fit_max_length(task, tokenizer, cap=32)
    assert capped["max_length"] == 32 and capped["train_truncated"] == 1 and capped["dev_truncated"] == 1
    assert "raise --max-length" in capped["warning"]
    given = fit_max_length(task, tokenizer, cap=256, given=16)
    assert given["max_length"] == 16 and not given["chosen_from_data"]

"""--from-report: results.json validation, the Pareto front, constraints, and the sentences that
say where a measurement overrides the rule of thumb."""

import json
import re

import pytest

from peftlab.choose import ChooseInputs, ReportError, pareto_front, read_results, recommend_from_report


def record(method, quality, memory_gb, step_s, adapter_mb, **extra):
    return {"method": method, "config": {}, **extra,
            "measurements": {"quality": quality, "peak_memory_bytes": int(memory_gb * 1e9),
                             "step_time_s": step_s, "adapter_bytes": int(adapter_mb * 1e6),
                             "trainable_params": 1000}}


# SST-2-like accuracies (fractions). adapters is dominated by lora on every objective; full is
# the most accurate but largest; prefix failed.
RECORDS = [
    record("full", 0.91, 5.0, 0.50, 400.0),
    record("lora", 0.90, 2.0, 0.20, 1.0),
    record("adapters", 0.895, 2.2, 0.30, 10.0),
    record("ia3", 0.88, 2.1, 0.25, 0.2),
    record("prompt", 0.80, 1.9, 0.15, 0.07),
    {"method": "prefix", "config": {"num_virtual_tokens": 20}, "error": "out of memory"},
]


def write(tmp_path, data):
    (tmp_path / "results.json").write_text(json.dumps(data))
    return tmp_path


def test_pareto_front(tmp_path):
    records = read_results(write(tmp_path, RECORDS))
    front = {records[i].method for i in pareto_front(records)}
    assert front == {"full", "lora", "ia3", "prompt"}


def test_ranking_under_constraints_and_override_sentences(tmp_path):
    result = recommend_from_report(write(tmp_path, RECORDS), ChooseInputs(task="classification", memory=4))
    assert [c.method for c in result.choices] == ["lora", "ia3", "prompt", "adapters"]
    assert [c.on_front for c in result.choices] == [True, True, True, False]
    assert result.choices[-1].dominated_by == ("LoRA",)
    excluded = dict(result.excluded)
    assert excluded["full fine-tuning"].startswith("peak memory 5.00 GB > 4 GB")
    assert excluded["prefix tuning"] == "failed: out of memory"
    said = "the rule of thumb said prompt tuning for classification (source 003, Decision Tree"
    assert any(line.startswith("measured: prompt tuning 10.0 points below LoRA on your data; " + said)
               for line in result.overrides)
    assert any(line.startswith("measured: IA³ 2.0 points below LoRA") for line in result.overrides)
    assert not any("adapters" in line for line in result.overrides)  # 0.5 points: within noise
    assert any(line.startswith("measured: prefix tuning failed on your setup (out of memory)")
               for line in result.overrides)


def test_without_memory_limit_the_most_accurate_wins_and_the_override_says_so(tmp_path):
    result = recommend_from_report(write(tmp_path, RECORDS), ChooseInputs(task="classification"))
    assert result.choices[0].method == "full"
    assert ("measured: full fine-tuning is the best fit on your data; the rule of thumb did not "
            "recommend it for classification") in result.overrides
    assert any(line.startswith("measured: LoRA 1.0 points below full fine-tuning") for line in result.overrides)


def test_storage_and_latency_constraints(tmp_path):
    folder = write(tmp_path, RECORDS)
    result = recommend_from_report(folder, ChooseInputs(task="classification", storage_mb=0.5,
                                                        latency_critical=True))
    assert [c.method for c in result.choices] == ["ia3", "prompt"]
    excluded = dict(result.excluded)
    assert "adapter 1.0 MB > 0.5 MB per task" == excluded["LoRA"]
    assert any("LoRA breaks your constraints" in line for line in result.overrides)


def test_latency_excludes_methods_with_inference_overhead(tmp_path):
    result = recommend_from_report(write(tmp_path, RECORDS), ChooseInputs(task="generation",
                                                                          latency_critical=True))
    assert "adapters" not in [c.method for c in result.choices]
    assert dict(result.excluded)["adapters"].startswith("latency critical")


def test_accepts_an_object_with_results_and_bleu_scale(tmp_path):
    data = {"results": [record("lora", 60.0, 2, 0.2, 1), record("prefix", 55.0, 2, 0.2, 1)]}
    result = recommend_from_report(write(tmp_path, data), ChooseInputs(task="style-persona"))
    assert result.choices[0].method == "lora"
    assert any(line.startswith("measured: prefix tuning 5.0 points below LoRA") for line in result.overrides)


def test_json_output(tmp_path):
    out = recommend_from_report(write(tmp_path, RECORDS), ChooseInputs(task="classification")).to_dict()
    parsed = json.loads(json.dumps(out))
    assert set(parsed) == {"schema", "from_report", "inputs", "choices", "excluded", "overrides",
                           "rule_of_thumb"}
    assert set(parsed["choices"][0]) == {"rank", "method", "label", "config", "measurements",
                                         "on_front", "dominated_by"}
    assert parsed["rule_of_thumb"][:2] == ["lora", "prompt"]


BAD = [
    ([{"config": {}}], "record 0: 'method' must be a method name"),
    ([record("lora", "high", 1, 0.1, 1)], "record 0 (lora): measurements.quality must be a number"),
    ([{"method": "lora", "measurements": {"quality": 1}}], "measurements.peak_memory_bytes is missing"),
    ([record("lora", 0.9, 1, 0, 1)], "measurements.step_time_s must be a positive number"),
    ([{"method": "lora"}], "'measurements' must be an object (or give 'error')"),
    ({"records": []}, "expected a non-empty list of method records"),
    ([], "expected a non-empty list"),
]


@pytest.mark.parametrize("data, message", BAD, ids=[m for _, m in BAD])
def test_malformed_results_name_the_field(tmp_path, data, message):
    with pytest.raises(ReportError, match=re.escape(message)):
        read_results(write(tmp_path, data))


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(ReportError, match="report folder .* not found"):
        read_results(tmp_path / "nope")
    with pytest.raises(ReportError, match=r"results.json not found; run `peftlab compare --out"):
        read_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ReportError, match="is not valid JSON"):
        read_results(tmp_path)


def compare_record(method, metric, value, gpu_mb, median_ms, file_bytes, error=None):
    """A record in `peftlab compare`'s own layout (peftlab.compare/1)."""
    return {"method": method, "run_info": {}, "config": {"learning_rate": 1e-3}, "estimates": {},
            "measurements": {"params": {"trainable": 10}, "adapter_file_bytes": file_bytes,
                             "memory": {"peak_rss_mb": 900.0, "peak_gpu_mb": gpu_mb},
                             "step_time": {"median_ms": median_ms},
                             "quality": {"metric": metric, "value": value}},
            "error": error}


def test_reads_the_compare_schema(tmp_path):
    data = {"schema": "peftlab.compare/1", "methods": [
        compare_record("lora", "accuracy", 0.90, 1024.0, 200.0, 10**6),
        compare_record("prompt", "accuracy", 0.85, None, 150.0, 10**4),
        compare_record("prefix", "accuracy", None, None, None, 0,
                       error={"phase": "train", "type": "OutOfMemoryError", "message": "CUDA"})]}
    records = read_results(write(tmp_path, data))
    lora, prompt, prefix = records
    assert lora.measurements.peak_memory_bytes == 2**30 and lora.measurements.step_time_s == 0.2
    assert prompt.measurements.peak_memory_bytes == 900 * 2**20  # no GPU: the process's RSS
    assert prefix.error == "OutOfMemoryError: CUDA (train)"
    result = recommend_from_report(tmp_path, ChooseInputs(task="classification"))
    assert any(line.startswith("measured: prompt tuning 5.0 points below LoRA") for line in result.overrides)


def test_perplexity_is_lower_is_better(tmp_path):
    data = {"schema": "peftlab.compare/1", "methods": [
        compare_record("lora", "perplexity", 12.0, 1024.0, 200.0, 10**6),
        compare_record("prefix", "perplexity", 15.5, 1024.0, 200.0, 10**6)]}
    result = recommend_from_report(write(tmp_path, data), ChooseInputs(task="generation"))
    assert [c.method for c in result.choices] == ["lora", "prefix"]
    assert result.choices[1].dominated_by == ("LoRA",)
    assert any(line.startswith("measured: prefix tuning perplexity 15.50 vs 12.00 for LoRA on your data")
               for line in result.overrides)


def test_compare_schema_errors_name_the_nested_field(tmp_path):
    data = {"methods": [compare_record("lora", "accuracy", None, 1.0, 1.0, 1)]}
    with pytest.raises(ReportError, match=r"record 0 \(lora\): measurements.quality.value must be a number"):
        read_results(write(tmp_path, data))


def _with_intervals(method, value, ci, learned=True, memory_mb=900.0, median_ms=200.0, file_bytes=10**6):
    found = compare_record(method, "accuracy", value, None, median_ms, file_bytes)
    found["measurements"]["memory"]["peak_rss_mb"] = memory_mb
    found["measurements"]["quality"].update({"ci": ci, "learned": learned})
    return found


def test_indistinguishable_qualities_are_ties_and_a_method_that_did_not_learn_is_not_recommended(tmp_path):
    """compare/2: lora and ia3 cannot be told apart (their paired interval contains 0), so the
    cheaper ia3 is not dominated and no sentence puts it below lora; prompt did not learn."""
    data = {"schema": "peftlab.compare/2",
            "quality": {"pairs": [{"a": "lora", "b": "ia3", "distinguishable": False},
                                  {"a": "lora", "b": "adapters", "distinguishable": True},
                                  {"a": "ia3", "b": "adapters", "distinguishable": True}]},
            "methods": [_with_intervals("lora", 0.80, [0.77, 0.83], memory_mb=1000.0, file_bytes=10**6),
                        _with_intervals("ia3", 0.79, [0.76, 0.82], memory_mb=950.0, file_bytes=10**5),
                        _with_intervals("adapters", 0.74, [0.71, 0.77], memory_mb=1200.0, file_bytes=10**7),
                        _with_intervals("prompt", 0.52, [0.49, 0.55], learned=False)]}
    records = read_results(write(tmp_path, data))
    assert records[0].ties == ("ia3",) and records[1].ties == ("lora",) and records[0].intervals
    assert records[0].measurements.quality_ci == (0.77, 0.83) and records[3].measurements.learned is False
    result = recommend_from_report(tmp_path, ChooseInputs(task="classification"))
    choices = {c.method: c for c in result.choices}
    assert choices["ia3"].on_front and choices["ia3"].rank == 1  # tied quality, cheaper everywhere
    assert choices["lora"].dominated_by == ("IA³",)
    assert dict(result.excluded)["prompt tuning"].startswith("did not learn")
    assert not any(line.startswith("measured: LoRA") and "points below" in line for line in result.overrides)
    assert any("cannot be told apart in quality" in line for line in result.overrides)
    assert any(line.startswith("measured: adapters 5.0 points below IA³") for line in result.overrides)
    assert any(line.startswith("measured: prompt tuning did not learn at the comparison's budget")
               for line in result.overrides)

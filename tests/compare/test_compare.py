"""`peftlab compare` end to end on a tiny BERT (real MiniLM tokenizer) and a toy task.

One comparison runs once per module (three training workers and the timing worker, a few
seconds each) with one method broken on purpose; the tests read what it wrote.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from train_helpers import write_tiny_model, write_toy_data

from peftlab.compare import make_plan, run_compare
from peftlab.compare.report import CHART_TITLES
from peftlab.compare.results import SCHEMA, schema_problems

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(steps=3, batch_size=8, max_length=16, eval_batch_size=16, timing_steps=1,
            timing_min_rounds=2, timing_seconds=2.0, lr_choice="literature", latency_batch=4, latency_reps=1)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    model, data = write_tiny_model(root / "model"), write_toy_data(root / "data", train=48, dev=16)
    plan = make_plan(model=str(model), data=str(data), methods="full,lora,prompt", threads=1)
    # prompt tuning with zero virtual tokens: its config raises inside the worker.
    broken = dataclasses.replace(plan.method("prompt"), fields={"num_virtual_tokens": 0})
    plan = dataclasses.replace(plan, budget=dataclasses.replace(plan.budget, **TINY),
                               methods=tuple(broken if m.method == "prompt" else m for m in plan.methods))
    out = root / "out"
    results = run_compare(plan, out, progress=False, command="peftlab compare (test)")
    return results, out


def test_results_json_follows_the_schema(compared):
    results, out = compared
    written = json.loads((out / "results.json").read_text())
    assert written["schema"] == SCHEMA
    assert schema_problems(written) == []
    assert [r["method"] for r in written["methods"]] == ["full", "lora", "prompt"]
    info = written["methods"][0]["run_info"]
    assert info["command"] == "peftlab compare (test)" and "torch" in info["versions"]


def test_measured_methods_have_every_figure_and_an_estimate(compared):
    results, _ = compared
    for record in results["methods"][:2]:
        m = record["measurements"]
        assert record["error"] is None
        assert m["params"]["trainable"] > 0 and m["adapter_file_bytes"] > 0
        assert m["memory"]["peak_rss_mb"] >= m["memory"]["loaded_rss_mb"] > 0
        peak = m["memory"]["tensor_peak"]
        assert peak["peak_mb"] > 0 and peak["batch_shape"][0] == 8
        assert peak["weights_mb"] + peak["gradients_mb"] + peak["optimizer_mb"] + peak["activations_mb"] == \
            pytest.approx(peak["peak_mb"])
        assert m["step_time"]["rounds"] >= 2 and m["step_time"]["ci_ms"][0] <= m["step_time"]["median_ms"]
        ratio = m["latency"]["unmerged_ratio"]
        assert m["latency"]["unmerged"]["median_ms"] > 0 and ratio["ci"][0] <= ratio["value"] <= ratio["ci"][1]
        quality = m["quality"]
        assert 0.0 <= quality["value"] <= 1.0 and quality["metric"] == "accuracy"
        assert quality["ci"][0] <= quality["value"] <= quality["ci"][1]
        assert len(quality["runs"][0]["per_example"]["predictions"]) == 16  # every dev row, for the bootstrap
        assert quality["learned"] in (True, False) and quality["vs_baseline"]["ci"][0] <= quality["vs_baseline"]["diff"]
        assert m["merge_error"] is not None and m["merge_error"] < 1e-4  # both merge exactly
        assert record["estimates"]["error"] is None
        # the analytic count is exact for a BERT: it must match the instantiated model
        assert record["estimates"]["trainable_params"] == m["params"]["trainable"]
    full, lora = results["methods"][:2]
    assert full["measurements"]["step_time"]["throughput_vs_reference"] is None  # full is the reference
    assert lora["measurements"]["step_time"]["throughput_vs_reference"]["value"] > 0
    assert lora["measurements"]["params"]["trainable"] < full["measurements"]["params"]["trainable"]
    assert results["reference_method"] == "full"


def test_the_timing_phase_has_a_control_and_says_why_it_stopped(compared):
    results, _ = compared
    timing = results["timing"]
    assert timing["control"]["ratio_vs_base"]["value"] > 0 and timing["control"]["latency"]["median_ms"] > 0
    assert timing["stop"]["rounds"] >= 2 and timing["stop"]["reason"] in ("converged", "time cap")


def test_quality_analysis_names_the_baseline_and_the_pair(compared):
    results, _ = compared
    quality = results["quality"]
    assert quality["metric"] == "accuracy" and quality["baseline"]["name"] == "majority class"
    assert quality["reference"] == "full" and set(quality["vs_reference"]) == {"lora"}
    assert set(quality["ranking"]) == set(quality["learned"]) <= {"full", "lora"}


def test_max_length_is_fitted_to_the_data_unless_given(compared):
    results, _ = compared
    lengths = results["lengths"]
    assert lengths["max_length"] == 16 and not lengths["chosen_from_data"]  # TINY gives 16
    assert lengths["longest"] > 0 and lengths["train_truncated"] >= 0


def test_a_failing_method_gets_an_error_row_and_the_others_run(compared):
    results, out = compared
    prompt = results["methods"][2]
    assert prompt["error"]["phase"] == "train"
    assert prompt["error"]["type"] == "ConfigError" and "num_virtual_tokens" in prompt["error"]["message"]
    assert prompt["measurements"]["params"] is None
    report = (out / "report.md").read_text()
    assert "## Errors" in report and "ConfigError" in report


def test_charts_are_written_as_png(compared):
    _, out = compared
    for name in CHART_TITLES:
        path = out / "charts" / name
        assert path.read_bytes()[:8] == PNG_MAGIC, name


def test_report_has_the_seeds_tables(compared):
    _, out = compared
    report = (out / "report.md").read_text()
    for heading in ("## Verdict", "## Budget", "## Parameter efficiency", "## Memory", "## Training speed",
                    "## Inference overhead", "## Quality", "## The source documents' claims"):
        assert heading in report
    assert "| base (control) |" in report and "Timing control" in report
    assert "| lora | 0.001 |" in report  # the literature learning rate is written down
    assert "not checked" in report  # prompt failed, so its claim cannot be checked


def test_a_learning_rate_choice_shows_in_the_report_and_its_chart(compared, tmp_path):
    import copy

    from peftlab.compare.charts import write_charts
    from peftlab.compare.report import render_report

    results = copy.deepcopy(compared[0])
    results["methods"][1]["config"]["lr_choice"] = {
        "kind": "sweep", "metric": "accuracy", "chosen": 1e-3, "validation_rows": 5, "wall_s": 3.0,
        "points": [{"learning_rate": 5e-4, "score": 0.5, "diverged": False},
                   {"learning_rate": 1e-3, "score": 0.6, "score_sd": 0.05, "diverged": False},
                   {"learning_rate": 2e-3, "score": None, "diverged": True}]}
    report = render_report(results)
    assert "## Learning rates (sweep)" in report
    assert "0.0005 → 0.500, 0.001 → 0.600 ± 0.050, 0.002 → diverged" in report
    assert "| **0.001** |" in report
    results["methods"][1]["config"]["lr_choice"]["extended"] = [2e-3]
    assert "0.002⁺ → diverged" in render_report(results)  # a rate tried past the grid is marked
    written = write_charts(results, tmp_path)
    assert (tmp_path / "lr_choice.png").read_bytes()[:8] == PNG_MAGIC and len(written) == len(CHART_TITLES) + 1

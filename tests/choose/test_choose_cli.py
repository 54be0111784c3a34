"""`peftlab choose` through the real typer app: table and JSON output, and one-line errors
(exit code 2, no traceback)."""

import json

import pytest
from typer.testing import CliRunner

from peftlab.cli.main import app
from peftlab.choose import SCHEMA

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["choose", *args])


def test_table_output_cites_the_seeds():
    result = invoke("--task", "classification", "--model", "bert-base", "--memory", "8")
    assert result.exit_code == 0, result.output
    for words in ("LoRA", "r=4", "source 003, Decision Tree", "Next steps for #1 LoRA",
                  "if underfitting", "Where the seeds disagree"):
        assert words in result.stdout


def test_json_output():
    result = invoke("--task", "instruction-following", "--memory", "24GB", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["schema"] == SCHEMA and out["inputs"]["memory"] == 24.0
    assert out["candidates"][0]["method"] == "qlora" and out["candidates"][0]["nf4"] is True


def test_from_report(tmp_path):
    measured = {"quality": 0.9, "peak_memory_bytes": 10, "step_time_s": 0.1, "adapter_bytes": 10}
    (tmp_path / "results.json").write_text(json.dumps([
        {"method": "lora", "config": {"learning_rate": 2e-3, "sweep": {"chosen": 2e-3}}, "measurements": measured},
        {"method": "prompt", "config": {"learning_rate": 0.3}, "measurements": {**measured, "quality": 0.7}}]))
    result = invoke("--task", "classification", "--from-report", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "(swept)" in result.stdout and "0.002" in result.stdout and "0.3 " in result.stdout  # rates trained at
    assert "Measured vs rule of thumb" in result.stdout and "20.0 points below LoRA" in result.stdout
    out = json.loads(invoke("--task", "classification", "--from-report", str(tmp_path), "--json").stdout)
    assert [c["method"] for c in out["choices"]] == ["lora", "prompt"]


ERRORS = [
    (["--task", "summarize"], "unknown task type 'summarize'; use one of: classification, "
                              "instruction-following, domain-adaptation, style-persona, code-generation, generation"),
    (["--task", "generation", "--memory", "lots"], "--memory 'lots' is not a number of GB > 0 or 'cpu'"),
    (["--task", "generation", "--goal", "fast"], "unknown goal 'fast'; use one of:"),
    (["--task", "generation", "--model", "llama-99b"], "unknown model 'llama-99b'"),
    (["--task", "generation", "--from-report", "no/such/folder"], "report folder no/such/folder not found"),
]


@pytest.mark.parametrize("args, message", ERRORS, ids=[m[:30] for _, m in ERRORS])
def test_errors_are_one_line_with_exit_code_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: " + message)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_malformed_results_json_is_one_line(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps([{"method": "lora", "measurements": {"quality": "x"}}]))
    result = invoke("--task", "classification", "--from-report", str(tmp_path))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "measurements.peak_memory_bytes is missing" in result.stderr


def test_choose_without_memory_prints_the_table():
    """Found by the flag fuzz: the memory column was formatted before --memory was known to be given."""
    result = runner.invoke(app, ["choose", "--task", "classification", "--model", "bert-base"])
    assert result.exit_code == 0, result.output
    assert "memory not given" in result.stdout

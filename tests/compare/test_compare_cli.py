"""`peftlab compare` options that change the plan: --set reaches method fields and combination parts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import peftlab.compare
from peftlab.cli.main import app


@pytest.fixture
def planned(monkeypatch, tmp_path):
    """The plan `peftlab compare` would run, captured instead of run."""
    captured = {}

    def capture(plan, out, **kwargs):
        captured["plan"] = plan
        raise SystemExit(0)

    monkeypatch.setattr(peftlab.compare, "run_compare", capture)

    def invoke(*args):
        result = CliRunner().invoke(app, ["compare", "--out", str(tmp_path / "out"), *args])
        return result, captured.get("plan")
    return invoke


def test_set_reaches_a_method_field_and_a_combination_part(planned):
    result, plan = planned("--methods", "lora,lora+prompt", "--set", "lora.r=8", "--set", "prompt.lr_scale=100",
                           "--set", "prompt.num_virtual_tokens=10", "--set", "lora.target_modules=query,key")
    assert result.exit_code == 0, result.output
    lora, combined = plan.methods
    assert lora.fields["r"] == 8 and lora.fields["target_modules"] == ["query", "key"]
    assert combined.fields["lora"]["r"] == 8 and combined.fields["prompt"]["num_virtual_tokens"] == 10
    assert combined.fields["lr_scales"] == {"prompt": 100.0}


@pytest.mark.parametrize("setting, message", [
    ("lora.rr=8", "method 'lora' has no option 'rr'"),
    ("ia3.target_modules=key", "--set names ia3, which this comparison does not run"),
    ("lora.r=0", "lora: r=0 is invalid: expected an integer >= 1"),
    ("lora=8", "write method.key=value"),
])
def test_a_bad_setting_is_one_error_line_before_any_work(planned, setting, message):
    result, plan = planned("--methods", "lora", "--set", setting)
    assert result.exit_code == 2 and plan is None
    assert result.output.startswith("error: ") and message in result.output


def test_dev_fraction_reaches_the_plan(planned):
    result, plan = planned("--dev-fraction", "0.25")
    assert result.exit_code == 0, result.output
    assert plan.dev_fraction == 0.25


def test_data_without_dev_rows_is_refused_in_one_line(tmp_path):
    data = tmp_path / "all.csv"
    data.write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(40)), encoding="utf-8")
    result = CliRunner().invoke(app, ["compare", "--data", str(data), "--dev-fraction", "0", "--methods", "lora",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "has no dev rows to score the methods on" in result.output and "--dev-fraction" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "runs").exists()  # refused before any run

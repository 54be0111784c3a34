"""`peftlab estimate`: JSON / CSV / table output, charts, and one-line errors."""

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from peftlab.cli.main import app
from peftlab.core.registry import method_names

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["estimate", *args], env={"COLUMNS": "250"})


def test_json_output_has_breakdown_and_memory():
    result = run("llama-2-7b", "-m", "lora,qlora", "--r", "16", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    lora, qlora = data["estimates"]
    assert lora["trainable_params"] == 8_388_608
    assert lora["breakdown"] == {"q_proj": 4_194_304, "v_proj": 4_194_304}
    assert lora["file_bytes"] == {"float32": 33_554_432, "bfloat16": 16_777_216}
    assert set(lora["memory"]) >= {"weights", "gradients", "optimizer", "activations", "total"}
    assert qlora["memory"]["weights"] < lora["memory"]["weights"]


def test_csv_output_parses():
    result = run("bert-base", "-m", "all", "--num-labels", "2", "--csv")
    assert result.exit_code == 0, result.output
    first = result.stdout.split("\n# ")[0].split("\n", 1)[1]
    rows = list(csv.DictReader(io.StringIO(first)))
    assert [r["method"] for r in rows] == method_names()
    assert int(rows[1]["trainable"]) == 12 * 2 * 8 * (768 + 768) + 768 * 2 + 2


def test_method_options_reach_the_right_method():
    result = run("gpt2", "-m", "adapters,ia3,prefix", "--bottleneck-size", "16",
                 "--placement", "pfeiffer", "--use-bias", "false", "--target-modules", "mlp.c_proj",
                 "--num-virtual-tokens", "5", "--json")
    adapters, ia3, prefix = json.loads(result.stdout)["estimates"]
    assert adapters["trainable_params"] == 12 * 2 * 768 * 16
    assert ia3["trainable_params"] == 12 * 3072
    assert prefix["trainable_params"] == 5 * 2 * 768 * 12


def test_seed_memory_model_table():
    result = run("seed-7b", "-m", "full", "--memory-model", "seed", "--json")
    assert round(json.loads(result.stdout)["estimates"][0]["memory"]["total"] / 1e9, 1) == 100.1


def test_seeds_and_scaling_tables_print():
    result = run("--source-tables", "--scaling")
    assert result.exit_code == 0, result.output
    for text in ("16.78M", "100.1 GB", "0.887M", "~50M", "full/QLoRA", "llama-2-70b"):
        assert text in result.stdout
    data = json.loads(run("--source-tables", "--json").stdout)["seeds"]
    adapters = data["source 003: 7B parameters and storage"][3]
    assert adapters["params"] == 33_820_672 and "does not follow" in adapters["assumption"]


def test_charts_written(tmp_path):
    result = run("seed-7b", "-m", "all", "--charts", str(tmp_path))
    assert result.exit_code == 0, result.output
    for name in ("params.png", "memory.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,message", [
    (["llama-9b"], "unknown model 'llama-9b'; give a Hugging Face config.json path or one of "
                   "the presets: llama-3.2-1b"),
    (["no/such/config.json"], "config file no/such/config.json not found"),
    (["gpt2", "-m", "nope"], "unknown method 'nope'; use one of: full, lora"),
    (["gpt2", "-m", "prompt", "--r", "4"], "--r is an option of lora, qlora"),
    (["gpt2", "-m", "lora", "--r", "4.5"], "Invalid value for '--r': Input should be a valid integer"),
    (["gpt2", "-m", "lora", "--r", "0"], "Invalid value for --r: must be an integer >= 1, got 0"),
    (["gpt2", "-m", "lora", "--r", "5000"], "lora: r=5000 is invalid: expected an integer >= 1 and <= 4096"),
    (["gpt2", "--target-modules", "q_proj"], "matches no linear in a gpt2 block; use one of"),
    (["gpt2", "--precision", "fp8"], "precision 'fp8' is unknown"),
    ([], "no model given"),
])
def test_errors_are_one_line_with_the_fix(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]

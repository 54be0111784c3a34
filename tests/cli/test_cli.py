"""`peftlab train / eval / merge` on a tiny BERT folder (MiniLM tokenizer) and toy TSV data."""

import json
import sys

import peftlab
import pytest
import torch
from train_helpers import minilm_tokenizer, tiny_bert, write_tiny_model, write_toy_data
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from peftlab.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {"root": root, "model": str(write_tiny_model(root / "model")),
            "data": str(write_toy_data(root / "data", train=48, dev=16))}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def train_args(paths, out, *extra):
    return ("train", "--model", paths["model"], "--data", paths["data"], "--out", out, "--steps", "4",
            "--batch-size", "8", "--threads", "1", "--no-progress", *extra)


@pytest.fixture(scope="module")
def trained(paths):
    out = paths["root"] / "lora"
    result = invoke(*train_args(paths, out, "--method", "lora", "--r", "4", "--alpha", "8",
                                "--targets", "query,value", "--set", "use_rslora=true", "--lr", "1e-2",
                                "--eval-every", "2"))
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_adapter_and_metrics(trained):
    record = json.loads((trained / "metrics.json").read_text())
    config = json.loads((trained / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["use_rslora"] is True
    assert config["target_modules"] == ["query", "value"]
    assert record["adapters"]["default"]["method"] == "lora"
    assert record["train_info"]["steps"] == 4 and len(record["evaluations"]) == 2
    assert record["run_info"]["torch"] == torch.__version__ and " train --model " in record["run_info"]["command_line"]
    assert "--r 4 --alpha 8" in record["run_info"]["command_line"]
    assert {"accuracy", "macro_f1", "loss"} <= set(record["final"])
    assert record["train_info"]["step_time"]["median"] > 0


def test_eval_reproduces_the_final_dev_metrics(paths, trained):
    result = invoke("eval", trained, "--model", paths["model"], "--data", paths["data"], "--json")
    assert result.exit_code == 0, result.output
    final = json.loads((trained / "metrics.json").read_text())["final"]
    assert json.loads(result.stdout) == pytest.approx(final)


def test_merge_writes_a_plain_model_with_the_adapter_folded_in(paths, trained):
    merged_dir = paths["root"] / "merged"
    result = invoke("merge", trained, "--model", paths["model"], "--out", merged_dir, "--safe")
    assert result.exit_code == 0, result.output
    assert not list(paths["root"].glob(".merged.*"))  # the temporary folder was renamed
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir).eval()
    adapted = peftlab.load_adapter(tiny_bert(), trained).eval()
    batch = minilm_tokenizer()(["a good film", "dull and boring plot"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapted(**batch).logits, atol=1e-5, rtol=1e-5)
    assert merged.config.id2label == {0: "0", 1: "1"}
    assert (merged_dir / "tokenizer.json").is_file()
    again = invoke("merge", trained, "--model", paths["model"], "--out", merged_dir)
    assert again.exit_code == 2 and "--overwrite" in again.stderr


def test_every_registered_method_trains_through_the_same_command(paths):
    out = paths["root"] / "full"
    result = invoke(*train_args(paths, out, "--method", "full", "--lr", "1e-3", "--steps", "2"))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["params"]["trainable_percent"] == 100.0


def _corrupt_copy(trained, root):
    folder = root / "corrupt"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text((trained / "adapter_config.json").read_text())
    (folder / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    return folder


@pytest.mark.parametrize("case, expected", [
    ("unknown method", "unknown method 'nope': choose one of"),
    ("unknown target", "target module(s) 'nothing' not found in BertForSequenceClassification; candidates:"),
    ("bad rank", "lora: r=5000 is invalid: expected an integer >= 1 and <= 4096"),
    ("rank outside the flag domain", "Invalid value for --r: must be an integer >= 1, got 0"),
    ("option of another method", "method 'full' has no option 'r'"),
    ("missing adapter", "does not exist"),
    ("corrupt adapter", "is corrupt or not a safetensors file"),
])
def test_errors_are_one_line_with_exit_code_2(paths, trained, case, expected):
    out = paths["root"] / "never"
    args = {
        "unknown method": train_args(paths, out, "--method", "nope"),
        "unknown target": train_args(paths, out, "--targets", "nothing"),
        "bad rank": train_args(paths, out, "--r", "5000"),
        "rank outside the flag domain": train_args(paths, out, "--r", "0"),
        "option of another method": train_args(paths, out, "--method", "full", "--r", "4"),
        "missing adapter": ("eval", paths["root"] / "missing", "--model", paths["model"], "--data", paths["data"]),
        "corrupt adapter": ("eval", _corrupt_copy(trained, paths["root"]), "--model", paths["model"],
                            "--data", paths["data"]),
    }[case]
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert expected in result.stderr and "Traceback" not in result.output
    assert not out.exists()


def test_main_entry_point_reports_errors_the_same_way(paths, monkeypatch, capsys):
    from peftlab.__main__ import main  # what `python -m peftlab` runs

    monkeypatch.setattr(sys, "argv", ["peftlab", "train", "--method", "nope", "--out", str(paths["root"] / "x")])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("error: unknown method 'nope'")

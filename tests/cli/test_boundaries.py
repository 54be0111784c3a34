"""The hand-made hostile inputs of issue 22 through `peftlab train / eval / merge`: each ends with
exit 2 and ONE `error:` line (or a correct result), never a traceback and never a file outside
--out. Also: numeric flags all declared, --out checked before training, a tampered checkpoint
resumed through the command line, and run folders that a kill leaves old or new, never mixed."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import typer
from safetensors.torch import load_file, save_file
from train_helpers import write_tiny_model, write_toy_data
from typer.testing import CliRunner

from peftlab.cli.flags import FLAG_DOMAINS
from peftlab.cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("boundaries")
    paths = {"root": root, "model": write_tiny_model(root / "model"),
             "data": write_toy_data(root / "data", train=40, dev=8)}
    paths["run"] = root / "run"
    result = invoke(*train_args(paths, paths["run"], "--r", "4", "--steps", "2", "--checkpoint-every", "1"))
    assert result.exit_code == 0, result.output
    return paths


def train_args(paths, out, *extra):
    return ("train", "--model", paths["model"], "--data", paths["data"], "--out", out, "--batch-size", "8",
            "--threads", "1", "--no-progress", "--method", "lora", "--targets", "query,value", *extra)


FLAG_CASES = {
    "--lr nan": (["--lr", "nan"], "Invalid value for --lr: must be a finite number > 0, got nan"),
    "--warmup-ratio nan": (["--warmup-ratio", "nan"], "--warmup-ratio: must be a finite number in [0, 1], got nan"),
    "--epochs nan": (["--epochs", "nan"], "--epochs: must be a finite number > 0, got nan"),
    "--epochs inf": (["--epochs", "inf"], "--epochs: must be a finite number > 0, got inf"),
    "--max-train -5": (["--max-train", "-5"], "--max-train: must be an integer >= 1, got -5"),
    "--max-dev -1": (["--max-dev", "-1"], "--max-dev: must be an integer >= 1, got -1"),
    "--batch-size 0": (["--batch-size", "0"], "--batch-size: must be an integer >= 1, got 0"),
}


@pytest.mark.parametrize("case", FLAG_CASES)
def test_train_flags_out_of_their_domain_are_one_line(paths, case):
    flags, message = FLAG_CASES[case]
    out = paths["root"] / "never"
    one_error_line(invoke(*train_args(paths, out, *flags)), message)
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size: must be an integer >= 1, got 0"),
    (["--max-length", "-5"], "--max-length: must be an integer >= 1, got -5"),
    (["--max-length", "0"], "--max-length: must be an integer >= 1, got 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens: must be an integer >= 1, got 0"),
])
def test_eval_flags_out_of_their_domain_are_one_line(paths, flags, message):
    one_error_line(invoke("eval", paths["run"], "--model", paths["model"], "--data", paths["data"], *flags), message)


def test_merge_num_labels(paths):
    """0 and 1 can never be a classifier; 5 cannot hold this adapter's head, trained on 2 labels (it
    would be right for an adapter trained on 5); 2 is the adapter's own and works."""
    out = paths["root"] / "merged"
    common = ("merge", paths["run"], "--model", paths["model"], "--out", out, "--num-labels")
    one_error_line(invoke(*common, "0"), "--num-labels: must be an integer >= 2, got 0")
    one_error_line(invoke(*common, "5"), "--num-labels 5 does not fit the adapter, trained on 2 labels (0, 1)")
    assert not out.exists()
    result = invoke(*common, "2")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "0", "1": "1"}


def _numeric_annotation(param):
    """int or float for a numeric command parameter, whichever click typer builds on."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return descriptor.annotation if descriptor.annotation in (int, float) else None
    return {"integer": int, "float": float}.get(getattr(getattr(param, "type", None), "name", None))


def test_every_numeric_flag_of_every_command_has_a_domain():
    group = typer.main.get_command(app)
    declared = []
    for name in group.list_commands(None):
        command = group.get_command(None, name)  # what the CLI looks up, with the domain checks attached
        for param in command.params:
            if _numeric_annotation(param) is not None:
                flag = next(opt for opt in param.opts if opt.startswith("--"))
                assert flag in FLAG_DOMAINS, f"peftlab {name} {flag} has no domain in cli/flags.py"
                assert param.callback.domain == FLAG_DOMAINS[flag]
                declared.append(flag)
    assert {"--lr", "--epochs", "--batch-size", "--max-length", "--num-labels", "--r", "--seq-len"} <= set(declared)


@pytest.mark.parametrize("where, message", [
    ("file", "--out {root}/afile is an existing file: choose a folder path"),
    ("below a file", "is a file, so no folder can be made below it"),
    ("read-only", "--out /sys/peftlab-out cannot be written"),
])
def test_a_bad_out_is_one_line_before_training(paths, where, message):
    (paths["root"] / "afile").write_text("not a folder")
    out = {"file": paths["root"] / "afile", "below a file": paths["root"] / "afile" / "run",
           "read-only": "/sys/peftlab-out"}[where]
    result = invoke(*train_args(paths, out, "--steps", "2"))
    one_error_line(result, message.format(root=paths["root"]))
    assert result.stdout == ""  # nothing loaded, nothing trained


def test_an_unwritable_checkpoint_folder_is_one_line_before_training(paths):
    result = invoke(*train_args(paths, paths["root"] / "ck", "--steps", "2", "--checkpoint-every", "1",
                                "--checkpoint-dir", "/sys/peftlab-checkpoints"))
    one_error_line(result, "--checkpoint-dir /sys/peftlab-checkpoints cannot be written")


def test_a_model_folder_with_only_pickle_weights_is_one_line(paths):
    folder = paths["root"] / "pickled"
    shutil.copytree(paths["model"], folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    for method in ("lora", "qlora"):
        one_error_line(invoke(*train_args(paths, paths["root"] / "x", "--model", folder, "--method", method)),
                       "holds its weights only as pytorch_model.bin, a pickle file")


def test_one_class_data_is_one_line(paths):
    folder = paths["root"] / "one-class"
    folder.mkdir()
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("sentence\tlabel\ngood film\t1\nfine plot\t1\n")
    one_error_line(invoke(*train_args(paths, paths["root"] / "x", "--data", folder)),
                   "column 'label' holds one label only ('1')")


def _copy_adapter(paths, name, change):
    folder = paths["root"] / name
    shutil.copytree(paths["run"], folder, ignore=shutil.ignore_patterns("checkpoints"))
    weights = folder / "adapter_model.safetensors"
    save_file({key: change(key, tensor) for key, tensor in load_file(str(weights)).items()}, str(weights))
    return folder


def test_a_nan_adapter_is_refused_by_eval_and_merge(paths):
    folder = _copy_adapter(paths, "nan-adapter", lambda key, t: torch.full_like(t, float("nan")))
    one_error_line(invoke("eval", folder, "--model", paths["model"], "--data", paths["data"]),
                   "holds NaN or infinite values; the adapter cannot be used")
    one_error_line(invoke("merge", folder, "--model", paths["model"], "--out", paths["root"] / "m1", "--unsafe"),
                   "holds NaN or infinite values")


def test_merge_refuses_a_non_finite_result_unless_unsafe(paths):
    """Finite factors whose product overflows: only the merged weight is infinite."""
    folder = _copy_adapter(paths, "huge-adapter", lambda key, t: torch.full_like(t, 1e30) if "lora_" in key else t)
    out = paths["root"] / "merged-huge"
    one_error_line(invoke("merge", folder, "--model", paths["model"], "--out", out), "non-finite")
    assert not out.exists()
    result = invoke("merge", folder, "--model", paths["model"], "--out", out, "--unsafe")
    assert result.exit_code == 0, result.output
    merged = load_file(str(out / "model.safetensors"))
    assert not all(torch.isfinite(t).all() for t in merged.values())


def test_qlora_on_a_cut_short_base_model_is_one_line(paths):
    folder = paths["root"] / "cut"
    shutil.copytree(paths["model"], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-2000])
    one_error_line(invoke(*train_args(paths, paths["root"] / "x", "--model", folder, "--method", "qlora")),
                   "(the file was cut short)")


def test_a_tampered_checkpoint_resumes_from_the_previous_one_through_the_cli(paths):
    whole = paths["root"] / "whole"
    run = ("--r", "4", "--steps", "6", "--checkpoint-every", "2", "--keep-checkpoints", "3", "--dropout", "0.1")
    assert invoke(*train_args(paths, whole, *run)).exit_code == 0
    garbled = whole / "checkpoints" / "step-6" / "rng.safetensors"
    data = bytearray(garbled.read_bytes())
    data[-3] ^= 0xFF  # same size: only the checksum tells
    garbled.write_bytes(bytes(data))
    resumed = paths["root"] / "resumed"
    result = invoke(*train_args(paths, resumed, *run, "--resume", whole / "checkpoints"))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "step-6 fails verification (rng.safetensors differs" in warnings[0]
    expected, got = (load_file(str(f / "adapter_model.safetensors")) for f in (whole, resumed))
    for key in expected:
        assert (got[key] - expected[key]).abs().max() <= 1e-6, key


CHILD = """
import os, signal, sys
import peftlab.io as io
from peftlab.cli.main import main

point, calls = sys.argv.pop(1), []
original = io.write_json if point == "between files" else None
if point == "between files":  # the adapter's weights are written, its config is next
    def write_json(path, data):
        if str(path).endswith("adapter_config.json"):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(path, data)
    io.write_json = write_json
    import peftlab.core.files as files
    files.write_json = write_json
else:  # the old folder is set aside, the new one not yet renamed into place
    from pathlib import Path
    rename = Path.rename
    def kill_at_swap(self, target):
        if ".old-" in Path(target).name:
            rename(self, target)
            os.kill(os.getpid(), signal.SIGKILL)
        return rename(self, target)
    Path.rename = kill_at_swap
sys.argv = ["peftlab", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("point", ["between files", "inside the swap"])
def test_a_killed_retrain_leaves_the_old_or_the_new_run_never_a_mix(paths, tmp_path, point):
    out = tmp_path / "run"
    shutil.copytree(paths["run"], out)  # an r=4 run, with its checkpoints
    args = [str(a) for a in train_args(paths, out, "--r", "2", "--steps", "2")]
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.run([sys.executable, str(script), point, *args], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    if out.exists():
        r = json.loads((out / "adapter_config.json").read_text())["r"]
        assert json.loads((out / "metrics.json").read_text())["adapters"]["default"]["r"] == r
        assert r == 4 or point == "inside the swap"
    again = invoke(*train_args(paths, out, "--r", "2", "--steps", "2"))  # the next run cleans up first
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.py", "run"]
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "checkpoints",
                                                      "metrics.json"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-1", "step-2"]  # carried over
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2
    result = invoke("eval", out, "--model", paths["model"], "--data", paths["data"])
    assert result.exit_code == 0, result.output


def test_merge_refuses_an_out_that_holds_the_adapter(paths):
    one_error_line(invoke("merge", paths["run"], "--model", paths["model"], "--out", paths["run"], "--overwrite"),
                   "holds the adapter being merged, which --overwrite would delete")
    assert (paths["run"] / "adapter_config.json").is_file()

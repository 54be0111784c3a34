"""A real crash: `peftlab train` in its own process is SIGKILLed after its step-6 checkpoint, then resumed;
and the command line's run options.

The child runs the ordinary command line; the only test-side change is a pause right after the
step-6 checkpoint is on disk, so the kill lands mid-run at a known point (any later moment would
do as well: the resume starts from the newest complete checkpoint whatever was half-written).
"""

import json
import os
import signal
import subprocess
import sys
import time

from safetensors.torch import load_file
from train_helpers import write_tiny_model, write_toy_data
import typer
from typer.testing import CliRunner

from peftlab.cli.main import app
from peftlab.train.checkpoint import LATEST

CHILD = """
import sys, time
import peftlab.train.checkpoint as checkpoint
from peftlab.cli.main import main

original = checkpoint.save_checkpoint

def save_then_pause(directory, **kwargs):
    path = original(directory, **kwargs)
    if kwargs["position"]["step"] == 6:
        time.sleep(300)  # the test kills the process here
    return path

checkpoint.save_checkpoint = save_then_pause
sys.argv = ["peftlab", *sys.argv[1:]]
main()
"""


def run_args(root, out):
    return ["train", "--model", str(root / "model"), "--data", str(root / "data"), "--out", str(out),
            "--method", "lora", "--r", "4", "--alpha", "8", "--targets", "query,value", "--dropout", "0.2",
            "--lr", "1e-2", "--steps", "12", "--batch-size", "8", "--warmup-steps", "3", "--log-every", "4",
            "--checkpoint-every", "3", "--threads", "1", "--no-progress", "--max-dev", "8"]


def wait_for(condition, process, seconds):
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the child never wrote its step-6 checkpoint"
        time.sleep(0.1)


def test_a_killed_run_resumes_to_the_uninterrupted_adapter(tmp_path):
    write_tiny_model(tmp_path / "model")
    write_toy_data(tmp_path / "data", train=40, dev=8)
    killed = tmp_path / "killed"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), *run_args(tmp_path, killed)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pointer = killed / "checkpoints" / LATEST
        wait_for(lambda: pointer.is_file() and pointer.read_text().strip() == "step-6", child, 120)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert not (killed / "adapter_model.safetensors").exists()  # the run really did not finish

    runner = CliRunner()
    resumed = runner.invoke(app, [*run_args(tmp_path, killed), "--resume", str(killed / "checkpoints")])
    assert resumed.exit_code == 0, resumed.output
    whole = tmp_path / "whole"
    uninterrupted = runner.invoke(app, run_args(tmp_path, whole))
    assert uninterrupted.exit_code == 0, uninterrupted.output

    expected = load_file(str(whole / "adapter_model.safetensors"))
    got = load_file(str(killed / "adapter_model.safetensors"))
    assert set(got) == set(expected)
    for key in expected:
        assert (got[key] - expected[key]).abs().max() <= 1e-6, key
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == [LATEST, "step-12", "step-9"]
    refused = runner.invoke(app, [*run_args(tmp_path, killed), "--lr", "2e-2", "--resume", str(killed)])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    assert "train config field 'learning_rate' is 0.01 in the checkpoint but 0.02 in this run" in refused.stderr
    records = [json.loads((folder / "metrics.json").read_text()) for folder in (killed, whole)]
    assert records[0]["final"] == records[1]["final"]
    assert [h["step"] for h in records[0]["history"]] == [h["step"] for h in records[1]["history"]] == [4, 8, 12]


def test_train_offers_the_run_options():
    command = typer.main.get_command(app).commands["train"]
    flags = {flag for param in command.params for flag in param.opts}
    assert {"--checkpoint-every", "--checkpoint-dir", "--keep-checkpoints", "--resume", "--stop-if-loss-rises-after",
            "--device", "--bf16", "--gradient-checkpointing", "--threads", "--rank"} <= flags

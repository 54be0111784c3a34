"""`peftlab compare` as a job: Ctrl-C keeps what finished, `--resume` ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from train_helpers import write_tiny_model, write_toy_data


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return write_tiny_model(root / "model"), write_toy_data(root / "data", train=48, dev=16), root


def _command(inputs, out, *extra):
    model, data, _ = inputs
    return [sys.executable, "-m", "peftlab", "compare", "--model", str(model), "--data", str(data),
            "--methods", "lora,ia3", "--profile", "preview", "--steps", "4", "--threads", "1",
            "--timing-seconds", "2", "--no-progress", "--out", str(out), *extra]


def _dev_scores(out):
    results = json.loads((out / "results.json").read_text())
    return {r["method"]: r["measurements"]["quality"]["value"] for r in results["methods"]}


def test_an_interrupted_comparison_keeps_its_first_method_and_resumes_to_the_same_results(inputs):
    _, _, root = inputs
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    whole = root / "whole"
    subprocess.run(_command(inputs, whole), check=True, env=env, capture_output=True, text=True, timeout=900)

    stopped = root / "stopped"
    process = subprocess.Popen(_command(inputs, stopped), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    first = stopped / "runs" / "lora.json"
    deadline = time.monotonic() + 600
    while not first.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.is_file(), "the first method never finished"
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group, workers included
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "interrupted: 1 of 2 methods finished" in stderr and "--resume" in stderr
    assert _dev_scores(stopped) == {"lora": _dev_scores(whole)["lora"]}  # the report so far holds lora

    done = subprocess.run(_command(inputs, root / "elsewhere", "--resume", str(stopped)), env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert _dev_scores(stopped) == _dev_scores(whole)


def test_resume_refuses_a_different_comparison(inputs):
    _, _, root = inputs
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    folder = root / "whole"  # written by the test above (same module)
    if not (folder / "runs" / "plan.json").is_file():
        subprocess.run(_command(inputs, folder), check=True, env=env, capture_output=True, timeout=900)
    changed = _command(inputs, folder, "--resume", str(folder))
    changed[changed.index("4")] = "5"  # --steps 5
    done = subprocess.run(changed, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot resume") and "plan.budget.steps is 4" in done.stderr

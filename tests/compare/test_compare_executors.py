"""Where the runs compute does not change what they compute: `--parallel 2` and a Ray cluster
(2 CPU workers started by the test) give the dev scores of the one-at-a-time comparison; a
worker that dies is started once more, then becomes an error row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from train_helpers import write_tiny_model, write_toy_data

from peftlab.compare import executor as executors
from peftlab.errors import ConfigError


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("executors")
    return write_tiny_model(root / "model"), write_toy_data(root / "data", train=48, dev=16), root


def _compare(inputs, out, *extra):
    model, data, _ = inputs
    command = [sys.executable, "-m", "peftlab", "compare", "--model", str(model), "--data", str(data),
               "--methods", "lora,ia3", "--profile", "quick", "--steps", "4", "--seeds", "2", "--threads", "1",
               "--timing-seconds", "2", "--no-progress", "--out", str(out), *extra]
    done = subprocess.run(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    return {r["method"]: (r["measurements"]["quality"]["value"], r["config"]["learning_rate"]) for r in results["methods"]}, \
        (out / "report.md").read_text()


def _quality_lines(report: str) -> list[str]:
    """The report's lines that hold no timing or wall-clock figure (those differ run to run)."""
    return [line for line in report.splitlines() if "dev" in line and " s" not in line and "ms" not in line]


@pytest.fixture(scope="module")
def sequential(inputs):
    return _compare(inputs, inputs[2] / "sequential")


def test_two_local_runs_at_once_give_the_sequential_results(inputs, sequential):
    scores, report = _compare(inputs, inputs[2] / "parallel", "--parallel", "2")
    assert scores == sequential[0]
    assert _quality_lines(report) == _quality_lines(sequential[1])


def test_a_ray_cluster_gives_the_sequential_results(inputs, sequential):
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'peftlab[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")  # a local cluster: 2 CPU workers
    try:
        address = ray.get_runtime_context().gcs_address
        scores, report = _compare(inputs, inputs[2] / "ray", "--executor", "ray", "--address", address)
    finally:
        ray.shutdown()
    assert scores == sequential[0]
    assert _quality_lines(report) == _quality_lines(sequential[1])


def test_a_dead_worker_is_retried_once_then_is_an_error_row():
    calls = []

    def dies_then_works():
        calls.append(1)
        return {"error": {"type": "WorkerCrashed", "message": "killed by signal 9"}} if len(calls) == 1 else {"ok": 1}

    assert executors.with_retry(dies_then_works, "train-lora-0") == {"ok": 1} and len(calls) == 2
    calls.clear()
    always = executors.with_retry(lambda: calls.append(1) or {"error": {"type": "WorkerCrashed", "message": "m"}},
                                  "train-lora-0")
    assert len(calls) == 2 and always["error"]["message"] == "m (the train-lora-0 worker died twice)"
    calls.clear()
    raised = executors.with_retry(lambda: calls.append(1) or {"error": {"type": "ValueError", "message": "bad"}}, "x")
    assert len(calls) == 1 and raised["error"]["type"] == "ValueError"  # a Python error is not retried


def test_executor_options_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="--parallel 2 on CPU needs --threads"):
        executors.make_executor("local", parallel=2, device="cpu")
    with pytest.raises(ConfigError, match="--executor ray needs --address"):
        executors.make_executor("ray")
    with pytest.raises(ConfigError, match="--address applies to --executor ray"):
        executors.make_executor("local", address="127.0.0.1:6379")
    with pytest.raises(ConfigError, match="not one of local, ray"):
        executors.make_executor("dask")


def test_sigterm_stops_every_parallel_worker_and_keeps_the_exit_code(inputs):
    psutil = pytest.importorskip("psutil")
    model, data, root = inputs
    command = [sys.executable, "-m", "peftlab", "compare", "--model", str(model), "--data", str(data),
               "--methods", "lora,ia3", "--profile", "preview", "--steps", "200", "--threads", "1", "--no-progress",
               "--parallel", "2", "--out", str(root / "stopped")]
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    parent, workers = psutil.Process(process.pid), []
    deadline = time.monotonic() + 300
    while len(workers) < 2 and process.poll() is None and time.monotonic() < deadline:
        workers = [p for p in parent.children() if "peftlab.compare.worker" in " ".join(p.cmdline())]
        time.sleep(0.2)
    assert len(workers) == 2, "two workers never ran at once"
    process.terminate()  # SIGTERM to the comparison alone: its workers are not signalled by anyone else
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted: 0 of 2 methods finished" in stderr
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive

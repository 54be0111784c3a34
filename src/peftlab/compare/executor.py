"""Where a comparison's training and sweep runs compute: here, one or N at a time, or on Ray.

Every run is one worker phase (`worker.py`) in a fresh process; an executor decides where that
process runs and how many run at once. What a run computes never depends on it: the spec (plan,
method, seed) is the same, so the same seeds give the same dev scores, and results.json and the
report are the same as a one-at-a-time comparison's.

    local, parallel 1   one run at a time in this machine (the default)
    local, parallel N   N runs at once, each on its own device: CUDA device i for the i-th slot
                        (CUDA_VISIBLE_DEVICES), or N CPU workers of --threads threads each
    ray                 each run a Ray task on an existing cluster (`ray start --head` ...),
                        asking for what it needs: 1 GPU, or --threads CPU cores

A worker that dies (killed by the OS, a segfault, a lost Ray node) is started once more; a
second death, or any Python error (which the worker reports itself), is that run's error row.
The timing phase never goes through an executor: its ratios need all methods on one device.
"""

from __future__ import annotations

import concurrent.futures as futures
import math
import os
import queue
import tempfile
from pathlib import Path
from typing import Any

from peftlab.compare.processes import spawn, stop_workers
from peftlab.errors import ConfigError

EXECUTORS = ("local", "ray")


def with_retry(run_once, label: str) -> dict[str, Any]:
    """`run_once()`'s result; a worker death (no result of its own) is retried once."""
    result = run_once()
    if result.get("error", {}).get("type") != "WorkerCrashed":
        return result
    again = run_once()
    if again.get("error", {}).get("type") == "WorkerCrashed":
        again["error"]["message"] = f"{again['error']['message']} (the {label} worker died twice)"
    return again


def cuda_devices() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them (or indices)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [name.strip() for name in visible.split(",") if name.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


class LocalExecutor:
    """Runs on this machine, `parallel` at a time; each running slot owns one device."""

    def __init__(self, parallel: int, device: str, threads: int | None) -> None:
        from peftlab.train.runtime import resolve_device

        self.capacity = self.slots = parallel  # runs submitted at once, runs computing at once
        self.devices: queue.Queue[dict[str, str]] = queue.Queue()
        if parallel > 1 and resolve_device(device).type == "cuda":
            devices = cuda_devices()
            if parallel > len(devices):
                raise ConfigError(f"--parallel {parallel} needs one CUDA device per run but {len(devices)} are visible: "
                                  f"use --parallel {len(devices)} or fewer")
            for name in devices[:parallel]:
                self.devices.put({"CUDA_VISIBLE_DEVICES": name})
        else:
            if parallel > 1 and threads is None:
                raise ConfigError(f"--parallel {parallel} on CPU needs --threads (each run's torch threads; keep "
                                  f"{parallel} × threads within the {os.cpu_count()} cores)")
            for _ in range(parallel):
                self.devices.put({})
        self.pool = futures.ThreadPoolExecutor(parallel, thread_name_prefix="peftlab-run") if parallel > 1 else None

    @property
    def description(self) -> str:
        return "one at a time" if self.slots == 1 else f"{self.slots} at a time on this machine"

    def submit(self, spec: dict[str, Any], scratch: Path, label: str, timeout: float | None) -> futures.Future:
        if self.pool is None:  # in this thread, so Ctrl-C reaches the one running worker as before
            done: futures.Future = futures.Future()
            done.set_result(self._run(spec, scratch, label, timeout))
            return done
        return self.pool.submit(self._run, spec, scratch, label, timeout)

    def _run(self, spec: dict[str, Any], scratch: Path, label: str, timeout: float | None) -> dict[str, Any]:
        env = self.devices.get()  # the device this run owns while it computes
        try:
            return with_retry(lambda: spawn(spec, scratch, label, timeout, env), label)
        finally:
            self.devices.put(env)

    def close(self) -> None:
        """Stop every running worker (Ctrl-C, SIGTERM) and drop the queued runs."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        stop_workers()


def _ray_phase(spec: dict[str, Any], label: str, timeout: float | None) -> dict[str, Any]:
    """A Ray task: the phase in a fresh worker process on the node, the adapter files sent back."""
    with tempfile.TemporaryDirectory(prefix="peftlab-ray-") as scratch_name:
        scratch = Path(scratch_name)
        local = dict(spec)
        if "adapter_dir" in spec:
            local["adapter_dir"] = str(scratch / "adapter")
        result = with_retry(lambda: spawn(local, scratch, label, timeout), label)
        folder = scratch / "adapter"
        result["_files"] = {str(path.relative_to(folder)): path.read_bytes()
                            for path in sorted(folder.rglob("*")) if path.is_file()} if folder.is_dir() else {}
        return result


class RayExecutor:
    """Each run a task of the Ray cluster at `address`, asking for 1 GPU or `threads` CPUs."""

    def __init__(self, address: str, device: str, threads: int | None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray installed here and on the cluster: pip install "
                              "'peftlab[ray]'") from None
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise ConfigError(f"cannot reach the Ray cluster at {address} ({str(error).splitlines()[0]}): start it "
                              "with `ray start --head` and pass the address it prints") from None
        self.ray = ray
        gpus = ray.cluster_resources().get("GPU", 0)
        wants_gpu = device == "cuda" or (device == "auto" and gpus > 0)
        if device == "cuda" and not gpus:
            raise ConfigError(f"--device cuda but the Ray cluster at {address} has no GPUs: use --device cpu")
        self.resources = {"num_gpus": 1, "num_cpus": threads or 1} if wants_gpu else {"num_cpus": threads or 1}
        # max_retries: Ray starts a task again once when its worker process or node dies.
        self.remote = ray.remote(max_retries=1, **self.resources)(_ray_phase)
        self.tasks: list = []
        self.capacity = math.inf  # every ready run is submitted; the cluster's resources pace them
        fits = gpus if wants_gpu else ray.cluster_resources().get("CPU", 1) // (threads or 1)
        self.slots = max(1, int(fits))

    @property
    def description(self) -> str:
        asked = ", ".join(f"{value} {key.removeprefix('num_').upper()}" for key, value in self.resources.items())
        return f"Ray tasks of {asked} each, about {self.slots} at a time"

    def submit(self, spec: dict[str, Any], scratch: Path, label: str, timeout: float | None) -> futures.Future:
        task = self.remote.remote(spec, label, timeout)
        self.tasks.append(task)
        found: futures.Future = futures.Future()

        def deliver(done: futures.Future) -> None:
            try:
                result = done.result()
            except Exception as error:  # noqa: BLE001 - a lost task becomes this run's error row
                result = {"error": {"type": "WorkerCrashed", "message": f"the {label} Ray task failed twice: "
                                    f"{str(error).splitlines()[0][:500]}"}, "_files": {}}
            _write_files(spec, result.pop("_files", {}))
            found.set_result(result)

        task.future().add_done_callback(deliver)
        return found

    def close(self) -> None:
        for task in self.tasks:
            self.ray.cancel(task, force=True)
        self.ray.shutdown()


def _write_files(spec: dict[str, Any], files: dict[str, bytes]) -> None:
    """Put a remote run's adapter files where a local run would have written them."""
    if not files or "adapter_dir" not in spec:
        return
    folder = Path(spec["adapter_dir"])
    for name, data in files.items():
        path = folder / name
        if not path.resolve().is_relative_to(folder.resolve()):
            raise ConfigError(f"a Ray worker sent the file {name!r}, which is not inside {folder}: refused")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def make_executor(name: str, *, parallel: int = 1, address: str | None = None, device: str = "auto",
                  threads: int | None = None):
    """The executor the command line asked for (`name` in EXECUTORS)."""
    if name == "ray":
        if address is None:
            raise ConfigError("--executor ray needs --address of a running Ray cluster (ray start --head prints it)")
        if parallel != 1:
            raise ConfigError("--parallel applies to --executor local; the Ray cluster's resources decide how many "
                              "runs go at once")
        return RayExecutor(address, device, threads)
    if name != "local":
        raise ConfigError(f"--executor {name!r} is not one of {', '.join(EXECUTORS)}")
    if address is not None:
        raise ConfigError("--address applies to --executor ray: leave it out or add --executor ray")
    return LocalExecutor(parallel, device, threads)

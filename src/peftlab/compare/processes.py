"""Worker processes of a comparison: start one phase (`spawn`), stop them all (`stop_workers`).

    result = spawn({"phase": "train", ...}, scratch, "lora-seed0")   # `python -m peftlab.compare.worker`

`spawn` runs the worker on a spec file and returns its result file, or {"error": {...}} whatever
way it failed (an exception, a crash, a kill by the OS, a timeout). Every running worker is known
here, so Ctrl-C or SIGTERM can stop all of them, also those that executors run in other threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from peftlab.io import write_json

STDERR_TAIL = 2000  # characters of a crashed worker's stderr kept in its error message


def _worker_env() -> dict[str, str]:
    """The environment of a worker: this interpreter's peftlab first on the path."""
    import peftlab

    source = str(Path(peftlab.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return env


_live: set[subprocess.Popen] = set()  # running workers, stopped by `stop_workers` (Ctrl-C, SIGTERM)
_live_lock = threading.Lock()
_stopping = threading.Event()  # set by `stop_workers`: no worker starts (or restarts) after it


def spawn(spec: dict[str, Any], scratch: Path, label: str, timeout: float | None = None,
          env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one worker phase (with `env` added to its environment, e.g. the CUDA device it owns);
    its result, or {"error": {...}} whatever way it failed."""
    spec_path, out_path = scratch / f"{label}.spec.json", scratch / f"{label}.result.json"
    write_json(spec_path, spec)
    out_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "peftlab.compare.worker", str(spec_path), str(out_path)]
    with _live_lock:
        if _stopping.is_set():
            return {"error": {"type": "Interrupted", "message": f"the {label} worker was not started: stopping"}}
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                                   env={**_worker_env(), **(env or {})})
        _live.add(process)
    with process:
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return {"error": {"type": "Timeout", "message": f"the {label} worker ran over {timeout:.0f} s"}}
        except BaseException:  # Ctrl-C while waiting: the worker goes too
            process.kill()
            raise
        finally:
            with _live_lock:
                _live.discard(process)
    if out_path.exists():
        return json.loads(out_path.read_text())
    if process.returncode < 0:
        why = f"killed by signal {-process.returncode}" + (" (out of memory?)" if process.returncode == -9 else "")
    else:
        why = f"exited with code {process.returncode}"
    tail = (stderr or "")[-STDERR_TAIL:].strip()
    return {"error": {"type": "WorkerCrashed", "message": f"the {label} worker {why}" + (f": {tail}" if tail else "")}}


def stop_workers() -> None:
    """Kill every worker `spawn` is waiting for (runs in other threads when runs go in parallel)."""
    with _live_lock:
        _stopping.set()
        for process in _live:
            process.kill()


def allow_workers() -> None:
    """Let `spawn` start workers again (a new comparison after `stop_workers`)."""
    _stopping.clear()

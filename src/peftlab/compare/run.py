"""Running a comparison: a training worker per method, one timing worker, then the outputs.

    plan = make_plan(methods="full,lora,prompt")
    results = run_compare(plan, "compare-out")     # results.json, report.md, charts/*.png

Order of work: each method trains in its own fresh process (`peftlab.compare.worker`, so peak
memory is its own and a crash is contained), then a single timing process measures step time and
latency for all methods interleaved (`peftlab.compare.timing`), then the estimates, and last the
outputs. Worker failures of any kind, a Python exception or a kill by the OS, become that
method's `error`; the comparison carries on with the others.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from peftlab.compare.estimates import estimate_method
from peftlab.compare.plan import ComparePlan
from peftlab.compare.results import assemble, versions
from peftlab.io import write_json
from peftlab.tables import TableData, print_tables

STDERR_TAIL = 2000  # characters of a crashed worker's stderr kept in its error message


def _worker_env() -> dict[str, str]:
    """The environment of a worker: this interpreter's peftlab first on the path."""
    import peftlab

    source = str(Path(peftlab.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return env


def spawn(spec: dict[str, Any], scratch: Path, label: str, timeout: float | None = None) -> dict[str, Any]:
    """Run one worker phase; its result, or {"error": {...}} whatever way it failed."""
    spec_path, out_path = scratch / f"{label}.spec.json", scratch / f"{label}.result.json"
    write_json(spec_path, spec)
    out_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "peftlab.compare.worker", str(spec_path), str(out_path)]
    try:
        done = subprocess.run(command, stderr=subprocess.PIPE, text=True, env=_worker_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": {"type": "Timeout", "message": f"the {label} worker ran over {timeout:.0f} s"}}
    if out_path.exists():
        return json.loads(out_path.read_text())
    if done.returncode < 0:
        why = f"killed by signal {-done.returncode}" + (" (out of memory?)" if done.returncode == -9 else "")
    else:
        why = f"exited with code {done.returncode}"
    tail = (done.stderr or "")[-STDERR_TAIL:].strip()
    return {"error": {"type": "WorkerCrashed", "message": f"the {label} worker {why}" + (f": {tail}" if tail else "")}}


def run_info(plan: ComparePlan, command: str | None) -> dict[str, Any]:
    return {"command": command or shlex.join(["peftlab", *sys.argv[1:]]), "versions": versions(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "threads": plan.threads, "device": plan.device,
            "load_average_start": list(os.getloadavg())}


def tune_learning_rates(plan: ComparePlan, scratch: Path, console: Console, progress: bool,
                        timeout: float | None) -> ComparePlan:
    """The plan with each method's learning rate chosen by its sweep (the literature rate if it failed).

    The cost is announced before the first run (runs and optimizer steps, relative to the
    comparison's own training) and, once a method's sweep has run, as a time left extrapolated from
    the seconds per sweep step measured so far. Each sweep records its wall time (`wall_s`).
    """
    from peftlab.compare.sweep import MAX_EXTENSIONS, sweep_grid

    runs = sum(len(sweep_grid(m)) for m in plan.methods)
    steps = runs * plan.budget.steps
    console.print(f"learning-rate sweep first: {runs} runs of {plan.budget.steps} steps ({steps:,} steps, "
                  f"{runs / len(plan.methods):.0f}x the comparison's own {len(plan.methods) * plan.budget.steps:,}), "
                  f"up to {MAX_EXTENSIONS} more per method whose best rate is on its grid's edge; "
                  "diverging runs stop early")
    tuned, spent, steps_done = [], 0.0, 0
    for index, method in enumerate(plan.methods, 1):
        grid = ", ".join(f"{rate:g}" for rate in sweep_grid(method))
        console.rule(f"sweep {index}/{len(plan.methods)} {method.method}: lr {grid}")
        began = time.perf_counter()
        sweep = spawn({"phase": "sweep", "plan": plan.to_dict(), "method": method.method, "progress": progress},
                      scratch, f"sweep-{method.method}", timeout)
        sweep["wall_s"] = time.perf_counter() - began
        spent += sweep["wall_s"]
        extra = len(sweep.get("extended", ())) * plan.budget.steps  # runs past the grid's edge
        steps, steps_done = steps + extra, steps_done + len(sweep_grid(method)) * plan.budget.steps + extra
        if index < len(plan.methods):
            console.print(f"sweep {method.method}: {sweep['wall_s']:.0f} s; about "
                          f"{spent / steps_done * (steps - steps_done) / 60:.1f} min of sweeping left")
        chosen = sweep.get("chosen")
        tuned.append(dataclasses.replace(method, learning_rate=chosen or method.learning_rate, sweep=sweep))
    return dataclasses.replace(plan, methods=tuple(tuned))


def run_compare(plan: ComparePlan, out_dir: str | Path, *, progress: bool = True, keep_adapters: bool = False,
                command: str | None = None, console: Console | None = None,
                worker_timeout: float | None = None, table_format: str = "table",
                report_to: str = "none") -> dict[str, Any]:
    """Run `plan`, write results.json, report.md, report.html and charts into `out_dir`; return the results.

    The console table is printed for `table_format` "table" (the caller prints other formats);
    `report_to` trackers (`peftlab.tracking`) receive the results under `out_dir`."""
    from peftlab.compare.charts import write_charts
    from peftlab.compare.html import write_html_report
    from peftlab.compare.report import console_table, write_report
    from peftlab.tracking import log_compare_results

    console = console or Console(quiet=not progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = run_info(plan, command)
    started = time.perf_counter()
    trained: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="peftlab-compare-") as scratch_name:
        scratch = Path(scratch_name)
        if plan.budget.tune_lr:
            plan = tune_learning_rates(plan, scratch, console, progress, worker_timeout)
        plan_dict = plan.to_dict()
        for index, method in enumerate(plan.methods, 1):
            fields = ", ".join(f"{k}={v}" for k, v in method.fields.items())
            console.rule(f"[{index}/{len(plan.methods)}] {method.method}  lr {method.learning_rate:g}"
                         + (f"  {fields}" if fields else ""))
            adapter_dir = (out_dir / "adapters" if keep_adapters else scratch / "adapters") / method.method
            began = time.perf_counter()
            trained[method.method] = spawn({"phase": "train", "plan": plan_dict, "method": method.method,
                                            "adapter_dir": str(adapter_dir), "progress": progress},
                                           scratch, f"train-{method.method}", worker_timeout)
            trained[method.method]["worker_wall_s"] = time.perf_counter() - began
            if "error" in trained[method.method]:
                console.print(f"[red]{method.method} failed:[/red] {trained[method.method]['error']['message'][:500]}")
        console.rule(f"timing: {len(plan.methods)} methods interleaved, {plan.budget.timing_rounds} rounds")
        timing = spawn({"phase": "timing", "plan": plan_dict, "progress": progress}, scratch, "timing", worker_timeout)
    if "error" in timing:
        console.print(f"[red]timing phase failed:[/red] {timing['error']['message'][:500]}")
        timing = {"methods": {m.method: {"error": timing["error"]} for m in plan.methods}, "base": {}}

    from peftlab.models.loading import resolve_model_folder

    task = timing.get("task") or next((r["task"] for r in trained.values() if "task" in r), {})
    seq_len = timing.get("train_batch_tokens") or plan.budget.max_length
    folder = resolve_model_folder(plan.model)
    estimates = {m.method: estimate_method(plan, m, folder, num_labels=task.get("num_labels"), seq_len=seq_len,
                                           device=timing.get("device", "cpu")) for m in plan.methods}
    info["task"] = task
    info["wall_s"] = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of all workers: unlike wall time, barely affected by other jobs on the machine.
    info["workers_cpu_s"] = children.ru_utime + children.ru_stime
    info["load_average_end"] = list(os.getloadavg())
    results = assemble(plan, info, trained, timing, estimates)
    write_json(out_dir / "results.json", results)
    write_charts(results, out_dir / "charts")
    write_report(results, out_dir / "report.md")
    write_html_report(results, out_dir / "charts", out_dir / "report.html")
    log_compare_results(results, out_dir, report_to)
    if table_format == "table":
        print_tables([TableData.from_rich(console_table(results))], console=console)
    return results

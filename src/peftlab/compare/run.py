"""Running a comparison: learning rates, training runs, timing, then the verdicts and outputs.

    plan = make_plan(methods="full,lora,prompt")
    results = run_compare(plan, "compare-out")     # results.json, report.md, charts/*.png

Order of work:
1. `max_length` is fitted to the data's token lengths (`lengths.py`) unless given;
2. each method's learning rate is chosen on a validation split (`lr_choice.py`): a full sweep
   per method first in the tuned profile, one worker each; in the quick profile a short probe
   that opens the first seed's training run;
3. each method trains once per seed in its own fresh process (`training.py`), so peak memory is
   its own and a crash is contained;
4. one timing process measures step time and latency for all methods interleaved, in rounds
   until every ratio is known to ±5 % (`timing.py`); a generation task also scores the base
   model without training (the zero-shot floor);
5. the quality analysis (`quality.py`: intervals, learned or not, tiers), the estimates at the
   shape of each method's peak step (`estimates.py`), and the outputs.
Worker failures of any kind, a Python exception or a kill by the OS, become that method's
`error`; the comparison carries on with the others.
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

from peftlab.compare import quality as quality_analysis
from peftlab.compare.estimates import estimate_method
from peftlab.compare.lengths import fit_max_length
from peftlab.compare.lr_choice import announce, candidate_rates
from peftlab.compare.plan import REFERENCE_METHOD, ComparePlan
from peftlab.compare.results import assemble, versions
from peftlab.compare.runs import load_compare_task
from peftlab.io import write_json

STDERR_TAIL = 2000  # characters of a crashed worker's stderr kept in its error message
# glibc returns allocations of 64 KiB and more to the system as soon as they are freed (and no
# longer raises that threshold on its own), so a training worker's RSS follows its live tensors
# instead of keeping every freed activation chunk: its peak RSS then means what it says.
WORKER_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _worker_env(allocator: bool) -> dict[str, str]:
    """The environment of a worker: this interpreter's peftlab first on the path."""
    import peftlab

    source = str(Path(peftlab.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    if allocator:
        env.update(WORKER_ALLOCATOR)
    return env


def spawn(spec: dict[str, Any], scratch: Path, label: str, timeout: float | None = None) -> dict[str, Any]:
    """Run one worker phase; its result, or {"error": {...}} whatever way it failed."""
    spec_path, out_path = scratch / f"{label}.spec.json", scratch / f"{label}.result.json"
    write_json(spec_path, spec)
    out_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "peftlab.compare.worker", str(spec_path), str(out_path)]
    try:
        done = subprocess.run(command, stderr=subprocess.PIPE, text=True, timeout=timeout,
                              env=_worker_env(allocator=spec["phase"] == "train"))
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
            "load_average_start": list(os.getloadavg()), "allocator": WORKER_ALLOCATOR}


def fit_lengths(plan: ComparePlan, console: Console) -> tuple[ComparePlan, dict[str, Any]]:
    """The plan with `max_length` fitted to the data (unless given), and the length facts."""
    from peftlab.models.loading import load_tokenizer

    budget = plan.budget
    lengths = fit_max_length(load_compare_task(plan), load_tokenizer(plan.model), cap=budget.max_length_cap,
                             given=budget.max_length)
    how = "fitted to the data" if lengths["chosen_from_data"] else "given"
    console.print(f"max_length {lengths['max_length']} ({how}; longest row {lengths['longest']} tokens, "
                  f"{lengths['train_truncated']} training and {lengths['dev_truncated']} dev rows cut)")
    if lengths["warning"]:
        console.print(f"[yellow]warning:[/yellow] {lengths['warning']}")
    return dataclasses.replace(plan, budget=dataclasses.replace(budget, max_length=lengths["max_length"])), lengths


def choose_rates(plan: ComparePlan, scratch: Path, console: Console, progress: bool,
                 timeout: float | None) -> ComparePlan:
    """The plan with each method's learning rate chosen by a sweep on the validation split (the
    literature rate where the sweep failed, with the failure recorded)."""
    console.print(announce(plan))
    chosen, spent = [], 0.0
    for index, method in enumerate(plan.methods, 1):
        grid = ", ".join(f"{rate:g}" for rate in candidate_rates(plan, method))
        console.rule(f"learning rate {index}/{len(plan.methods)} {method.method} ({plan.budget.lr_choice}): {grid}")
        began = time.perf_counter()
        found = spawn({"phase": "lr", "plan": plan.to_dict(), "method": method.method, "progress": progress},
                      scratch, f"lr-{method.method}", timeout)
        found["wall_s"] = time.perf_counter() - began
        spent += found["wall_s"]
        if index < len(plan.methods):
            console.print(f"{method.method}: lr {found.get('chosen') or method.learning_rate:g} in "
                          f"{found['wall_s']:.0f} s; about {spent / index * (len(plan.methods) - index) / 60:.1f} "
                          "min of rate choice left")
        rate = found.get("chosen") or method.learning_rate
        chosen.append(dataclasses.replace(method, learning_rate=rate, sweep=found))
    return dataclasses.replace(plan, methods=tuple(chosen))


def _finished_line(name: str, runs: list[dict[str, Any]]) -> str:
    scores = [r["quality"]["value"] for r in runs if r.get("quality") and r["quality"].get("value") is not None]
    metric = next((r["quality"]["metric"] for r in runs if r.get("quality")), "")
    step = next((r["train"]["in_run_step_ms"].get("median") for r in runs if r.get("train")), None)
    shown = ", ".join(f"{s:.4g}" for s in scores) or "–"
    return f"{name}: dev {metric} {shown}" + (f"; in-run step {step:.0f} ms" if step else "")


def train_methods(plan: ComparePlan, scratch: Path, adapters: Path, console: Console, progress: bool,
                  timeout: float | None) -> tuple[ComparePlan, dict[str, list[dict[str, Any]]]]:
    """Every method once per run seed, each run in its own worker; the plan comes back with the
    rates the first seeds' probes chose (quick profile), which the later seeds and timing use."""
    trained: dict[str, list[dict[str, Any]]] = {}
    methods = list(plan.methods)
    for index, method in enumerate(plan.methods, 1):
        fields = ", ".join(f"{k}={v}" for k, v in method.fields.items())
        runs = []
        for seed in plan.run_seeds:
            current = dataclasses.replace(plan, methods=tuple(methods))
            seeds = f"  seed {seed}" if len(plan.run_seeds) > 1 else ""
            rate = (f"lr probe {', '.join(f'{r:g}' for r in candidate_rates(plan, method))}"
                    if plan.budget.lr_choice == "probe" and methods[index - 1].sweep is None
                    else f"lr {methods[index - 1].learning_rate:g}")
            console.rule(f"[{index}/{len(plan.methods)}] {method.method}  {rate}" + (f"  {fields}" if fields else "")
                         + seeds)
            began = time.perf_counter()
            folder = adapters / method.method / (f"seed-{seed}" if len(plan.run_seeds) > 1 else "")
            result = spawn({"phase": "train", "plan": current.to_dict(), "method": method.method, "seed": seed,
                            "adapter_dir": str(folder), "progress": progress},
                           scratch, f"train-{method.method}-{seed}", timeout)
            result["worker_wall_s"] = time.perf_counter() - began
            if result.get("lr_choice"):
                found = result["lr_choice"]
                methods[index - 1] = dataclasses.replace(method, learning_rate=found["chosen"] or method.learning_rate,
                                                         sweep=found)
            if "error" in result:
                console.print(f"[red]{method.method} failed:[/red] {result['error']['message'][:500]}")
            runs.append(result)
        trained[method.method] = runs
        console.print(_finished_line(method.method, runs))
    return dataclasses.replace(plan, methods=tuple(methods)), trained


def _estimates(plan: ComparePlan, trained: dict[str, list[dict[str, Any]]], timing: dict[str, Any],
               task: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each method's estimate at the batch shape of its own peak step (else the timing batch)."""
    from peftlab.models.loading import resolve_model_folder

    folder = resolve_model_folder(plan.model)
    found = {}
    for method in plan.methods:
        runs = trained.get(method.method) or [{}]
        peak = ((runs[0].get("memory") or {}).get("tensor_peak") or {}).get("batch_shape")
        rows, tokens = peak or (plan.budget.batch_size, timing.get("train_batch_tokens") or plan.budget.max_length)
        found[method.method] = estimate_method(plan, method, folder, num_labels=task.get("num_labels"),
                                               batch_size=rows, seq_len=tokens, device=timing.get("device", "cpu"))
    return found


def _baseline(task: dict[str, Any], trained: dict[str, list[dict[str, Any]]],
              zero_shot: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(facts for the metrics, the untrained predictor's quality) of the comparison's task."""
    if task.get("kind") != "classification":
        return {}, (zero_shot or {}).get("quality")
    labels = next((r["quality"]["per_example"]["labels"] for runs in trained.values() for r in runs
                   if (r.get("quality") or {}).get("per_example")), None)
    if labels is None or not task.get("train_label_counts"):
        return {"labels": [], "num_labels": task.get("num_labels")}, None
    return ({"labels": labels, "num_labels": task["num_labels"]},
            quality_analysis.majority_baseline(labels, task["train_label_counts"]))


def run_compare(plan: ComparePlan, out_dir: str | Path, *, progress: bool = True, keep_adapters: bool = False,
                command: str | None = None, console: Console | None = None,
                worker_timeout: float | None = None) -> dict[str, Any]:
    """Run `plan`, write results.json, report.md and charts into `out_dir`; return the results."""
    from peftlab.compare.charts import write_charts
    from peftlab.compare.report import console_table, write_report

    console = console or Console(quiet=not progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = run_info(plan, command)
    started = time.perf_counter()
    plan, lengths = fit_lengths(plan, console)
    zero_shot = None
    with tempfile.TemporaryDirectory(prefix="peftlab-compare-") as scratch_name:
        scratch = Path(scratch_name)
        if plan.budget.lr_choice == "sweep":
            plan = choose_rates(plan, scratch, console, progress, worker_timeout)
        elif plan.budget.lr_choice == "probe":
            console.print(announce(plan))
        adapters = out_dir / "adapters" if keep_adapters else scratch / "adapters"
        plan, trained = train_methods(plan, scratch, adapters, console, progress, worker_timeout)
        console.rule(f"timing: {len(plan.methods)} methods interleaved, rounds until every ratio is known "
                     f"to ±5 % (at most {plan.budget.timing_seconds:.0f} s)")
        timing = spawn({"phase": "timing", "plan": plan.to_dict(), "progress": progress}, scratch, "timing",
                       worker_timeout)
        task = timing.get("task") or next((r["task"] for runs in trained.values() for r in runs if "task" in r), {})
        if task.get("kind") == "causal-lm":
            console.rule("zero-shot: the base model on the dev set without training")
            zero_shot = spawn({"phase": "baseline", "plan": plan.to_dict()}, scratch, "baseline", worker_timeout)
    if "error" in timing:
        console.print(f"[red]timing phase failed:[/red] {timing['error']['message'][:500]}")
        timing = {"methods": {m.method: {"error": timing["error"]} for m in plan.methods}, "base": {}}

    facts, baseline = _baseline(task, trained, zero_shot)
    analysis = quality_analysis.analyse(
        {name: [r["quality"] for r in runs if r.get("quality")] for name, runs in trained.items()},
        kind=task.get("kind", "classification"), facts=facts, baseline=baseline, reference=REFERENCE_METHOD)
    estimates = _estimates(plan, trained, timing, task)
    info["task"] = task
    info["wall_s"] = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of all workers: unlike wall time, barely affected by other jobs on the machine.
    info["workers_cpu_s"] = children.ru_utime + children.ru_stime
    info["load_average_end"] = list(os.getloadavg())
    results = assemble(plan, info, trained, timing, estimates, analysis, lengths)
    write_json(out_dir / "results.json", results)
    write_charts(results, out_dir / "charts")
    write_report(results, out_dir / "report.md")
    console.print(console_table(results))
    return results

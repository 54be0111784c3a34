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

import concurrent.futures as futures
import dataclasses
import os
import resource
import shlex
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from peftlab.compare import quality as quality_analysis
from peftlab.compare.estimates import estimate_method
from peftlab.compare.eta import Eta, calibrate, phases
from peftlab.compare.lengths import fit_max_length
from peftlab.compare.executor import make_executor
from peftlab.compare.lr_choice import announce, candidate_rates
from peftlab.compare.plan import REFERENCE_METHOD, ComparePlan, MethodPlan
from peftlab.compare.processes import allow_workers, spawn
from peftlab.compare.results import assemble, versions
from peftlab.compare.runs import load_compare_task
from peftlab.compare.state import CompareState
from peftlab.data.tasks import Task
from peftlab.errors import ConfigError, PeftlabError
from peftlab.io import write_json
from peftlab.tables import TableData, print_tables

def run_info(plan: ComparePlan, command: str | None) -> dict[str, Any]:
    return {"command": command or shlex.join(["peftlab", *sys.argv[1:]]), "versions": versions(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "threads": plan.threads, "device": plan.device,
            "load_average_start": list(os.getloadavg())}


def fit_lengths(plan: ComparePlan, console: Console) -> tuple[ComparePlan, dict[str, Any], Task]:
    """The plan with `max_length` fitted to the data (unless given), the length facts, and the task
    (read once here; the calibration trains on it)."""
    from peftlab.models.loading import load_tokenizer

    budget = plan.budget
    task = load_compare_task(plan)
    if not task.dev:
        raise ConfigError(f"data {plan.data!r} has no dev rows to score the methods on: name a dev file, or "
                          "give --dev-fraction above 0 to hold out part of the training rows")
    if task.dev_origin:
        console.print(f"dev split: {task.dev_origin}", highlight=False)
    lengths = fit_max_length(task, load_tokenizer(plan.model), cap=budget.max_length_cap, given=budget.max_length,
                             batch_size=budget.batch_size, eval_batch_size=budget.eval_batch_size)
    how = "fitted to the data" if lengths["chosen_from_data"] else "given"
    console.print(f"max_length {lengths['max_length']} ({how}; longest row {lengths['longest']} tokens, "
                  f"{lengths['train_truncated']} training and {lengths['dev_truncated']} dev rows cut)")
    if lengths["warning"]:
        console.print(f"[yellow]warning:[/yellow] {lengths['warning']}")
    return dataclasses.replace(plan, budget=dataclasses.replace(budget, max_length=lengths["max_length"])), lengths, task


class CompareInterrupted(PeftlabError):
    """Ctrl-C or SIGTERM stopped a comparison; what finished is kept in its folder."""


@dataclass
class Comparison:
    """One comparison in progress: its plan, saved state, time estimate and output."""

    plan: ComparePlan
    out_dir: Path
    scratch: Path
    state: CompareState
    eta: Eta
    console: Console
    progress: bool
    timeout: float | None
    info: dict[str, Any]
    lengths: dict[str, Any]
    executor: Any  # `executor.LocalExecutor` or `executor.RayExecutor`: where training and sweep runs go

    def phase(self, name: str, spec: dict[str, Any], label: str) -> dict[str, Any]:
        """Run one worker phase here, now, and book its time against the estimate (the timing and
        zero-shot phases: one process on this machine's device)."""
        began = time.perf_counter()
        result = spawn(spec, self.scratch, label, self.timeout)
        result["worker_wall_s"] = time.perf_counter() - began
        self.eta.finish(name, result["worker_wall_s"])
        return result

    def run_all(self, jobs: list, start, finished) -> None:
        """Run the jobs `jobs` (sortable keys) on the executor, at most its `capacity` at once,
        the smallest ready key first. `start(key)` gives (label, spec); `finished(key, result)`
        runs in this thread as each ends and returns the keys that became ready through it."""
        ready, pending = sorted(jobs), {}
        while ready or pending:
            while ready and len(pending) < self.executor.capacity:
                key = ready.pop(0)
                label, spec = start(key)
                began = time.perf_counter()
                pending[self.executor.submit(spec, self.scratch, label, self.timeout)] = (key, label, began)
            done, _ = futures.wait(list(pending), return_when=futures.FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: pending[f][0]):
                key, label, began = pending.pop(future)
                result = future.result()
                result.setdefault("worker_wall_s", time.perf_counter() - began)
                self.eta.finish(label, result["worker_wall_s"])
                ready = sorted(ready + list(finished(key, result)))

    def choose_rates(self) -> None:
        """Each method's learning rate chosen by a sweep on the validation split (the literature
        rate where the sweep failed, with the failure recorded); finished sweeps are kept."""
        self.console.print(announce(self.plan))
        sweeps = {m.method: self.state.sweep(m.method) for m in self.plan.methods}
        methods = self.plan.methods

        def start(index: int) -> tuple[str, dict[str, Any]]:
            method = methods[index]
            grid = ", ".join(f"{rate:g}" for rate in candidate_rates(self.plan, method))
            self.console.rule(f"learning rate {index + 1}/{len(methods)} {method.method} (sweep): {grid}")
            return f"lr-{method.method}", {"phase": "lr", "plan": self.plan.to_dict(), "method": method.method,
                                           "progress": self.progress and self.executor.capacity == 1}

        def finished(index: int, found: dict[str, Any]) -> list:
            name = methods[index].method
            found["wall_s"] = found.pop("worker_wall_s")
            sweeps[name] = found
            self.state.save_sweep(name, found)
            self.console.print(f"{name}: lr {found.get('chosen') or methods[index].learning_rate:g} in "
                               f"{found['wall_s']:.0f} s")
            self.console.print(self.eta.line(), highlight=False)
            return []

        self.run_all([i for i, m in enumerate(methods) if sweeps[m.method] is None], start, finished)
        self.plan = dataclasses.replace(self.plan, methods=tuple(
            dataclasses.replace(m, learning_rate=sweeps[m.method].get("chosen") or m.learning_rate,
                                sweep=sweeps[m.method]) for m in self.plan.methods))

    def train(self, keep_adapters: bool) -> dict[str, list[dict[str, Any]]]:
        """Every method once per run seed, each run in its own worker, saved as it finishes; the
        plan takes the rates the first seeds' probes chose (quick profile), which the later seeds
        and the timing use. After each method the report so far is written."""
        trained: dict[str, list[dict[str, Any]]] = {}
        methods = list(self.plan.methods)
        adapters = self.out_dir / "adapters" if keep_adapters else self.scratch / "adapters"
        seeds = self.plan.run_seeds
        runs = [dict(enumerate(self.state.runs(m.method))) for m in methods]  # seed index -> result, per method
        # A probe (quick profile) chooses the rate in a method's first run: its later seeds wait for it.
        waits = self.plan.budget.lr_choice == "probe"

        def opened(index: int) -> list[tuple[int, int]]:
            """The runs of method `index` that may start now (and its probed rate, once known)."""
            if runs[index].get(0, {}).get("lr_choice"):
                methods[index] = _with_probe(self.plan.methods[index], runs[index][0]["lr_choice"])
            first_done = 0 in runs[index]
            return [(index, s) for s in range(len(seeds))
                    if s not in runs[index] and (s == 0 or first_done or not waits)]

        def start(key: tuple[int, int]) -> tuple[str, dict[str, Any]]:
            index, seed_index = key
            method, seed = methods[index], seeds[seed_index]
            current = dataclasses.replace(self.plan, methods=tuple(methods))
            self.console.rule(_run_title(current, index + 1, method, seed))
            folder = adapters / method.method / (f"seed-{seed}" if len(seeds) > 1 else "")
            return f"train-{method.method}-{seed}", {
                "phase": "train", "plan": current.to_dict(), "method": method.method, "seed": seed,
                "adapter_dir": str(folder), "progress": self.progress and self.executor.capacity == 1}

        def finished(key: tuple[int, int], result: dict[str, Any]) -> list[tuple[int, int]]:
            index, seed_index = key
            name = methods[index].method
            if "error" in result:
                self.console.print(f"[red]{name} failed:[/red] {result['error']['message'][:500]}")
            runs[index][seed_index] = result
            in_order = []  # the finished runs up to the first seed still running
            for seed_done in range(len(seeds)):
                if seed_done not in runs[index]:
                    break
                in_order.append(runs[index][seed_done])
            self.state.save_runs(name, in_order)  # --resume continues after the seeds finished in order
            if len(in_order) == len(seeds):
                trained[name] = in_order
                self.plan = dataclasses.replace(self.plan, methods=tuple(methods))
                self.write({m.method: trained[m.method] for m in methods if m.method in trained},
                           timing=None, zero_shot=None)
                self.console.print(_finished_line(name, in_order), highlight=False)
                self.console.print(self.eta.line(), highlight=False)
            return opened(index) if seed_index == 0 and waits else []

        jobs = [key for index in range(len(methods)) for key in opened(index)]
        trained.update({m.method: [runs[i][s] for s in range(len(seeds))] for i, m in enumerate(methods)
                        if len(runs[i]) == len(seeds)})  # finished before a --resume
        self.run_all(jobs, start, finished)
        self.plan = dataclasses.replace(self.plan, methods=tuple(methods))
        return {m.method: [runs[i][s] for s in range(len(seeds))] for i, m in enumerate(methods)}

    def write(self, trained: dict[str, list[dict[str, Any]]], timing: dict[str, Any] | None,
              zero_shot: dict[str, Any] | None) -> dict[str, Any]:
        """results.json, report.md and charts of what has finished (timing None: still pending)."""
        from peftlab.compare.charts import write_charts
        from peftlab.compare.html import write_html_report
        from peftlab.compare.report import write_report

        done = dataclasses.replace(self.plan, methods=tuple(m for m in self.plan.methods if m.method in trained))
        task = (timing or {}).get("task") or next(
            (r["task"] for runs in trained.values() for r in runs if "task" in r), {})
        facts, baseline = _baseline(task, trained, zero_shot)
        analysis = quality_analysis.analyse(
            {name: [r["quality"] for r in runs if r.get("quality")] for name, runs in trained.items()},
            kind=task.get("kind", "classification"), facts=facts, baseline=baseline, reference=REFERENCE_METHOD)
        info = dict(self.info, task=task, wall_s=time.perf_counter() - self.eta.started,
                    load_average_end=list(os.getloadavg()))
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU seconds of all workers: unlike wall time, barely affected by other jobs on the machine.
        info["workers_cpu_s"] = children.ru_utime + children.ru_stime
        if timing is None:
            info["in_progress"] = {"finished": len(done.methods), "methods": len(self.plan.methods)}
        results = assemble(done, info, trained, timing, _estimates(done, trained, timing or {}, task), analysis,
                           self.lengths)
        write_json(self.out_dir / "results.json", results)
        write_charts(results, self.out_dir / "charts")
        write_report(results, self.out_dir / "report.md")
        write_html_report(results, self.out_dir / "charts", self.out_dir / "report.html")
        return results


def _with_probe(method: MethodPlan, found: dict[str, Any]) -> MethodPlan:
    return dataclasses.replace(method, learning_rate=found.get("chosen") or method.learning_rate, sweep=found)


def _run_title(plan: ComparePlan, index: int, method: MethodPlan, seed: int) -> str:
    fields = ", ".join(f"{k}={v}" for k, v in method.fields.items())
    rate = (f"lr probe {', '.join(f'{r:g}' for r in candidate_rates(plan, method))}"
            if plan.budget.lr_choice == "probe" and method.sweep is None else f"lr {method.learning_rate:g}")
    seeds = f"  seed {seed}" if len(plan.run_seeds) > 1 else ""
    return f"[{index}/{len(plan.methods)}] {method.method}  {rate}" + (f"  {fields}" if fields else "") + seeds


def _finished_line(name: str, runs: list[dict[str, Any]]) -> str:
    scores = [r["quality"]["value"] for r in runs if r.get("quality") and r["quality"].get("value") is not None]
    metric = next((r["quality"]["metric"] for r in runs if r.get("quality")), "")
    step = next((r["train"]["in_run_step_ms"].get("median") for r in runs if r.get("train")), None)
    shown = ", ".join(f"{s:.4g}" for s in scores) or "–"
    return f"{name}: dev {metric} {shown}" + (f"; in-run step {step:.0f} ms" if step else "")


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
                command: str | None = None, console: Console | None = None, worker_timeout: float | None = None,
                resume: bool = False, table_format: str = "table", report_to: str = "none",
                executor: str = "local", parallel: int = 1, address: str | None = None) -> dict[str, Any]:
    """Run `plan`, write results.json, report.md, report.html and charts into `out_dir`; return the results.

    What finishes is saved in `out_dir/runs` as it goes (`state.py`) and the report so far is
    rewritten after each method; `resume` continues a comparison stopped there. Ctrl-C or SIGTERM
    stop the running workers and raise `CompareInterrupted` with what was kept. Training and sweep
    runs go to `executor` ("local", `parallel` at once, or "ray" at `address`: see `executor.py`).
    The console table is printed for `table_format` "table" (the caller prints other formats);
    `report_to` trackers (`peftlab.tracking`) receive the results under `out_dir`.
    """
    from peftlab.compare.report import console_table
    from peftlab.tracking import log_compare_results

    console = console or Console(quiet=not progress)
    runner = make_executor(executor, parallel=parallel, address=address, device=plan.device, threads=plan.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    allow_workers()
    info = run_info(plan, command)
    plan, lengths, task = fit_lengths(plan, console)
    state = CompareState(out_dir)
    if resume:
        state.resume(plan)
        console.print(f"resuming the comparison in {out_dir}: finished runs are kept")
    else:
        state.start(plan, lengths, info["command"])
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        calibration = calibrate(plan, lengths, task)
        eta = Eta(phases(plan, calibration), slots=runner.slots)
        console.print(f"estimated duration: about {eta.total_s / 60:.0f} min (a training step of full fine-tuning "
                      f"takes {calibration['step_s'] * 1000:.0f} ms here now); training runs: {runner.description}")
        with tempfile.TemporaryDirectory(prefix="peftlab-compare-") as scratch_name:
            run = Comparison(plan, out_dir, Path(scratch_name), state, eta, console, progress, worker_timeout,
                             info, lengths, runner)
            trained, timing, zero_shot = _run_phases(run, keep_adapters)
    except KeyboardInterrupt:
        finished = sum(1 for m in plan.methods if len(state.runs(m.method)) == len(plan.run_seeds))
        raise CompareInterrupted(f"interrupted: {finished} of {len(plan.methods)} methods finished and are kept in "
                                 f"{out_dir} (report so far: {out_dir / 'report.md'}); continue with the same options "
                                 f"and --resume {out_dir}") from None
    finally:
        runner.close()  # interrupted: every running worker stops (its run is lost, finished ones are kept)
        allow_workers()  # the stop was this comparison's: later workers in this process may start
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    results = run.write(trained, timing, zero_shot)
    log_compare_results(results, out_dir, report_to)
    if table_format == "table":
        print_tables([TableData.from_rich(console_table(results))], console=console)
    return results


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _run_phases(run: Comparison, keep_adapters: bool):
    """Learning rates, training runs, timing and (generation) the zero-shot floor."""
    if run.plan.budget.lr_choice == "sweep":
        run.choose_rates()
    elif run.plan.budget.lr_choice == "probe":
        run.console.print(announce(run.plan))
    trained = run.train(keep_adapters)
    run.console.rule(f"timing: {len(run.plan.methods)} methods interleaved, rounds until every ratio is known "
                     f"to ±5 % (at most {run.plan.budget.timing_seconds:.0f} s)")
    timing = run.phase("timing", {"phase": "timing", "plan": run.plan.to_dict(), "progress": run.progress}, "timing")
    zero_shot = None
    task = timing.get("task") or next((r["task"] for runs in trained.values() for r in runs if "task" in r), {})
    if task.get("kind") == "causal-lm":
        run.console.rule("zero-shot: the base model on the dev set without training")
        zero_shot = run.phase("baseline", {"phase": "baseline", "plan": run.plan.to_dict()}, "baseline")
    if "error" in timing:
        run.console.print(f"[red]timing phase failed:[/red] {timing['error']['message'][:500]}")
        timing = {"methods": {m.method: {"error": timing["error"]} for m in run.plan.methods}, "base": {}}
    run.console.print(run.eta.line(), highlight=False)
    return trained, timing, zero_shot

"""`results.json`: one record per method, in a fixed schema, every figure with its uncertainty.

    {"schema": "peftlab.compare/2", "run_info": {...}, "plan": ComparePlan.to_dict(),
     "lengths": {...max_length fitted to the data, rows cut (compare/lengths.py)},
     "timing": {"base_latency", "control": {"latency", "ratio_vs_base": {"value", "ci"}},
                "reference", "stop": {"rounds", "reason", "wide", ...}, "threads", "device", ...},
     "quality": {"metric", "points", "higher_is_better", "seeds", "baseline": {"name", "value", "ci"},
                 "ranking", "tiers", "learned", "any_learned", "neighbours", "pairs",
                 "reference", "vs_reference"}          (compare/quality.py; metric's own units)
     "methods": [
       {"method": "lora",
        "run_info": {versions, command, started, wall_s, load averages, ...},
        "config": {"learning_rate", "fields", "source", "notes", "budget", "seed", "run_seeds",
                   "lr_choice": null | {"kind": "probe" | "sweep", "metric", "points": [...], "chosen", ...}},
        "measurements": {
            "params": {"trainable", "base", "total", "percent"},
            "adapter_file_bytes": int,
            "memory": {"tensor_peak": {"peak_mb", "weights_mb", "gradients_mb", "optimizer_mb",
                                       "activations_mb", "batch_shape"},
                       "runtime_rss_mb", "loaded_rss_mb", "peak_rss_mb", "training_mb", "peak_gpu_mb"},
            "step_time": {"median_ms", "ci_ms", "p10_ms", "p90_ms", "samples", "rounds",
                          "throughput_vs_reference": {"value", "ci"} | null},
            "latency": {"unmerged": {...}, "merged": {...} | null,
                        "unmerged_ratio": {"value", "ci"}, "merged_ratio": {"value", "ci"} | null},
            "quality": {"metric", "value", "ci", "dev", "intervals", "seed_values", "sd", "learned",
                        "vs_baseline", "vs_reference", "tier", "dev_rows", "first_train_loss",
                        "final_train_loss", "samples", "runs": [{"seed", "dev", "per_example", ...}]},
            "merge_error": float | null,
            "train": {...}},
        "estimates": {"trainable_params", "percent", "file_bytes", "memory_mb": {...}, "settings", "error"},
        "error": null | {"phase": "train" | "timing" | "lr", "type", "message"}}]}

While a comparison runs, results.json holds the methods finished so far (`run_info.in_progress`
says how many of how many) and no timing yet.

A method whose training worker failed keeps its record with `error` set and the measurements
it has (none from training; step time and latency if the timing phase could run it).
"""

from __future__ import annotations

import platform
import statistics
import sys
from typing import Any

from peftlab.compare.plan import ComparePlan

SCHEMA = "peftlab.compare/2"
RECORD_KEYS = ("method", "run_info", "config", "measurements", "estimates", "error")
MEASUREMENT_KEYS = ("params", "adapter_file_bytes", "memory", "step_time", "latency", "quality",
                    "merge_error", "train")


def versions() -> dict[str, str]:
    import torch
    import transformers

    import peftlab

    return {"peftlab": peftlab.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(), "processor": platform.machine()}


def _inverse(ratio: dict[str, Any] | None) -> dict[str, Any] | None:
    """Throughput is the inverse of the step-time ratio (and so is its interval)."""
    if not ratio:
        return None
    return {"value": 1 / ratio["value"], "ci": [1 / ratio["ci"][1], 1 / ratio["ci"][0]]}


def _quality(runs: list[dict[str, Any]], analysis: dict[str, Any], method: str) -> dict[str, Any] | None:
    """A method's quality: the first run's dev record, its figures averaged over the seed runs,
    and the analysis' intervals and verdicts."""
    scored = [r["quality"] for r in runs if r.get("quality")]
    if not scored:
        return None
    found = dict(scored[0])
    found["runs"] = [{"seed": r.get("seed"), "dev": r["quality"]["dev"], "per_example": r["quality"]["per_example"],
                      "per_prompt": r["quality"].get("per_prompt"), "final_train_loss": r["quality"]["final_train_loss"]}
                     for r in runs if r.get("quality")]
    found.pop("per_example", None)
    found.pop("per_prompt", None)
    found["dev"] = {k: statistics.fmean(q["dev"][k] for q in scored if k in q["dev"]) for k in scored[0]["dev"]}
    verdict = analysis.get("methods", {}).get(method, {})
    intervals = verdict.get("intervals", {})
    found.update({"value": (intervals.get(found["metric"]) or {}).get("value", found["value"]),
                  "ci": (intervals.get(found["metric"]) or {}).get("ci"), "intervals": intervals,
                  "seed_values": verdict.get("seed_values"), "sd": verdict.get("sd"),
                  "learned": verdict.get("learned"), "vs_baseline": verdict.get("vs_baseline"),
                  "vs_reference": analysis.get("vs_reference", {}).get(method),
                  "tier": next((i + 1 for i, tier in enumerate(analysis.get("tiers", [])) if method in tier), None)})
    return found


def method_record(plan: ComparePlan, method: str, run_info: dict[str, Any], runs: list[dict[str, Any]],
                  timing: dict[str, Any] | None, estimate: dict[str, Any], analysis: dict[str, Any]) -> dict[str, Any]:
    """One method's record from its training runs (one per seed), the timing phase (None: not yet
    run) and its estimate."""
    planned = plan.method(method)
    pending = timing is None  # the comparison is still running: the timing phase comes last
    timing = timing or {}
    timed = timing.get("methods", {}).get(method) or {"error": {"type": "Missing", "message": "not timed"}}
    first = runs[0] if runs else {"error": {"type": "Missing", "message": "not trained"}}
    measurements: dict[str, Any] = {key: None for key in MEASUREMENT_KEYS}
    measurements.update({k: v for k, v in first.items() if k in MEASUREMENT_KEYS})
    measurements["quality"] = _quality([r for r in runs if not r.get("error")], analysis, method)
    failed = next((r["error"] for r in runs if r.get("error")), None)
    error = {"phase": "train", **failed} if failed else None
    if (planned.sweep or {}).get("error") and error is None and planned.sweep.get("chosen") is None:
        error = {"phase": "lr", **planned.sweep["error"]}
    if pending:
        pass
    elif timed.get("error"):
        error = error or {"phase": "timing", **timed["error"]}
    else:
        ratios = timed.get("ratios", {})
        step = dict(timed["step"] or {})
        step["throughput_vs_reference"] = _inverse(ratios.get("step_vs_reference"))
        latency = dict(timed["latency"])
        latency["unmerged_ratio"] = ratios.get("unmerged_vs_base")
        latency["merged_ratio"] = ratios.get("merged_vs_base")
        measurements["step_time"], measurements["latency"] = step, latency
    return {"method": method, "run_info": run_info,
            "config": {"learning_rate": planned.learning_rate, "fields": planned.fields, "source": planned.source,
                       "notes": list(planned.notes), "budget": plan.to_dict()["budget"], "seed": plan.seed,
                       "run_seeds": list(plan.run_seeds), "lr_choice": planned.sweep},
            "measurements": measurements, "estimates": estimate, "error": error}


def assemble(plan: ComparePlan, run_info: dict[str, Any], trained: dict[str, list[dict[str, Any]]],
             timing: dict[str, Any] | None, estimates: dict[str, dict[str, Any]], analysis: dict[str, Any],
             lengths: dict[str, Any] | None) -> dict[str, Any]:
    """The results of `plan`'s methods; `timing` None while the comparison still runs (the report
    so far, `run_info["in_progress"]`)."""
    records = [method_record(plan, m.method, run_info, trained.get(m.method, []), timing,
                             estimates.get(m.method, {}), analysis) for m in plan.methods]
    shown_timing = {k: v for k, v in (timing or {}).items() if k not in ("methods", "base")}
    shown_timing["base_latency"] = ((timing or {}).get("base") or {}).get("latency")
    shown_quality = {k: v for k, v in analysis.items() if k != "methods"}
    return {"schema": SCHEMA, "run_info": run_info, "plan": plan.to_dict(), "lengths": lengths,
            "timing": shown_timing, "quality": shown_quality, "reference_method": (timing or {}).get("reference"),
            "methods": records}


def schema_problems(results: dict[str, Any]) -> list[str]:
    """What in `results` does not follow the schema (empty when it does)."""
    problems = []
    if results.get("schema") != SCHEMA:
        problems.append(f"schema is {results.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("run_info", "plan", "timing", "quality", "methods"):
        if key not in results:
            problems.append(f"missing top-level key {key!r}")
    for record in results.get("methods", []):
        name = record.get("method")
        problems += [f"{name}: missing {key!r}" for key in RECORD_KEYS if key not in record]
        measurements = record.get("measurements") or {}
        problems += [f"{name}: measurements lack {key!r}" for key in MEASUREMENT_KEYS if key not in measurements]
        if record.get("error") is None and measurements.get("params") is None:
            problems.append(f"{name}: no error but no measurements")
    return problems

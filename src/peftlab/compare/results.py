"""`results.json`: one record per method, in a fixed schema.

    {"schema": "peftlab.compare/1", "run_info": {...}, "plan": ComparePlan.to_dict(),
     "timing": {"base_latency": spread, "threads", "device", "train_batch_tokens", ...},
     "methods": [
       {"method": "lora",
        "run_info": {versions, command, started, wall_s, load averages, ...},
        "config": {"learning_rate", "fields", "source", "notes", "budget", "seed",
                   "sweep": null | {"metric", "points": [{"learning_rate", "score", "diverged"}], "chosen"}},
        "measurements": {
            "params": {"trainable", "base", "total", "percent"},
            "adapter_file_bytes": int,
            "memory": {"runtime_rss_mb", "loaded_rss_mb", "peak_rss_mb", "training_mb", "peak_gpu_mb"},
            "step_time": {"median_ms", "p10_ms", "p90_ms", "samples", "throughput_vs_reference"},
            "latency": {"unmerged": spread, "merged": spread | null, "unmerged_ratio", "merged_ratio"},
            "quality": {"metric", "value", "dev", "dev_rows", "final_train_loss", "samples"},
            "merge_error": float | null,
            "train": {...}},
        "estimates": {"trainable_params", "percent", "file_bytes", "memory_mb": {...}, "error"},
        "error": null | {"phase": "train" | "timing", "type", "message"}}]}

A method whose training worker failed keeps its record with `error` set and the measurements
it has (none from training; step time and latency if the timing phase could run it).
"""

from __future__ import annotations

import platform
import sys
from typing import Any

from peftlab.compare.plan import REFERENCE_METHOD, ComparePlan

SCHEMA = "peftlab.compare/1"
RECORD_KEYS = ("method", "run_info", "config", "measurements", "estimates", "error")
MEASUREMENT_KEYS = ("params", "adapter_file_bytes", "memory", "step_time", "latency", "quality",
                    "merge_error", "train")


def versions() -> dict[str, str]:
    import torch
    import transformers

    import peftlab

    return {"peftlab": peftlab.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(), "processor": platform.machine()}


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value and reference else None


def method_record(plan: ComparePlan, method: str, run_info: dict[str, Any], trained: dict[str, Any],
                  timing: dict[str, Any], estimate: dict[str, Any]) -> dict[str, Any]:
    """One method's record from its training worker's result, the timing phase and its estimate."""
    planned = plan.method(method)
    timed = timing.get("methods", {}).get(method) or {"error": {"type": "Missing", "message": "not timed"}}
    base = (timing.get("base") or {}).get("latency", {}).get("median_ms")
    reference = (timing.get("methods", {}).get(REFERENCE_METHOD) or {}).get("step") or {}
    measurements: dict[str, Any] = {key: None for key in MEASUREMENT_KEYS}
    measurements.update({k: v for k, v in trained.items() if k in MEASUREMENT_KEYS})
    error = {"phase": "train", **trained["error"]} if trained.get("error") else None
    if timed.get("error"):
        error = error or {"phase": "timing", **timed["error"]}
    else:
        step = dict(timed["step"])
        step["throughput_vs_reference"] = _ratio(reference.get("median_ms"), step.get("median_ms"))
        latency = dict(timed["latency"])
        latency["unmerged_ratio"] = _ratio(latency["unmerged"].get("median_ms"), base)
        latency["merged_ratio"] = _ratio((latency["merged"] or {}).get("median_ms"), base)
        measurements["step_time"], measurements["latency"] = step, latency
    return {"method": method, "run_info": run_info,
            "config": {"learning_rate": planned.learning_rate, "fields": planned.fields, "source": planned.source,
                       "notes": list(planned.notes), "budget": plan.to_dict()["budget"], "seed": plan.seed,
                       "sweep": planned.sweep},
            "measurements": measurements, "estimates": estimate, "error": error}


def assemble(plan: ComparePlan, run_info: dict[str, Any], trained: dict[str, dict[str, Any]],
             timing: dict[str, Any], estimates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    records = [method_record(plan, m.method, run_info, trained.get(m.method, {}), timing,
                             estimates.get(m.method, {})) for m in plan.methods]
    shown_timing = {k: v for k, v in timing.items() if k not in ("methods", "base")}
    shown_timing["base_latency"] = (timing.get("base") or {}).get("latency")
    return {"schema": SCHEMA, "run_info": run_info, "plan": plan.to_dict(), "timing": shown_timing,
            "reference_method": REFERENCE_METHOD, "methods": records}


def schema_problems(results: dict[str, Any]) -> list[str]:
    """What in `results` does not follow the schema (empty when it does)."""
    problems = []
    if results.get("schema") != SCHEMA:
        problems.append(f"schema is {results.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("run_info", "plan", "timing", "methods"):
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

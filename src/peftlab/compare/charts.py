"""The comparison's PNG charts (matplotlib, Agg backend: no display needed).

    params.png             trainable parameters per method, log scale, estimate as a marker
    memory.png             training memory (peak − runtime RSS, or peak GPU) beside the estimate
    step_time.png          median training step time with its p10..p90 spread
    latency.png            inference latency: base, unmerged, merged
    quality_vs_params.png  dev quality against trainable parameters (log x): the seeds' figure
    radar.png              trade-offs, each axis scaled so 1 is the best method of this run
    sweep.png              (with --tune-lr) validation score per learning rate, chosen rates ringed

Methods without a figure (failed, or not measured) are left out of that chart only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from peftlab.compare.report import measured, quality_value
from peftlab.io import atomic_path

RADAR_AXES = ("parameter efficiency", "quality", "training speed", "inference speed", "memory efficiency")


def _figure(width: float = 7.0, height: float = 4.0, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), **kwargs)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format="png", dpi=110, bbox_inches="tight")  # keep outside legends
    plt.close(fig)


def _pairs(records: list[dict[str, Any]], *path: str) -> tuple[list[str], list[float]]:
    names, values = [], []
    for record in records:
        value = measured(record, *path)
        if value is not None:
            names.append(record["method"])
            values.append(float(value))
    return names, values


def _estimate(record: dict[str, Any], *path: str) -> float | None:
    value: Any = record.get("estimates") or {}
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def params_chart(records: list[dict[str, Any]], path: Path) -> None:
    names, values = _pairs(records, "params", "trainable")
    fig, ax = _figure()
    ax.bar(names, values, color="tab:blue", label="measured")
    estimates = [(i, _estimate(r, "trainable_params")) for i, r in enumerate(r for r in records if r["method"] in names)]
    shown = [(i, e) for i, e in estimates if e]
    if shown:
        ax.scatter([i for i, _ in shown], [e for _, e in shown], color="black", marker="_", s=400, label="estimate")
    ax.set_yscale("log")
    ax.set_ylabel("trainable parameters")
    ax.set_title("Trainable parameters (log scale)")
    for i, value in enumerate(values):
        ax.annotate(f"{value:,.0f}", (i, value), ha="center", va="bottom", fontsize=7)
    ax.legend()
    _save(fig, path)


def memory_chart(records: list[dict[str, Any]], path: Path) -> None:
    gpu = any(measured(r, "memory", "peak_gpu_mb") for r in records)
    key = "peak_gpu_mb" if gpu else "training_mb"
    names, values = _pairs(records, "memory", key)
    estimates = [_estimate(r, "memory_mb", "total") or 0.0 for r in records if r["method"] in names]
    fig, ax = _figure()
    positions = range(len(names))
    ax.bar([p - 0.2 for p in positions], values, width=0.4, label="measured", color="tab:orange")
    ax.bar([p + 0.2 for p in positions], estimates, width=0.4, label="estimate", color="tab:gray")
    ax.set_xticks(list(positions), names)
    ax.set_ylabel("MB")
    ax.set_title("Training memory " + ("(peak GPU allocated)" if gpu else "(peak RSS − runtime RSS)"))
    ax.legend()
    _save(fig, path)


def step_chart(records: list[dict[str, Any]], path: Path) -> None:
    timed = [r for r in records if measured(r, "step_time", "median_ms") is not None]
    names = [r["method"] for r in timed]
    medians = [measured(r, "step_time", "median_ms") for r in timed]
    low = [m - measured(r, "step_time", "p10_ms") for r, m in zip(timed, medians)]
    high = [measured(r, "step_time", "p90_ms") - m for r, m in zip(timed, medians)]
    fig, ax = _figure()
    ax.bar(names, medians, yerr=[low, high], capsize=4, color="tab:green")
    ax.set_ylabel("ms per optimizer step (median, p10–p90)")
    ax.set_title("Training step time")
    _save(fig, path)


def latency_chart(records: list[dict[str, Any]], base_ms: float | None, path: Path) -> None:
    timed = [r for r in records if measured(r, "latency", "unmerged", "median_ms") is not None]
    names = [r["method"] for r in timed]
    fig, ax = _figure()
    positions = range(len(names))
    unmerged = [measured(r, "latency", "unmerged", "median_ms") for r in timed]
    merged = [measured(r, "latency", "merged", "median_ms") or 0.0 for r in timed]
    ax.bar([p - 0.2 for p in positions], unmerged, width=0.4, label="unmerged", color="tab:purple")
    ax.bar([p + 0.2 for p in positions], merged, width=0.4, label="merged (0: not mergeable)", color="tab:pink")
    if base_ms:
        ax.axhline(base_ms, color="black", linestyle="--", linewidth=1, label=f"base model {base_ms:.1f} ms")
    ax.set_xticks(list(positions), names)
    ax.set_ylabel("ms per forward pass (median)")
    ax.set_title("Inference latency")
    ax.legend(fontsize=8)
    _save(fig, path)


def quality_chart(records: list[dict[str, Any]], path: Path) -> None:
    points = [(r["method"], measured(r, "params", "trainable"), quality_value(r)) for r in records]
    points = [p for p in points if p[1] and p[2] is not None]
    metric = next((measured(r, "quality", "metric") for r in records if measured(r, "quality", "metric")), "quality")
    fig, ax = _figure()
    for name, params, value in points:
        ax.scatter(params, value, s=60)
        ax.annotate(name, (params, value), textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"dev {metric}" + (" (%)" if metric != "perplexity" else ""))
    ax.set_title("Quality vs trainable parameters")
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def radar_scores(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per method, a score in [0, 1] on each `RADAR_AXES` axis (1 = best of this run).

    Parameter efficiency is log-scaled (the counts span orders of magnitude); inference speed
    uses the faster of unmerged and merged; a method missing any figure is left out.
    """
    rows = {}
    for r in records:
        params = measured(r, "params", "trainable")
        quality = quality_value(r)
        if quality is not None and measured(r, "quality", "metric") == "perplexity":
            quality = 1 / max(quality, 1e-9)  # lower perplexity is better
        speed = measured(r, "step_time", "throughput_vs_reference") or (
            1 / measured(r, "step_time", "median_ms") if measured(r, "step_time", "median_ms") else None)
        ratios = [x for x in (measured(r, "latency", "unmerged_ratio"), measured(r, "latency", "merged_ratio")) if x]
        memory = measured(r, "memory", "peak_gpu_mb") or measured(r, "memory", "training_mb")
        if None in (params, quality, speed, memory) or not ratios:
            continue
        rows[r["method"]] = (math.log10(params), quality, speed, 1 / min(ratios), 1 / max(memory, 1e-9))
    if not rows:
        return {}
    logs = [v[0] for v in rows.values()]
    low, high = min(logs), max(logs)
    scores = {}
    for name, (log_params, *rest) in rows.items():
        efficiency = 1.0 if high == low else 0.05 + 0.95 * (high - log_params) / (high - low)
        tops = [max(v[i + 1] for v in rows.values()) for i in range(len(rest))]
        scaled = [value / top if top > 0 else 0.0 for value, top in zip(rest, tops)]
        scores[name] = [efficiency, *scaled]
    return scores


def radar_chart(records: list[dict[str, Any]], path: Path) -> None:
    scores = radar_scores(records)
    fig, ax = _figure(6.5, 6.0, subplot_kw={"projection": "polar"})
    angles = [2 * math.pi * i / len(RADAR_AXES) for i in range(len(RADAR_AXES))]
    for name, values in scores.items():
        ax.plot(angles + angles[:1], values + values[:1], label=name, linewidth=1.5)
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.08)
    ax.set_xticks(angles, RADAR_AXES, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("Trade-offs (1 = best of this run)")
    if scores:
        ax.legend(loc="upper left", bbox_to_anchor=(1.08, 1.05), fontsize=8)
    _save(fig, path)


def sweep_chart(records: list[dict[str, Any]], path: Path) -> None:
    fig, ax = _figure()
    metric = "score"
    for r in records:
        sweep = r["config"].get("sweep") or {}
        points = [p for p in sweep.get("points", []) if p["score"] is not None and not p["diverged"]]
        if not points:
            continue
        metric = sweep["metric"]
        line = ax.plot([p["learning_rate"] for p in points], [p["score"] for p in points], marker="o", label=r["method"])
        chosen = [p for p in points if p["learning_rate"] == sweep.get("chosen")]
        ax.scatter([p["learning_rate"] for p in chosen], [p["score"] for p in chosen], s=160,
                   facecolors="none", edgecolors=line[0].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Learning-rate sweep (chosen rate ringed)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    _save(fig, path)


def write_charts(results: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write every chart into `folder`; returns the paths written."""
    folder = Path(folder)
    records = results["methods"]
    base = (results.get("timing", {}).get("base_latency") or {}).get("median_ms")
    writers = {"params.png": lambda p: params_chart(records, p), "memory.png": lambda p: memory_chart(records, p),
               "step_time.png": lambda p: step_chart(records, p),
               "latency.png": lambda p: latency_chart(records, base, p),
               "quality_vs_params.png": lambda p: quality_chart(records, p),
               "radar.png": lambda p: radar_chart(records, p)}
    if any(r["config"].get("sweep") for r in records):
        writers["sweep.png"] = lambda p: sweep_chart(records, p)
    written = []
    for name, write in writers.items():
        write(folder / name)
        written.append(folder / name)
    return written

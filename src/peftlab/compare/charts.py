"""The comparison's PNG charts (matplotlib, Agg backend: no display needed).

    params.png             trainable parameters per method, log scale, estimate as a marker
    memory.png             measured tensor peak (stacked: weights, gradients, optimizer,
                           activations) beside the estimate's same split; peak RSS as a marker
    step_time.png          median training step time with its 95% interval over rounds
    latency.png            inference latency (unmerged, merged) with 95% intervals; base and control
    quality_vs_params.png  dev quality with its 95% interval against trainable parameters (log x);
                           methods that did not learn drawn hollow, the baseline as a line
    radar.png              trade-offs of the methods that learned, each axis scaled so 1 is the best
    lr_choice.png          (when rates were chosen) validation score per learning rate, chosen ringed

Methods without a figure (failed, or not measured) are left out of that chart only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from peftlab.compare.figures import measured, points, quality_value
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


SPLIT = ("weights", "gradients", "optimizer", "activations")
SPLIT_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def memory_chart(records: list[dict[str, Any]], path: Path) -> None:
    shown = [r for r in records if measured(r, "memory", "tensor_peak", "peak_mb")]
    fig, ax = _figure()
    positions = list(range(len(shown)))
    for side, offset, hatch in (("measured", -0.2, None), ("estimate", 0.2, "//")):
        bottom = [0.0] * len(shown)
        for part, color in zip(SPLIT, SPLIT_COLORS):
            values = [(measured(r, "memory", "tensor_peak", f"{part}_mb") if side == "measured"
                       else _estimate(r, "memory_mb", part)) or 0.0 for r in shown]
            ax.bar([p + offset for p in positions], values, width=0.4, bottom=bottom, color=color, hatch=hatch,
                   edgecolor="white", label=f"{part} ({side})")
            bottom = [b + v for b, v in zip(bottom, values)]
    rss = [measured(r, "memory", "peak_rss_mb") for r in shown]
    if any(rss):
        ax.scatter(positions, rss, color="black", marker="_", s=300, label="peak RSS (whole process)")
    ax.set_xticks(positions, [r["method"] for r in shown])
    ax.set_ylabel("MB (left bar measured tensor peak, right bar estimate)")
    ax.set_title("Training memory: measured tensor peak vs estimate")
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def _errors(center: list[float], intervals: list[list[float] | None]) -> list[list[float]]:
    """matplotlib's asymmetric yerr from [low, high] intervals (0 where there is none)."""
    low = [c - i[0] if i else 0.0 for c, i in zip(center, intervals)]
    high = [i[1] - c if i else 0.0 for c, i in zip(center, intervals)]
    return [low, high]


def step_chart(records: list[dict[str, Any]], path: Path) -> None:
    timed = [r for r in records if measured(r, "step_time", "median_ms") is not None]
    medians = [measured(r, "step_time", "median_ms") for r in timed]
    fig, ax = _figure()
    ax.bar([r["method"] for r in timed], medians, color="tab:green",
           yerr=_errors(medians, [measured(r, "step_time", "ci_ms") for r in timed]), capsize=4)
    ax.set_ylabel("ms per optimizer step (median, 95% interval)")
    ax.set_title("Training step time")
    _save(fig, path)


def latency_chart(records: list[dict[str, Any]], timing: dict[str, Any], path: Path) -> None:
    timed = [r for r in records if measured(r, "latency", "unmerged", "median_ms") is not None]
    fig, ax = _figure()
    positions = list(range(len(timed)))
    for kind, offset, color in (("unmerged", -0.2, "tab:purple"), ("merged", 0.2, "tab:pink")):
        values = [measured(r, "latency", kind, "median_ms") or 0.0 for r in timed]
        ax.bar([p + offset for p in positions], values, width=0.4, color=color, capsize=3,
               label=kind + (" (0: not mergeable)" if kind == "merged" else ""),
               yerr=_errors(values, [measured(r, "latency", kind, "ci_ms") for r in timed]))
    for name, summary, style in (("base model", timing.get("base_latency"), "--"),
                                 ("control (base again)", (timing.get("control") or {}).get("latency"), ":")):
        if summary and summary.get("median_ms"):
            ax.axhline(summary["median_ms"], color="black", linestyle=style, linewidth=1,
                       label=f"{name} {summary['median_ms']:.1f} ms")
    ax.set_xticks(positions, [r["method"] for r in timed])
    ax.set_ylabel("ms per forward pass (median, 95% interval)")
    ax.set_title("Inference latency")
    ax.legend(fontsize=7)
    _save(fig, path)


def quality_chart(results: dict[str, Any], path: Path) -> None:
    records, scale = results["methods"], points(results)
    quality = results.get("quality") or {}
    fig, ax = _figure()
    labelled: dict[int, int] = {}  # trainable count -> labels placed there (LoRA and QLoRA share one)
    for r in records:
        params, value = measured(r, "params", "trainable"), measured(r, "quality", "value")
        if not params or value is None:
            continue
        stacked = labelled.get(params, 0)
        labelled[params] = stacked + 1
        ci = measured(r, "quality", "ci")
        learned = measured(r, "quality", "learned") is not False
        yerr = [[value * scale - ci[0] * scale], [ci[1] * scale - value * scale]] if ci else None
        ax.errorbar(params, value * scale, yerr=yerr, fmt="o", markersize=7, capsize=4,
                    markerfacecolor=None if learned else "none")
        ax.annotate(r["method"] + ("" if learned else " (did not learn)"), (params, value * scale),
                    textcoords="offset points", xytext=(5, 5 - 11 * stacked), fontsize=8)
    baseline = quality.get("baseline")
    if baseline:
        ax.axhline(baseline["value"] * scale, color="gray", linestyle="--", linewidth=1,
                   label=f"{baseline['name']} {baseline['value'] * scale:.1f}")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    metric = quality.get("metric") or "quality"
    ax.set_ylabel(f"dev {metric}" + (" (%)" if scale == 100 else "") + ", 95% interval")
    ax.set_title("Quality vs trainable parameters")
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def radar_scores(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per method that learned, a score in [0, 1] on each `RADAR_AXES` axis (1 = best of this run).

    Parameter efficiency is log-scaled (the counts span orders of magnitude); training speed is
    the inverse step time; inference speed uses the faster of unmerged and merged; memory is the
    measured tensor peak. A method missing any figure, or that did not learn, is left out: its
    trade-offs would describe a model that does not do the task.
    """
    rows = {}
    for r in records:
        params = measured(r, "params", "trainable")
        quality = quality_value(r)
        if quality is not None and measured(r, "quality", "metric") == "perplexity":
            quality = 1 / max(quality, 1e-9)  # lower perplexity is better
        step = measured(r, "step_time", "median_ms")
        ratios = [x["value"] for x in (measured(r, "latency", "unmerged_ratio"), measured(r, "latency", "merged_ratio"))
                  if x]
        memory = measured(r, "memory", "peak_gpu_mb") or measured(r, "memory", "tensor_peak", "peak_mb")
        if None in (params, quality, step, memory) or not ratios or measured(r, "quality", "learned") is False:
            continue
        rows[r["method"]] = (math.log10(params), quality, 1 / step, 1 / min(ratios), 1 / max(memory, 1e-9))
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
    ax.set_title("Trade-offs of the methods that learned (1 = best of this run)")
    if scores:
        ax.legend(loc="upper left", bbox_to_anchor=(1.08, 1.05), fontsize=8)
    else:
        ax.text(0, 0, "no method learned at this budget", ha="center", va="center", fontsize=11)
    _save(fig, path)


def lr_chart(records: list[dict[str, Any]], path: Path) -> None:
    fig, ax = _figure()
    metric = "score"
    for r in records:
        found = r["config"].get("lr_choice") or {}
        points = [p for p in found.get("points", []) if p["score"] is not None and not p["diverged"]]
        if not points:
            continue
        metric = found["metric"]
        line = ax.errorbar([p["learning_rate"] for p in points], [p["score"] for p in points],
                           yerr=[p.get("score_sd") or 0.0 for p in points], marker="o", capsize=3, label=r["method"])
        chosen = [p for p in points if p["learning_rate"] == found.get("chosen")]
        ax.scatter([p["learning_rate"] for p in chosen], [p["score"] for p in chosen], s=160,
                   facecolors="none", edgecolors=line[0].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Learning-rate choice (chosen rate ringed)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    _save(fig, path)


def write_charts(results: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write every chart into `folder`; returns the paths written."""
    folder = Path(folder)
    records = results["methods"]
    writers = {"params.png": lambda p: params_chart(records, p), "memory.png": lambda p: memory_chart(records, p),
               "step_time.png": lambda p: step_chart(records, p),
               "latency.png": lambda p: latency_chart(records, results.get("timing") or {}, p),
               "quality_vs_params.png": lambda p: quality_chart(results, p),
               "radar.png": lambda p: radar_chart(records, p)}
    if any(r["config"].get("lr_choice") for r in records):
        writers["lr_choice.png"] = lambda p: lr_chart(records, p)
    written = []
    for name, write in writers.items():
        write(folder / name)
        written.append(folder / name)
    return written

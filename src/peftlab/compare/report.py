"""report.md and the console table: the seeds' tables, filled with measurements.

Tables (each measured figure beside the `peftlab estimate` prediction where one exists):
budget and per-method settings, parameter efficiency, memory, training speed, inference
overhead, quality, then the seeds' claims about the ordering of methods checked against this
run (`SEED_CLAIMS`, data like the literature defaults), and the errors of failed methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from peftlab.io import write_text

CHART_TITLES = {
    "params.png": "Trainable parameters (log scale)",
    "memory.png": "Training memory",
    "step_time.png": "Training step time",
    "latency.png": "Inference latency",
    "quality_vs_params.png": "Quality vs trainable parameters",
    "radar.png": "Trade-offs",
}

SWEEP_CHART = "Learning-rate sweep"


@dataclass(frozen=True)
class Claim:
    """A claim of the seeds about quality: `subject` is `relation` to each of `others`.

    "close": within `points` percentage points (or metric units); "behind": lower by more than
    `points`.
    """

    text: str
    subject: str
    relation: str
    others: tuple[str, ...]
    points: float


SEED_CLAIMS = (
    Claim("LoRA comes close to full fine-tuning", "lora", "close", ("full",), 2.0),
    Claim("Prompt tuning falls behind with little data", "prompt", "behind", ("full", "lora"), 2.0),
)


def _num(value: float | None, fmt: str = "{:,.0f}", missing: str = "–") -> str:
    return missing if value is None else fmt.format(value)


def _mb(value: float | None) -> str:
    return _num(value, "{:,.0f} MB")


def _count(value: int | None) -> str:
    if value is None:
        return "–"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= size:
            return f"{value / size:.2f}{suffix}"
    return str(value)


def _bytes(value: int | None) -> str:
    if value is None:
        return "–"
    for size, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= size:
            return f"{value / size:.1f} {suffix}"
    return f"{value} B"


def _spread(stats: dict[str, float] | None) -> str:
    if not stats:
        return "–"
    return f"{stats['p10_ms']:.1f}–{stats['p90_ms']:.1f} ms"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _dig(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def measured(record: dict[str, Any], *path: str) -> Any:
    return _dig(record.get("measurements"), *path)


def quality_value(record: dict[str, Any]) -> float | None:
    """The headline dev metric in percent: accuracy (a 0..1 fraction) times 100; ROUGE-L and BLEU
    are percentages already and perplexity is not one, so they stay as measured."""
    value, metric = measured(record, "quality", "value"), measured(record, "quality", "metric")
    if value is None:
        return None
    return 100 * value if metric == "accuracy" else value


def check_claim(claim: Claim, records: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(verdict, detail) of a claim: "seen", "not seen" or "not checked"."""
    names = (claim.subject, *claim.others)
    values = {n: quality_value(records[n]) if n in records else None for n in names}
    missing = [n for n, v in values.items() if v is None]
    if missing:
        return "not checked", f"no quality measured for {', '.join(missing)}"
    subject = values[claim.subject]
    gaps = {o: subject - values[o] for o in claim.others}
    if claim.relation == "close":
        holds = all(abs(g) <= claim.points for g in gaps.values())
    else:
        holds = all(g < -claim.points for g in gaps.values())
    detail = "; ".join(f"{claim.subject} {values[claim.subject]:.1f} vs {o} {values[o]:.1f} ({g:+.1f})"
                       for o, g in gaps.items())
    return ("seen" if holds else "not seen"), detail


def _settings_section(results: dict[str, Any]) -> str:
    plan, info = results["plan"], results["run_info"]
    budget, task = plan["budget"], info.get("task", {})
    timing = results.get("timing", {})
    dev = f"{task.get('dev_rows', '?')} dev rows" + (" (full dev set)" if budget["max_dev"] is None and
                                                      task.get("kind") == "classification" else "")
    lines = [
        f"- model `{plan['model']}`, data `{plan['data']}` ({task.get('kind', '?')}, "
        f"{task.get('train_rows', '?')} training rows, {dev})",
        f"- {budget['steps']} optimizer steps × batch {budget['batch_size']} = "
        f"{budget['steps'] * budget['batch_size']:,} examples, max_length {budget['max_length']} (dynamic padding), "
        f"AdamW, warmup {budget['warmup_ratio']:.0%} then linear decay, seed {plan['seed']}, same data order for every method",
        f"- timing: {budget['timing_rounds']} interleaved rounds × {budget['timing_steps']} steps on one fixed batch of "
        f"{timing.get('train_batch_rows', '?')} rows ({timing.get('train_batch_tokens', '?')} tokens); latency: "
        f"{budget['timing_rounds']} × {budget['latency_reps']} forward passes on {timing.get('inference_batch_rows', '?')} "
        f"dev rows ({timing.get('inference_batch_tokens', '?')} tokens)",
        f"- {info.get('threads')} threads, device {timing.get('device', info.get('device'))}; load average "
        f"{info['load_average_start'][0]:.1f} at start, {info.get('load_average_end', [0])[0]:.1f} at end "
        "(other processes share the machine when it is above the thread count)",
    ]
    header = ["method", "learning rate", "method settings", "source"]
    rows = [[r["method"], f"{r['config']['learning_rate']:g}",
             ", ".join(f"{k}={v}" for k, v in r["config"]["fields"].items()) or "defaults",
             r["config"]["source"] + "".join(f" ({n})" for n in r["config"]["notes"])]
            for r in results["methods"]]
    return "## Budget (the same for every method)\n\n" + "\n".join(lines) + "\n\n" + _table(header, rows)


def _tables(results: dict[str, Any]) -> list[str]:
    records = results["methods"]
    def est(record: dict[str, Any], *path: str) -> Any:
        return _dig(record.get("estimates"), *path)

    params = _table(["method", "trainable params", "% of model", "estimate", "adapter file", "estimate (fp32)"],
                    [[r["method"], _count(measured(r, "params", "trainable")),
                      _num(measured(r, "params", "percent"), "{:.4f}%"), _count(est(r, "trainable_params")),
                      _bytes(measured(r, "adapter_file_bytes")), _bytes(est(r, "file_bytes"))] for r in records])
    memory = _table(["method", "peak RSS", "training memory (peak − runtime)", "estimate", "estimate: weights",
                     "gradients", "optimizer", "activations", "peak GPU"],
                    [[r["method"], _mb(measured(r, "memory", "peak_rss_mb")), _mb(measured(r, "memory", "training_mb")),
                      _mb(est(r, "memory_mb", "total")), _mb(est(r, "memory_mb", "weights")),
                      _mb(est(r, "memory_mb", "gradients")), _mb(est(r, "memory_mb", "optimizer")),
                      _mb(est(r, "memory_mb", "activations")), _mb(measured(r, "memory", "peak_gpu_mb"))]
                     for r in records])
    reference = results.get("reference_method", "full")
    speed = _table(["method", "step time (median)", "p10–p90", f"throughput vs {reference}", "in-run median step"],
                   [[r["method"], _num(measured(r, "step_time", "median_ms"), "{:.1f} ms"),
                     _spread(measured(r, "step_time")),
                     _num(measured(r, "step_time", "throughput_vs_reference"), "{:.2f}x"),
                     _num(measured(r, "train", "in_run_step_ms", "median"), "{:.1f} ms")] for r in records])
    base = _dig(results.get("timing", {}), "base_latency", "median_ms")
    inference = _table(["method", "unmerged", "× base", "merged", "× base", "merge error (max abs Δ logit)"],
                       [[r["method"], _num(measured(r, "latency", "unmerged", "median_ms"), "{:.1f} ms"),
                         _num(measured(r, "latency", "unmerged_ratio"), "{:.2f}x"),
                         _num(measured(r, "latency", "merged", "median_ms"), "{:.1f} ms", "not mergeable"),
                         _num(measured(r, "latency", "merged_ratio"), "{:.2f}x"),
                         _num(measured(r, "merge_error"), "{:.1e}")] for r in records])
    generation = (results["run_info"].get("task") or {}).get("kind") == "causal-lm"
    extra = (("BLEU", ("bleu",), "{:.2f}"), ("perplexity", ("perplexity",), "{:.2f}")) if generation \
        else (("macro-F1", ("macro_f1",), "{:.3f}"),)
    quality = _table(["method", "learning rate", "dev metric", "value", *(e[0] for e in extra), "final train loss",
                      "train wall"],
                     [[r["method"], f"{r['config']['learning_rate']:g}", measured(r, "quality", "metric") or "–",
                       _num(quality_value(r), "{:.2f}"),
                       *(_num(measured(r, "quality", "dev", *keys), form) for _, keys, form in extra),
                       _num(measured(r, "quality", "final_train_loss"), "{:.3f}"),
                       _num(measured(r, "train", "wall_s"), "{:.0f} s")] for r in records])
    return [
        "## Parameter efficiency\n\nTrainable parameters include the new classification head where the task has "
        "one (every method trains it).\n\n" + params,
        "## Memory\n\nPeak RSS of each method's own fresh process; training memory subtracts the RSS of the "
        "Python + torch runtime before the model loaded. The estimate counts weights, gradients, AdamW states and "
        "saved activations in fp32 at the timing batch's padded length.\n\n" + memory,
        "## Training speed\n\nInterleaved timing phase (every method in one process, in rotating order). The "
        "in-run median comes from each method's own training run and is more exposed to machine noise.\n\n" + speed,
        f"## Inference overhead\n\nForward pass of the fixed dev batch; base model {_num(base, '{:.1f} ms')}. "
        "Merged = adapters folded into the weights in place, where the method's capabilities allow.\n\n" + inference,
        "## Quality\n\n" + quality,
    ]


def _claims_section(results: dict[str, Any]) -> str:
    records = {r["method"]: r for r in results["methods"] if r.get("error") is None}
    rows = []
    for claim in SEED_CLAIMS:
        verdict, detail = check_claim(claim, records)
        rows.append([claim.text, f"**{verdict}**", detail])
    return ("## The seeds' claims, checked on this run\n\nQuality points (accuracy in %); \"close\" means within "
            f"{SEED_CLAIMS[0].points:g} points, \"behind\" lower by more than {SEED_CLAIMS[1].points:g}. One seed, "
            "one budget: a single run is evidence, not proof.\n\n" + _table(["claim", "verdict", "detail"], rows))


def _sweep_outcome(point: dict[str, Any]) -> str:
    if point.get("stopped_at_step"):
        why = "loss rose" if point.get("stop_reason") == "rising" else "loss not finite"
        return f"stopped at step {point['stopped_at_step']} ({why})"
    if point["diverged"] or point["score"] is None:
        return "diverged"
    return f"{point['score']:.3f}"


def _sweep_section(results: dict[str, Any]) -> str:
    swept = [r for r in results["methods"] if r["config"].get("sweep")]
    if not swept:
        return ""
    rows = []
    for r in swept:
        sweep = r["config"]["sweep"]
        if sweep.get("error"):
            rows.append([r["method"], f"failed: {sweep['error']['message'][:200]}", "–"])
            continue
        extended = set(sweep.get("extended", ()))
        points = ", ".join(f"{p['learning_rate']:g}{'⁺' if p['learning_rate'] in extended else ''} → "
                           f"{_sweep_outcome(p)}" for p in sweep["points"])
        wall = f"{sweep['wall_s']:.0f}" if "wall_s" in sweep else "–"
        rates = [p["learning_rate"] for p in sweep["points"]]
        edge = " (grid edge)" if sweep.get("chosen") in (min(rates), max(rates)) and len(rates) > 1 else ""
        rows.append([r["method"], points, f"**{r['config']['learning_rate']:g}**{edge}", wall])
    first = swept[0]["config"]["sweep"]
    total = sum(r["config"]["sweep"].get("wall_s", 0.0) for r in swept)
    return (f"## Learning-rate sweep\n\nEach rate trained on the same budget on the "
            f"{first.get('train_rows', '?')} training rows left after carving a validation split of "
            f"{first.get('validation_rows', '?')} rows, scored by validation {first.get('metric', '?')}; "
            "the dev set above was never read by the sweep. The reported runs train on the same rows, "
            "from the same seeded start and in the same order, at the chosen rate: each repeats its "
            "method's winning sweep run, so the dev score is that model's. The sweep took "
            f"{total:.0f} s of wall time in all. A best rate on the grid's edge extends the search one step "
            "further out (⁺), a limited number of times: a rate still marked \"grid edge\" may have a "
            "better one beyond it.\n\n"
            + _table(["method", "rate → validation score", "chosen", "sweep wall s"], rows))


def render_report(results: dict[str, Any]) -> str:
    info = results["run_info"]
    errors = [r for r in results["methods"] if r.get("error")]
    parts = [
        f"# peftlab compare: {results['plan']['model']} on {results['plan']['data']}",
        f"`{info['command']}`, started {info['started']}, wall time {info.get('wall_s', 0):.0f} s "
        f"(workers' CPU time {info.get('workers_cpu_s', 0):.0f} s); "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        _settings_section(results), _sweep_section(results), *_tables(results), _claims_section(results),
    ]
    parts = [part for part in parts if part]
    if errors:
        parts.append("## Errors\n\n" + _table(["method", "phase", "error"], [
            [r["method"], r["error"].get("phase", "?"),
             f"{r['error']['type']}: {' '.join(r['error']['message'].split())[:300]}"] for r in errors]))
    charts = dict(CHART_TITLES, **({"sweep.png": SWEEP_CHART} if _sweep_section(results) else {}))
    parts.append("## Charts\n\n" + "\n".join(f"![{title}](charts/{name})" for name, title in charts.items()))
    return "\n\n".join(parts) + "\n"


def write_report(results: dict[str, Any], path: str | Path) -> None:
    write_text(path, render_report(results))


def console_table(results: dict[str, Any]) -> Table:
    reference = results.get("reference_method", "full")
    table = Table(title=f"peftlab compare: {results['plan']['model']} on {results['plan']['data']} "
                        f"({results['run_info'].get('wall_s', 0):.0f} s)",
                  caption="train MB: peak − runtime RSS; step ms: median; vs: throughput; latency ×: "
                          "unmerged / base; dev: headline metric (accuracy %)")
    for column in ("method", "params", "%", "train MB", "step ms", f"vs {reference}",
                   "latency ×", "merged ×", "dev", "error"):
        table.add_column(column, justify="left" if column in ("method", "error") else "right")
    for r in results["methods"]:
        error = r.get("error")
        table.add_row(r["method"], _count(measured(r, "params", "trainable")),
                      _num(measured(r, "params", "percent"), "{:.3f}"), _num(measured(r, "memory", "training_mb")),
                      _num(measured(r, "step_time", "median_ms"), "{:.0f}"),
                      _num(measured(r, "step_time", "throughput_vs_reference"), "{:.2f}x"),
                      _num(measured(r, "latency", "unmerged_ratio"), "{:.2f}x"),
                      _num(measured(r, "latency", "merged_ratio"), "{:.2f}x"),
                      _num(quality_value(r), "{:.1f}"),
                      f"[red]{error['type']}[/red]" if error else "")
    return table

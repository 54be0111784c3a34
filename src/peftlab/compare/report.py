"""report.md and the console table: the source documents' tables, filled with measurements.

The report opens with what a user decides by: which methods learned at this budget, and which
of them can be told apart (tiers from paired intervals, `quality.py`), with the timing control
that says how far timing differences can be trusted. Then: budget and per-method settings, the
learning-rate choice, parameter efficiency, memory (the measured tensor peak beside the
estimate, and the process's RSS apart), training speed, inference overhead and quality, each
figure with its 95 % interval; then the source documents' claims checked on the intervals
(`claims.py`), and the errors of failed methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from peftlab.compare import figures as f
from peftlab.compare.claims import SOURCE_CLAIMS, check_claim
from peftlab.compare.figures import measured
from peftlab.io import write_text

CHART_TITLES = {
    "params.png": "Trainable parameters (log scale)",
    "memory.png": "Training memory: measured tensor peak vs estimate",
    "step_time.png": "Training step time (95% intervals)",
    "latency.png": "Inference latency (95% intervals)",
    "quality_vs_params.png": "Quality vs trainable parameters (95% intervals)",
    "radar.png": "Trade-offs",
}
LR_CHART = "Learning-rate choice"


def _metric_label(quality: dict[str, Any]) -> str:
    metric = quality.get("metric") or "quality"
    return metric + (" (%)" if (quality.get("points") or 1) == 100 else "")


def _cause(results: dict[str, Any], record: dict[str, Any]) -> str:
    from peftlab.compare.quality import likely_cause

    lengths = results.get("lengths") or {}
    return likely_cause(measured(record, "quality") or {}, results["plan"]["budget"],
                        record["config"]["learning_rate"], lengths.get("truncated_share"))


def _verdict_section(results: dict[str, Any]) -> str:
    quality, timing = results.get("quality") or {}, results.get("timing") or {}
    scale = f.points(results)
    baseline = quality.get("baseline")
    lines = []
    if quality.get("metric") is None:
        lines.append("No dev scores: nothing to rank (the data has no dev rows, or every method failed).")
    elif not quality.get("any_learned"):
        lengths = results.get("lengths") or {}
        budget = results["plan"]["budget"]
        cut = (f"; {lengths['train_truncated'] + lengths['dev_truncated']} rows were cut at max_length "
               f"{lengths['max_length']}" if lengths.get("train_truncated") or lengths.get("dev_truncated") else "")
        lines.append(f"**No method learned at this budget**: every method's dev {quality['metric']} is within "
                     f"the learning margin of the {baseline['name'] if baseline else 'baseline'} or cannot be "
                     f"told apart from it, so no ranking or trade-off below means anything. Raise --steps "
                     f"(now {budget['steps']}) or --max-length (now {budget['max_length']}{cut}), or choose "
                     "learning rates with --tune-lr.")
    else:
        tiers = "; ".join(f"**{i}.** " + ", ".join(tier) for i, tier in enumerate(quality["tiers"], 1))
        lines.append(f"Quality tiers ({_metric_label(quality)}; methods within a tier are indistinguishable at "
                     f"this budget, a later tier is behind the tier above it by a paired 95% interval that "
                     f"excludes 0): {tiers}.")
        unlearned = [r["method"] for r in results["methods"] if measured(r, "quality", "learned") is False]
        if unlearned:
            lines.append(f"Did not learn at this budget (not ranked): {', '.join(unlearned)}.")
    if baseline:
        lines.append(f"Baseline: {baseline['name']} {f.score(baseline['value'], baseline['ci'], scale)}.")
    control = timing.get("control") or {}
    if control.get("ratio_vs_base"):
        stop = timing.get("stop") or {}
        lines.append(f"Timing control (the base model timed against itself): {f.ratio(control['ratio_vs_base'])}; "
                     f"{stop.get('rounds', '?')} rounds, stopped by "
                     + ("every ratio reaching ±5 %" if stop.get("reason") == "converged" else
                        f"the {stop.get('time_cap_s', 0):.0f} s time cap (wider than ±5 %: "
                        f"{', '.join(stop.get('wide', [])) or '–'})") + ".")
    return "## Verdict\n\n" + "\n".join(f"- {line}" for line in lines)


def _settings_section(results: dict[str, Any]) -> str:
    plan, info = results["plan"], results["run_info"]
    budget, task = plan["budget"], info.get("task", {})
    timing, lengths = results.get("timing", {}), results.get("lengths") or {}
    dev = f"{task.get('dev_rows', '?')} dev rows" + (" (full dev set)" if budget["max_dev"] is None and
                                                      task.get("kind") == "classification" else "")
    if task.get("dev_origin"):
        dev += f"; {task['dev_origin']}"
    seeds = (f"{budget['seeds']} seeds per method ({', '.join(map(str, range(plan['seed'], plan['seed'] + budget['seeds'])))}: "
             "head and adapter initialisation, data order, dropout)" if budget["seeds"] > 1 else f"seed {plan['seed']}")
    cut = (f"max_length {budget['max_length']}: " + ("fitted to the data, " if lengths.get("chosen_from_data") else "given, ")
           + f"longest row {lengths.get('longest', '?')} tokens, {lengths.get('train_truncated', '?')} training and "
           f"{lengths.get('dev_truncated', '?')} dev rows cut" if lengths else f"max_length {budget['max_length']}")
    lines = [
        f"- model `{plan['model']}`, data `{plan['data']}` ({task.get('kind', '?')}, "
        f"{task.get('train_rows', '?')} training rows, {dev})",
        f"- {budget['steps']} optimizer steps × batch {budget['batch_size']} = "
        f"{budget['steps'] * budget['batch_size']:,} examples, {cut} (dynamic padding), AdamW, warmup "
        f"{budget['warmup_ratio']:.0%} then linear decay, {seeds}, same data order for every method",
        f"- timing: interleaved rounds of {budget['timing_steps']} training steps on one fixed batch of "
        f"{timing.get('train_batch_rows', '?')} rows ({timing.get('train_batch_tokens', '?')} tokens) and "
        f"{budget['latency_reps']} forward passes on {timing.get('inference_batch_rows', '?')} dev rows "
        f"({timing.get('inference_batch_tokens', '?')} tokens) per method and round",
        f"- {info.get('threads')} threads, device {timing.get('device', info.get('device'))}; load average "
        f"{info['load_average_start'][0]:.1f} at start, {info.get('load_average_end', [0])[0]:.1f} at end "
        "(other processes share the machine when it is above the thread count)",
    ]
    if lengths.get("warning"):
        lines.append(f"- **warning**: {lengths['warning']}")
    header = ["method", "learning rate", "method settings", "source"]
    rows = [[r["method"], f"{r['config']['learning_rate']:g}" + (" (chosen)" if r["config"].get("lr_choice") else ""),
             ", ".join(f"{k}={v}" for k, v in r["config"]["fields"].items()) or "defaults",
             r["config"]["source"] + "".join(f" ({n})" for n in r["config"]["notes"])]
            for r in results["methods"]]
    return "## Budget (the same for every method)\n\n" + "\n".join(lines) + "\n\n" + f.table(header, rows)


def _lr_outcome(point: dict[str, Any]) -> str:
    if point.get("stopped_at_step"):
        why = "loss rose" if point.get("stop_reason") == "rising" else "loss not finite"
        return f"stopped at step {point['stopped_at_step']} ({why})"
    if point["diverged"] or point["score"] is None:
        return "diverged"
    return f"{point['score']:.3f}" + (f" ± {point['score_sd']:.3f}" if point.get("score_sd") else "")


def _lr_section(results: dict[str, Any]) -> str:
    chosen = [r for r in results["methods"] if r["config"].get("lr_choice")]
    if not chosen:
        return ""
    rows = []
    for r in chosen:
        found = r["config"]["lr_choice"]
        if found.get("error") and not found.get("points"):
            rows.append([r["method"], f"failed: {found['error']['message'][:200]}", "–", "–", "–"])
            continue
        extended = set(found.get("extended", ()))
        points = ", ".join(f"{p['learning_rate']:g}{'⁺' if p['learning_rate'] in extended else ''} → "
                           f"{_lr_outcome(p)}" for p in found["points"])
        best = next((p for p in found["points"] if p["learning_rate"] == found.get("chosen")), None)
        dev = measured(r, "quality", "value")
        gap = (f"{best['score'] - dev:+.3f}" if best and best.get("score") is not None and dev is not None
               and found.get("metric") == measured(r, "quality", "metric") else "–")
        rows.append([r["method"], points, f"**{r['config']['learning_rate']:g}**", gap, f"{found.get('wall_s', 0):.0f}"])
    first = chosen[0]["config"]["lr_choice"]
    kind = first.get("kind", "sweep")
    how = ("a short probe: each candidate rate trains the first "
           f"{first.get('steps', '?')} steps of the budget's schedule" if kind == "probe" else
           "a sweep: each rate trains the whole budget")
    seeds = f" ({first['seeds']} seeds per rate, mean ± sd)" if first.get("seeds", 1) > 1 else ""
    total = sum(r["config"]["lr_choice"].get("wall_s", 0.0) for r in chosen)
    after = ("The first seed's reported run continues the winning probe from its last step." if kind == "probe" else
             "The reported runs train on the same rows, from the same seeded start, at the chosen rate. A best rate "
             "on the grid's edge extends the search one step further out (⁺). \"validation − dev\" is the chosen "
             "rate's validation score minus the reported dev score: a positive gap is the winner's curse of "
             "choosing on a small split.")
    return (f"## Learning rates ({kind})\n\nEach method's rate was chosen by {how}{seeds} on the "
            f"{first.get('train_rows', '?')} training rows left after carving a validation split of "
            f"{first.get('validation_rows', '?')} rows, scored by validation {first.get('metric', '?')}; the dev "
            f"set was never read. {after} The choice took {total:.0f} s in all.\n\n"
            + f.table(["method", "rate → validation score", "chosen", "validation − dev", "wall s"], rows))


def _memory_section(results: dict[str, Any]) -> str:
    rows = []
    for r in results["methods"]:
        peak = measured(r, "memory", "tensor_peak") or {}
        estimate = f.dig(r.get("estimates"), "memory_mb") or {}
        total = estimate.get("total")
        ratio = f"{total / peak['peak_mb']:.2f}" if total and peak.get("peak_mb") else "–"
        split = " / ".join(f.num(peak.get(f"{k}_mb"), "{:,.0f}") for k in ("weights", "gradients", "optimizer",
                                                                           "activations"))
        est_split = " / ".join(f.num(estimate.get(k), "{:,.0f}") for k in ("weights", "gradients", "optimizer",
                                                                          "activations"))
        shape = "×".join(map(str, peak.get("batch_shape") or [])) or "–"
        rows.append([r["method"], f.mb(peak.get("peak_mb")), split, f.mb(total), est_split, ratio, shape,
                     f.mb(measured(r, "memory", "peak_rss_mb")), f.mb(measured(r, "memory", "peak_gpu_mb"))])
    return ("## Memory\n\nMeasured: the peak of live tensor bytes over the training steps (every tensor PyTorch "
            "allocated, counted by storage until it is freed), split at that moment into weights / gradients / "
            "optimizer state / activations (saved tensors and temporaries): the quantity `peftlab estimate` "
            "predicts, given the batch shape of the peak step. The estimate sums its four terms, an upper bound "
            "where gradients and activations do not all live at once (full fine-tuning). Peak RSS is the whole "
            "worker process apart: Python and torch, model loading, training and the dev evaluation (batches of "
            "64 rows), under glibc's default allocator, which keeps freed blocks for reuse.\n\n"
            + f.table(["method", "tensor peak", "weights / grads / optimizer / activations", "estimate",
                       "estimate split", "estimate / measured", "peak batch", "peak RSS", "peak GPU"], rows))


def _speed_section(results: dict[str, Any]) -> str:
    reference = results.get("reference_method") or "full"
    rows = [[r["method"], f.ms(measured(r, "step_time")),
             f.num(measured(r, "step_time", "p10_ms"), "{:.0f}") + "–" + f.num(measured(r, "step_time", "p90_ms"), "{:.0f}"),
             "1 (reference)" if r["method"] == reference else f.ratio(measured(r, "step_time", "throughput_vs_reference")),
             f.num(measured(r, "train", "in_run_step_ms", "median"), "{:.0f} ms")] for r in results["methods"]]
    return ("## Training speed\n\nInterleaved timing phase (every method in one process, rotating order, the "
            "training loop's own step). Median over all rounds with its 95% interval over rounds; throughput is "
            f"the reference's step time over the method's, per round (geometric mean, interval over rounds). The "
            "in-run median comes from each method's own training run and is more exposed to machine noise.\n\n"
            + f.table(["method", "step time", "p10–p90 ms", f"throughput vs {reference}", "in-run median step"], rows))


def _inference_section(results: dict[str, Any]) -> str:
    timing = results.get("timing") or {}
    control = timing.get("control") or {}
    rows = [[r["method"], f.ms(measured(r, "latency", "unmerged")), f.ratio(measured(r, "latency", "unmerged_ratio")),
             f.ms(measured(r, "latency", "merged")) if measured(r, "latency", "merged") else "not mergeable",
             f.ratio(measured(r, "latency", "merged_ratio")), f.num(measured(r, "merge_error"), "{:.1e}")]
            for r in results["methods"]]
    rows.append(["base (control)", f.ms(control.get("latency")), f.ratio(control.get("ratio_vs_base")), "–", "–", "–"])
    return (f"## Inference overhead\n\nForward pass of the fixed dev batch; base model "
            f"{f.ms(timing.get('base_latency'))}. Merged = adapters folded into the weights in place, where the "
            "method's capabilities allow. The control row is a second copy of the base model timed as if it were a "
            "method: it must read ≈ 1.00.\n\n"
            + f.table(["method", "unmerged", "× base", "merged", "× base", "merge error (max abs Δ logit)"], rows))


def _quality_section(results: dict[str, Any]) -> str:
    quality = results.get("quality") or {}
    scale = f.points(results)
    reference = quality.get("reference")
    generation = (results["run_info"].get("task") or {}).get("kind") == "causal-lm"
    extra = ("bleu", "perplexity") if generation else ("macro_f1",)
    rows = []
    for r in results["methods"]:
        q = measured(r, "quality") or {}
        intervals = q.get("intervals") or {}
        learned = {True: "yes", False: "**no**: " + _cause(results, r), None: "–"}[q.get("learned")]
        seeds = q.get("seed_values", {}) or {}
        per_seed = seeds.get(q.get("metric")) or []
        spread = (f"{' / '.join(f'{v * scale:.1f}' for v in per_seed)} (sd {q['sd'][q['metric']] * scale:.1f})"
                  if len(per_seed) > 1 else "–")
        rows.append([r["method"], f"{r['config']['learning_rate']:g}",
                     f.score(q.get("value"), q.get("ci"), scale),
                     f.difference(q.get("vs_reference"), scale) if r["method"] != reference else "(reference)",
                     f.difference(q.get("vs_baseline"), scale), learned, spread,
                     *(f.score(f.dig(intervals, m, "value"), f.dig(intervals, m, "ci"),
                               100.0 if m == "macro_f1" else 1.0, 2 if m == "perplexity" else 1) for m in extra),
                     f.num(q.get("final_train_loss"), "{:.3f}"), f.num(measured(r, "train", "wall_s"), "{:.0f} s")])
    neighbours = [f"{p['a']} − {p['b']}: {f.difference(p, scale)}" for p in quality.get("neighbours", [])]
    seeds = quality.get("seeds", 1)
    return (f"## Quality\n\nDev {_metric_label(quality)} with its 95% interval: a bootstrap over the dev "
            + ("units" if generation else "rows") + (f" and the {seeds} seeds" if seeds > 1 else "")
            + ". Differences are paired (the same resampled dev units and seeds for both methods); "
            "\"indistinguishable\" means their interval contains 0. A method learned when it beats the baseline by "
            "the learning margin with an interval that excludes 0.\n\n"
            + f.table(["method", "learning rate", _metric_label(quality), f"vs {reference or '–'}",
                       "vs baseline", "learned", "per seed"] + list(extra) + ["final train loss", "train wall"], rows)
            + ("\n\nNeighbours in the ranking (paired differences): " + "; ".join(neighbours) if neighbours else ""))


def _claims_section(results: dict[str, Any]) -> str:
    rows = []
    for claim in SOURCE_CLAIMS:
        verdict, detail = check_claim(claim, results)
        rows.append([claim.text, f"**{verdict}**", detail])
    return ("## The source documents' claims, checked on this run\n\nDecided on paired 95% intervals: \"close\" "
            f"means every interval lies within ±{SOURCE_CLAIMS[0].points:g} points, \"behind\" wholly below "
            f"−{SOURCE_CLAIMS[1].points:g}; an interval straddling the band is undecided at this budget.\n\n"
            + f.table(["claim", "verdict", "detail"], rows))


def _params_section(results: dict[str, Any]) -> str:
    def est(record: dict[str, Any], *path: str) -> Any:
        return f.dig(record.get("estimates"), *path)

    rows = [[r["method"], f.count(measured(r, "params", "trainable")), f.num(measured(r, "params", "percent"), "{:.4f}%"),
             f.count(est(r, "trainable_params")), f.size(measured(r, "adapter_file_bytes")), f.size(est(r, "file_bytes"))]
            for r in results["methods"]]
    return ("## Parameter efficiency\n\nTrainable parameters include the new classification head where the task has "
            "one (every method trains it).\n\n"
            + f.table(["method", "trainable params", "% of model", "estimate", "adapter file", "estimate (fp32)"], rows))


def render_report(results: dict[str, Any]) -> str:
    info = results["run_info"]
    errors = [r for r in results["methods"] if r.get("error")]
    progress = info.get("in_progress")
    parts = [
        f"# peftlab compare: {results['plan']['model']} on {results['plan']['data']}",
        (f"**In progress**: {progress['finished']} of {progress['methods']} methods finished; the timing phase "
         "and the remaining methods are still to run (this report is rewritten as they finish)."
         if progress else ""),
        f"`{info['command']}`, started {info['started']}, wall time {info.get('wall_s', 0):.0f} s "
        f"(workers' CPU time {info.get('workers_cpu_s', 0):.0f} s); "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        _verdict_section(results), _settings_section(results), _lr_section(results), _params_section(results),
        _memory_section(results), _speed_section(results), _inference_section(results), _quality_section(results),
        _claims_section(results),
    ]
    parts = [part for part in parts if part]
    if errors:
        parts.append("## Errors\n\n" + f.table(["method", "phase", "error"], [
            [r["method"], r["error"].get("phase", "?"),
             f"{r['error']['type']}: {' '.join(r['error']['message'].split())[:300]}"] for r in errors]))
    charts = dict(CHART_TITLES, **({"lr_choice.png": LR_CHART} if _lr_section(results) else {}))
    parts.append("## Charts\n\n" + "\n".join(f"![{title}](charts/{name})" for name, title in charts.items()))
    return "\n\n".join(parts) + "\n"


def write_report(results: dict[str, Any], path: str | Path) -> None:
    write_text(path, render_report(results))


def console_table(results: dict[str, Any]) -> Table:
    reference = results.get("reference_method") or "full"
    quality = results.get("quality") or {}
    scale = f.points(results)
    table = Table(title=f"peftlab compare: {results['plan']['model']} on {results['plan']['data']} "
                        f"({results['run_info'].get('wall_s', 0):.0f} s)",
                  caption="tensor MB: measured peak (estimate); vs: throughput vs the reference; latency ×: "
                          f"unmerged / base; dev: {_metric_label(quality)} [95% interval]; tier: indistinguishable "
                          "methods share a tier (– did not learn); ≈1: within noise")
    for column in ("method", "params", "tensor MB", f"vs {reference}", "latency ×", "dev", "tier", "error"):
        table.add_column(column, justify="left" if column in ("method", "error") else "right")
    for r in results["methods"]:
        error = r.get("error")
        q = measured(r, "quality") or {}
        estimate = f.dig(r.get("estimates"), "memory_mb", "total")
        memory = f.num(measured(r, "memory", "tensor_peak", "peak_mb")) + (f" ({estimate:,.0f})" if estimate else "")

        def short(found: dict[str, Any] | None) -> str:
            text = f.ratio(found)
            return "≈1" if text == f.WITHIN_NOISE else text.split(" [")[0]

        table.add_row(r["method"], f.count(measured(r, "params", "trainable")), memory,
                      "1" if r["method"] == reference else short(measured(r, "step_time", "throughput_vs_reference")),
                      short(measured(r, "latency", "unmerged_ratio")),
                      f.score(q.get("value"), q.get("ci"), scale), str(q.get("tier") or "–"),
                      f"[red]{error['type']}[/red]" if error else "")
    return table

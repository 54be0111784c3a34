"""`peftlab choose`: which PEFT method and configuration, from the source documents' decision framework.

    peftlab choose --task classification --model bert-base --memory 8
    peftlab choose --task instruction-following --model llama-2-7b --memory 16 --examples 50000
    peftlab choose --task code-generation --latency-critical --tasks 3 --json
    peftlab choose --task classification --from-report runs/compare

The rules live in `peftlab/choose/rules.json`; every reason printed cites its seed section.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from peftlab.choose import GOALS, TASKS, ChooseInputs, choose, recommend_from_report
from peftlab.errors import ConfigError
from peftlab.tables import TableData, check_format, format_tables, print_tables


def parse_memory(text: str | None) -> float | str | None:
    """'24', '24GB' -> 24.0; 'cpu' -> 'cpu'; None -> None (unknown)."""
    if text is None:
        return None
    word = text.strip().lower()
    if word == "cpu":
        return "cpu"
    try:
        gigabytes = float(word.removesuffix("gb").strip())
    except ValueError:
        gigabytes = math.nan
    if not math.isfinite(gigabytes) or gigabytes <= 0:
        raise ConfigError(f"--memory {text!r} is not a number of GB > 0 or 'cpu'; e.g. --memory 24")
    return gigabytes


def _size(n: int | None, unit: float, suffix: str) -> str:
    return "—" if n is None else f"{n / unit:,.2f} {suffix}"


def _params(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def describe_config(candidate) -> str:
    """The configuration as one line a user can pass to `peftlab train` (--r, --alpha, --set)."""
    names = {"alpha": "α", "bottleneck_size": "bottleneck", "num_virtual_tokens": "tokens",
             "target_modules": "targets"}
    parts = []
    for key, value in candidate.config.items():
        if key in ("block_size", "double_quant") or (key == "bias" and value == "none"):
            continue
        if isinstance(value, (list, tuple)):
            shown = ",".join(value)
        else:
            shown = f"{value:g}" if isinstance(value, float) else value
        parts.append(f"{names.get(key, key)}={shown}")
    if not candidate.config:
        parts.append("method defaults")
    if candidate.nf4:
        parts.append(f"NF4 base (block {candidate.config['block_size']}"
                     f"{', double quant' if candidate.config.get('double_quant') else ''})")
    if candidate.gradient_checkpointing:
        parts.append("gradient checkpointing")
    if candidate.merge:
        parts.append("merge for deployment")
    return " ".join(parts)


def recommendation_table(rec) -> TableData:
    inputs = rec.inputs
    memory = {"cpu": "cpu (no accelerator)", None: "not given"}.get(inputs.memory) or f"{inputs.memory:g} GB"
    return TableData(f"peftlab choose: {inputs.task} · model {rec.model or '—'} · memory {memory}",
                     ("#", "method", "configuration", "trainable", "train memory", "fits", "adapter file"),
                     [(str(c.rank), c.label, describe_config(c), _params(c.trainable_params),
                       _size(c.training_memory_bytes, 1e9, "GB"), {True: "yes", False: "no", None: "—"}[c.fits],
                       _size(c.adapter_bytes, 1e6, "MB")) for c in rec.candidates], key_columns=2)


def recommendation_details(rec) -> list[tuple[str, bool]]:
    """The reasons, next steps and advice under the table: (line, is_heading)."""
    lines: list[tuple[str, bool]] = []
    for c in rec.candidates:
        lines.append((f"#{c.rank} {c.label}  (inference: {c.inference})", True))
        lines.append((f"  = configuration: {c.config_source}", False))
        lines += [(f"  + {reason}", False) for reason in c.reasons]
        lines += [(f"  ! {caution}", False) for caution in c.cautions]
    best = rec.best
    lines.append((f"Next steps for #1 {best.label}", True))
    for kind, steps in best.next_steps.items():
        lines.append((f"  if {kind}:", False))
        lines += [(f"    - {step}", False) for step in steps]
    if rec.advice:
        lines.append(("Advice", True))
        lines += [(f"  * {reason}", False) for reason in rec.advice]
    if rec.resolutions:
        lines.append(("Where the seeds disagree (rule order)", True))
        lines += [(f"  {rule}: {note}", False) for rule, note in rec.resolutions.items()]
    return lines


def _learning_rate(config: dict) -> str:
    """The rate the measured run trained at (`peftlab train --lr`), marked when a sweep chose it."""
    rate = config.get("learning_rate")
    if not isinstance(rate, (int, float)):
        return "—"
    return f"{rate:g}" + (" (swept)" if (config.get("sweep") or {}).get("chosen") == rate else "")


def report_table(result) -> TableData:
    rows = []
    for c in result.choices:
        m = c.measurements
        front = "front" if c.on_front else "dominated by " + ", ".join(c.dominated_by)
        quality = f"{m.quality:.4g}" + (f" [{m.quality_ci[0]:.4g}, {m.quality_ci[1]:.4g}]" if m.quality_ci else "") \
            + (f" {m.metric}" if m.metric else "")
        rows.append((str(c.rank), c.label, _learning_rate(c.config), quality, _size(m.peak_memory_bytes, 1e9, "GB"),
                     f"{m.step_time_s:.3f} s", _size(m.adapter_bytes, 1e6, "MB"), front))
    return TableData(f"peftlab choose --from-report {result.folder} · {result.inputs.task}",
                     ("#", "method", "learning rate", "quality [95% interval]", "peak memory", "step time",
                      "adapter file", "Pareto"), rows, key_columns=2)


def report_details(result) -> list[tuple[str, bool]]:
    lines = [(f"  excluded {label}: {why}", False) for label, why in result.excluded]
    if result.overrides:
        lines.append(("Measured vs rule of thumb", True))
        lines += [(f"  {line}", False) for line in result.overrides]
    return lines


def _print(table: TableData, details: list[tuple[str, bool]], fmt: str, console: Console) -> None:
    """The table in `fmt`, then the details: bold headings in a terminal, a list in Markdown."""
    if fmt == "csv":
        console.out(format_tables([table], "csv"), highlight=False)
        return
    if fmt == "markdown":
        lines = [f"\n**{text}**\n" if heading else f"- {text.strip()}" for text, heading in details]
        console.out(format_tables([table], "markdown") + "\n" + "\n".join(lines), highlight=False)
        return
    print_tables([table], console=console)
    for text, heading in details:
        console.print(Text(("\n" if heading else "") + text, style="bold" if heading else ""))


def choose_command(
    task: Annotated[str, typer.Option("--task", help=f"One of: {', '.join(TASKS)}.")],
    latency_critical: Annotated[bool, typer.Option("--latency-critical", help="Inference latency is critical.")] = False,
    memory: Annotated[Optional[str], typer.Option("--memory", help="Accelerator memory in GB, or 'cpu'.")] = None,
    model: Annotated[str, typer.Option("--model", help="Estimator preset (llama-2-7b, bert-base, ...) or config.json.")] = "llama-2-7b",
    examples: Annotated[Optional[int], typer.Option("--examples", help="Training examples.")] = None,
    tasks: Annotated[int, typer.Option("--tasks", help="Tasks to serve from one base model.")] = 1,
    storage_mb: Annotated[Optional[float], typer.Option("--storage-mb", help="Storage budget per task (MB).")] = None,
    combine: Annotated[bool, typer.Option("--combine", help="Several tasks must combine in one model.")] = False,
    goal: Annotated[Optional[str], typer.Option("--goal", help=f"A stated need: {', '.join(GOALS)}.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch for the memory estimate.")] = 4,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per example for the memory estimate.")] = 512,
    num_labels: Annotated[int, typer.Option("--num-labels", help="Classes (classification).")] = 2,
    from_report: Annotated[Optional[Path], typer.Option("--from-report", help="A `peftlab compare` folder: recommend from its measurements.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (= --format json).")] = False,
    output_format: Annotated[str, typer.Option("--format", help="table, markdown, json or csv.")] = "table",
) -> None:
    """Recommend a PEFT method and configuration, ranked, with the seed rule behind each reason."""
    inputs = ChooseInputs(task=task, latency_critical=latency_critical, memory=parse_memory(memory),
                          model=model, examples=examples, num_tasks=tasks, storage_mb=storage_mb,
                          combine_tasks=combine, goal=goal, batch_size=batch_size, seq_len=seq_len,
                          num_labels=num_labels)
    output_format = check_format("json" if as_json else output_format)
    result = recommend_from_report(from_report, inputs) if from_report is not None else choose(inputs)
    if output_format == "json":
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    if from_report is not None:
        _print(report_table(result), report_details(result), output_format, Console())
    else:
        _print(recommendation_table(result), recommendation_details(result), output_format, Console())


def register(app: typer.Typer) -> None:
    app.command("choose")(choose_command)

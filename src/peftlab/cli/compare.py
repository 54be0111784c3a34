"""`peftlab compare`: every method on one budget, measured side by side (see `peftlab.compare`).

    peftlab compare                                   # MiniLM + SST-2, every method, quick profile
    peftlab compare --methods full,lora,prompt --steps 200 --out runs/compare
    peftlab compare --model ./my-model --data pairs.tsv --text-col premise --text-pair-col hypothesis

Writes results.json, report.md, report.html (self-contained, sortable) and charts/*.png into --out
and prints a table at the end (`--format markdown|csv|json` for other tools); `--report-to
tensorboard|mlflow` also logs the results into local trackers under --out.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from peftlab.cli.train import DataOpt, LabelCol, ModelOpt, PromptCol, ReportTo, TargetCol, TextCol, TextPairCol


def compare_command(
    ctx: typer.Context,
    model: ModelOpt = "minilm",
    data: DataOpt = "sst2",
    methods: Annotated[Optional[str], typer.Option("--methods", help="Comma-separated methods (default: every registered one).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps per method (default: the profile's).")] = None,
    profile: Annotated[str, typer.Option("--profile", help="quick (~16 min on 2 CPU cores) | tuned (quick + --tune-lr, ~1 h) | full.")] = "quick",
    seed: Annotated[int, typer.Option("--seed", help="Seeds head/adapter init, data order, dropout.")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch threads (default: the CPUs available).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("compare-out"),
    max_train: Annotated[Optional[int], typer.Option("--max-train", help="Keep the first N training rows.")] = None,
    max_dev: Annotated[Optional[int], typer.Option("--max-dev", help="Keep the first N dev rows (causal-LM: prompts).")] = None,
    tune_lr: Annotated[bool, typer.Option("--tune-lr", help="Choose each method's learning rate by a sweep first (3-5 extra runs a method, ~3.5x the time).")] = False,
    keep_adapters: Annotated[bool, typer.Option("--keep-adapters", help="Keep each trained adapter in OUT/adapters.")] = False,
    text_col: TextCol = None,
    text_pair_col: TextPairCol = None,
    label_col: LabelCol = None,
    prompt_col: PromptCol = None,
    target_col: TargetCol = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress.")] = True,
    output_format: Annotated[str, typer.Option(
        "--format", help="Final table: table, markdown or csv; json prints results.json (stdout: the data only).")] = "table",
    report_to: ReportTo = "none",
) -> None:
    """Train every method on the same budget and measure parameters, memory, speed, latency and quality."""
    from rich.console import Console

    from peftlab.cli.main import command_line
    from peftlab.compare import make_plan, run_compare
    from peftlab.compare.report import console_table
    from peftlab.tables import TableData, check_format, format_tables
    from peftlab.tracking import parse_report_to

    output_format = check_format(output_format)
    parse_report_to(report_to)  # a typo fails now, not after the run
    console = Console(stderr=output_format != "table", quiet=not progress)  # stdout holds the data

    columns = {"text_col": text_col, "text_pair_col": text_pair_col, "label_col": label_col,
               "prompt_col": prompt_col, "target_col": target_col}
    plan = make_plan(model=model, data=data, columns=columns, methods=methods, profile=profile, steps=steps,
                     seed=seed, threads=threads, device=device, max_train=max_train, max_dev=max_dev, tune_lr=tune_lr)
    started = time.perf_counter()
    # Workers print their bars to the shared stdout: with data there, only the stderr lines show progress.
    results = run_compare(plan, out, progress=progress and output_format == "table", keep_adapters=keep_adapters,
                          console=console,
                          command=shlex.join(command_line(ctx) or ["peftlab", *sys.argv[1:]]),
                          table_format=output_format, report_to=report_to)
    if output_format == "json":
        typer.echo(json.dumps(results, indent=2))
    elif output_format != "table":
        typer.echo(format_tables([TableData.from_rich(console_table(results))], output_format))
    failed = [r["method"] for r in results["methods"] if r["error"]]
    typer.echo(f"{len(plan.methods)} methods in {time.perf_counter() - started:.0f} s"
               + (f" ({len(failed)} failed: {', '.join(failed)})" if failed else "")
               + f"; report: {out / 'report.md'} and {out / 'report.html'}, data: {out / 'results.json'}, "
               f"charts: {out / 'charts'}",
               err=output_format != "table")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)

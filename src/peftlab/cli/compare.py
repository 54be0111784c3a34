"""`peftlab compare`: every method on one budget, measured side by side (see `peftlab.compare`).

    peftlab compare                                   # MiniLM + SST-2, every method, quick profile
    peftlab compare --methods full,lora,prompt --steps 200 --out runs/compare
    peftlab compare --model ./my-model --data pairs.tsv --text-col premise --text-pair-col hypothesis
    peftlab compare --seeds 3 --methods full,lora,ia3 --steps 60  # mean ± sd over seeds in the intervals
    peftlab compare --profile tuned --parallel 8 --device cuda      # 8 runs at once, one GPU each
    peftlab compare --profile tuned --executor ray --address HEAD:6379  # runs as tasks of a Ray cluster

Writes results.json, report.md, report.html (self-contained, sortable) and charts/*.png into --out
(the report so far after every method) and prints a table at the end (`--format markdown|csv|json`
for other tools); `--report-to tensorboard|mlflow` also logs the results into local trackers under
--out. Ctrl-C keeps what finished; `--resume OUT` continues from there.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from peftlab.cli.train import DataOpt, DevFraction, LabelCol, ModelOpt, PromptCol, ReportTo, TargetCol, TextCol, TextPairCol
from peftlab.errors import ConfigError

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def compare_command(
    ctx: typer.Context,
    model: ModelOpt = "minilm",
    data: DataOpt = "sst2",
    methods: Annotated[Optional[str], typer.Option("--methods", help="Comma-separated methods (default: every registered one that is no variant of another).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps per method (default: the profile's).")] = None,
    profile: Annotated[str, typer.Option("--profile", help="preview (a first table in minutes: 20 steps, no rate choice, scores not meaningful) | quick (learning rates probed) | tuned (a full sweep per method) | full; measured durations are in the README.")] = "quick",
    seed: Annotated[int, typer.Option("--seed", help="Seeds head/adapter init, data order, dropout.")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch threads (default: the CPUs available).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("compare-out"),
    max_train: Annotated[Optional[int], typer.Option("--max-train", help="Keep the first N training rows.")] = None,
    max_dev: Annotated[Optional[int], typer.Option("--max-dev", help="Keep the first N dev rows (causal-LM: prompts).")] = None,
    dev_fraction: DevFraction = None,
    tune_lr: Annotated[bool, typer.Option("--tune-lr/--no-tune-lr", help="Choose each method's learning rate by a full sweep first (the tuned profile's way: 3-5 extra runs a method, ~3.5x the time).")] = False,
    lr_choice: Annotated[Optional[str], typer.Option("--lr-choice", help="How learning rates are chosen: literature (published defaults) | probe (a short run per candidate on a validation split, the quick profile's) | sweep (= --tune-lr).")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", help="Train each method with N seeds (init and data order); intervals include the seed spread.")] = None,
    sweep_seeds: Annotated[Optional[int], typer.Option("--sweep-seeds", help="With a sweep: score each rate on N seeds (mean).")] = None,
    timing_seconds: Annotated[Optional[float], typer.Option("--timing-seconds", help="Time cap of the interleaved timing phase (it stops earlier once every ratio is known to ±5 %).")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Cut rows at N tokens (default: fitted to the data's longest row, at most the profile's cap).")] = None,
    keep_adapters: Annotated[bool, typer.Option("--keep-adapters/--no-keep-adapters", help="Keep each trained adapter in OUT/adapters.")] = False,
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="A method option as method.key=value (repeat); a part of a combination by its name, e.g. lora.r=8, prompt.lr_scale=300.")] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Training and sweep runs at once on this machine, one per visible GPU (on CPU: each with --threads threads). Same results as one at a time.")] = 1,
    executor: Annotated[str, typer.Option("--executor", help="local (this machine) | ray (tasks of the Ray cluster at --address).")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster address for --executor ray (what `ray start --head` prints).")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the comparison stopped in this folder (same options; finished runs are kept).")] = None,
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
    from peftlab.compare.plan import with_fields
    from peftlab.compare.report import console_table
    from peftlab.compare.run import CompareInterrupted
    from peftlab.compare.runs import method_config
    from peftlab.io import check_writable_folder
    from peftlab.tables import TableData, check_format, format_tables
    from peftlab.tracking import parse_report_to

    output_format = check_format(output_format)
    parse_report_to(report_to)  # a typo fails now, not after the run
    console = Console(stderr=output_format != "table", quiet=not progress)  # stdout holds the data

    out = resume or out
    check_writable_folder(out, "--out", replaced=False)  # before an hour of training, not after
    columns = {"text_col": text_col, "text_pair_col": text_pair_col, "label_col": label_col,
               "prompt_col": prompt_col, "target_col": target_col}
    plan = make_plan(model=model, data=data, columns=columns, methods=methods, profile=profile, steps=steps,
                     seed=seed, threads=threads, device=device, max_train=max_train, max_dev=max_dev, tune_lr=tune_lr,
                     lr_choice=lr_choice, seeds=seeds, sweep_seeds=sweep_seeds, max_length=max_length,
                     timing_seconds=timing_seconds, dev_fraction=dev_fraction)
    if settings:
        plan = with_fields(plan, parse_settings(settings))
        for method in plan.methods:
            method_config(method)  # a bad value fails now, in one line, not in a worker
    started = time.perf_counter()
    try:
        # Workers print their bars to the shared stdout: with data there, only the stderr lines show progress.
        results = run_compare(plan, out, progress=progress and output_format == "table", keep_adapters=keep_adapters,
                              console=console, resume=resume is not None, executor=executor, parallel=parallel,
                              address=address, command=shlex.join(command_line(ctx) or ["peftlab", *sys.argv[1:]]),
                              table_format=output_format, report_to=report_to)
    except CompareInterrupted as stopped:
        typer.echo(str(stopped), err=True)
        raise typer.Exit(INTERRUPTED_EXIT_CODE) from None
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


def parse_settings(settings: list[str]) -> dict[str, dict[str, Any]]:
    """`method.key=value` texts as {method: {key: value}}, each value converted to the type the
    method's (or the combination part's) config declares for `key`, as JSON (lists for tuples)."""
    from peftlab.cli.options import config_fields, convert
    from peftlab.core.registry import declaration

    found: dict[str, dict[str, Any]] = {}
    for setting in settings:
        key, separator, text = setting.partition("=")
        method, dot, field = key.strip().partition(".")
        field = field.strip().replace("-", "_")
        if not separator or not dot or not field:
            raise ConfigError(f"--set {setting!r}: write method.key=value, e.g. --set lora.r=8")
        if field == "lr_scale":
            value: Any = convert(text, float, f"{method}.lr_scale")
        else:
            fields = config_fields(declaration(method).config_class)  # an unknown method names the known ones
            if field not in fields:
                raise ConfigError(f"method {method!r} has no option {field!r}: its options are {', '.join(fields)}")
            value = convert(text, fields[field], f"{method}.{field}")
        found.setdefault(method, {})[field] = list(value) if isinstance(value, tuple) else value
    return found


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)

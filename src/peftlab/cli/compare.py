"""`peftlab compare`: every method on one budget, measured side by side (see `peftlab.compare`).

    peftlab compare                                   # MiniLM + SST-2, every method, quick profile
    peftlab compare --methods full,lora,prompt --steps 200 --out runs/compare
    peftlab compare --model ./my-model --data pairs.tsv --text-col premise --text-pair-col hypothesis
    peftlab compare --seeds 3 --methods full,lora,ia3 --steps 60  # mean ± sd over seeds in the intervals
    peftlab compare --profile tuned --parallel 8 --device cuda      # 8 runs at once, one GPU each
    peftlab compare --profile tuned --executor ray --address HEAD:6379  # runs as tasks of a Ray cluster

Writes results.json, report.md and charts/*.png into --out (the report so far after every method)
and prints a table at the end. Ctrl-C keeps what finished; `--resume OUT` continues from there.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from peftlab.cli.train import DataOpt, LabelCol, ModelOpt, PromptCol, TargetCol, TextCol, TextPairCol

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def compare_command(
    ctx: typer.Context,
    model: ModelOpt = "minilm",
    data: DataOpt = "sst2",
    methods: Annotated[Optional[str], typer.Option("--methods", help="Comma-separated methods (default: every registered one).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps per method (default: the profile's).")] = None,
    profile: Annotated[str, typer.Option("--profile", help="preview (a first table in minutes: 20 steps, no rate choice, scores not meaningful) | quick (learning rates probed) | tuned (a full sweep per method) | full; measured durations are in the README.")] = "quick",
    seed: Annotated[int, typer.Option("--seed", help="Seeds head/adapter init, data order, dropout.")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch threads (default: the CPUs available).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("compare-out"),
    max_train: Annotated[Optional[int], typer.Option("--max-train", help="Keep the first N training rows.")] = None,
    max_dev: Annotated[Optional[int], typer.Option("--max-dev", help="Keep the first N dev rows (causal-LM: prompts).")] = None,
    tune_lr: Annotated[bool, typer.Option("--tune-lr", help="Choose each method's learning rate by a full sweep first (the tuned profile's way: 3-5 extra runs a method, ~3.5x the time).")] = False,
    lr_choice: Annotated[Optional[str], typer.Option("--lr-choice", help="How learning rates are chosen: literature (published defaults) | probe (a short run per candidate on a validation split, the quick profile's) | sweep (= --tune-lr).")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", help="Train each method with N seeds (init and data order); intervals include the seed spread.")] = None,
    sweep_seeds: Annotated[Optional[int], typer.Option("--sweep-seeds", help="With a sweep: score each rate on N seeds (mean).")] = None,
    timing_seconds: Annotated[Optional[float], typer.Option("--timing-seconds", help="Time cap of the interleaved timing phase (it stops earlier once every ratio is known to ±5 %).")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Cut rows at N tokens (default: fitted to the data's longest row, at most the profile's cap).")] = None,
    keep_adapters: Annotated[bool, typer.Option("--keep-adapters", help="Keep each trained adapter in OUT/adapters.")] = False,
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
) -> None:
    """Train every method on the same budget and measure parameters, memory, speed, latency and quality."""
    from peftlab.cli.main import command_line
    from peftlab.compare import make_plan, run_compare
    from peftlab.compare.run import CompareInterrupted
    from peftlab.io import check_writable_folder

    out = resume or out
    check_writable_folder(out, "--out", replaced=False)  # before an hour of training, not after
    columns = {"text_col": text_col, "text_pair_col": text_pair_col, "label_col": label_col,
               "prompt_col": prompt_col, "target_col": target_col}
    plan = make_plan(model=model, data=data, columns=columns, methods=methods, profile=profile, steps=steps,
                     seed=seed, threads=threads, device=device, max_train=max_train, max_dev=max_dev, tune_lr=tune_lr,
                     lr_choice=lr_choice, seeds=seeds, sweep_seeds=sweep_seeds, max_length=max_length,
                     timing_seconds=timing_seconds)
    started = time.perf_counter()
    try:
        results = run_compare(plan, out, progress=progress, keep_adapters=keep_adapters, resume=resume is not None,
                              executor=executor, parallel=parallel, address=address, command=shlex.join(command_line(ctx) or ["peftlab", *sys.argv[1:]]))
    except CompareInterrupted as stopped:
        typer.echo(str(stopped), err=True)
        raise typer.Exit(INTERRUPTED_EXIT_CODE) from None
    failed = [r["method"] for r in results["methods"] if r["error"]]
    typer.echo(f"{len(plan.methods)} methods in {time.perf_counter() - started:.0f} s"
               + (f" ({len(failed)} failed: {', '.join(failed)})" if failed else "")
               + f"; report: {out / 'report.md'}, data: {out / 'results.json'}, charts: {out / 'charts'}")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)

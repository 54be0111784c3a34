"""`peftlab train`, `peftlab eval` and `peftlab merge`.

    peftlab train --method lora --model minilm --data sst2 --out runs/lora --r 16 --alpha 32
    peftlab eval runs/lora --model minilm --data sst2
    peftlab merge runs/lora --model minilm --out runs/lora-merged
    peftlab train ... --out runs/lora --checkpoint-every 200        # runs/lora/checkpoints/step-200/ ...
    peftlab train ... --out runs/lora --resume runs/lora/checkpoints  # continue from the latest one
    torchrun --nproc_per_node=2 -m peftlab train ...                  # data-parallel, same global batch
    torchrun --nproc_per_node=2 -m peftlab train ... --fsdp           # every parameter sharded (FSDP2)

`--model` takes a known name (minilm, smollm2), a local Hugging Face folder or a .gguf file;
`--data` an embedded task (sst2, e2e), a folder with train/dev files, or one CSV/TSV/JSONL file.
Any method of the registry trains through the same command: the common LoRA-style flags (`--r`,
`--alpha`, `--targets`, `--dropout`) and `--set key=value` fill the method's config.
`--out` is checked before any work (a file, or a folder that cannot be written, is one error
line) and written as one unit at the end (`peftlab.io.replace_folder`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from peftlab.errors import ConfigError

ModelOpt = Annotated[str, typer.Option("--model", help="Known name (minilm, smollm2), HF folder or .gguf file.")]
DataOpt = Annotated[str, typer.Option("--data", help="Embedded task (sst2, e2e), data folder, or CSV/TSV/JSONL file.")]
TextCol = Annotated[Optional[str], typer.Option("--text-col", help="Column with the text (classification).")]
TextPairCol = Annotated[Optional[str], typer.Option("--text-pair-col", help="Column with the second text of a pair.")]
LabelCol = Annotated[Optional[str], typer.Option("--label-col", help="Column with the label.")]
PromptCol = Annotated[Optional[str], typer.Option("--prompt-col", help="Column with the prompt (causal-LM).")]
TargetCol = Annotated[Optional[str], typer.Option("--target-col", help="Column with the target (causal-LM).")]
MaxTrain = Annotated[Optional[int], typer.Option("--max-train", help="Keep the first N training rows.")]
MaxDev = Annotated[Optional[int], typer.Option("--max-dev", help="Keep the first N dev rows (causal-LM: prompts).")]
DevFraction = Annotated[Optional[float], typer.Option("--dev-fraction", help="Data without a dev split (one file): the part of the training rows held out as dev, seed 0 (default 0.1; 0: none).")]
ReportTo = Annotated[str, typer.Option(
    "--report-to", help="none | tensorboard | mlflow (or both, comma-separated): local files under --out.")]

_KINDS = {"SEQ_CLS": "classification", "CAUSAL_LM": "causal-lm"}


def _load_task(data: str, max_train=None, max_dev=None, dev_fraction=None, **columns):
    """The task of `data` (`dev_fraction` None: the library's default hold-out), saying where a
    held-out dev split came from."""
    from peftlab.data import load_task

    held_out = {} if dev_fraction is None else {"dev_fraction": dev_fraction}
    task = load_task(data, max_train=max_train, max_dev=max_dev, **held_out, **columns)
    if task.dev_origin:
        typer.echo(f"dev split: {task.dev_origin}", err=True)
    return task


def _load_base(model: str, task, config):
    """The base model for `config` on `task` (see `peftlab.models.base`)."""
    from peftlab.models import load_base

    return load_base(model, task.kind, task.num_labels if task.kind == "classification" else None, config)


def _print_metrics(title: str, metrics: dict, echo=typer.echo) -> None:
    shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in metrics.items() if k != "samples")
    echo(f"{title}: {shown}")


def train_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder for the adapter and metrics.json.")],
    method: Annotated[str, typer.Option("--method", help="A registered method (lora, full, ...).")] = "lora",
    model: ModelOpt = "minilm",
    data: DataOpt = "sst2",
    r: Annotated[Optional[int], typer.Option(
        "--r", "--rank", help="Rank (methods with `r`); under torchrun write --rank (it reads --r as its own).")] = None,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help="Scale numerator (methods with `alpha`).")] = None,
    targets: Annotated[Optional[str], typer.Option("--targets", help="Comma-separated target modules, or all-linear.")] = None,
    dropout: Annotated[Optional[float], typer.Option("--dropout", help="Adapter dropout (methods with `dropout`).")] = None,
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="Any method option as key=value (repeat).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate [5e-4; full FT wants ~5e-5].")] = None,
    epochs: Annotated[Optional[float], typer.Option("--epochs", help="Epochs [3].")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps (overrides --epochs).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Examples per micro-batch [32].")] = None,
    grad_accum: Annotated[Optional[int], typer.Option("--grad-accum", help="Micro-batches per step [1].")] = None,
    warmup_ratio: Annotated[Optional[float], typer.Option("--warmup-ratio", help="Warmup fraction [0.06].")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option("--warmup-steps", help="Warmup steps (overrides ratio).")] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="AdamW decay on matrices [0.01].")] = None,
    max_grad_norm: Annotated[Optional[float], typer.Option("--max-grad-norm", help="Clip norm, 0 = off [1.0].")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds adapter init, head init, data order, dropout.")] = 0,
    eval_every: Annotated[Optional[int], typer.Option("--eval-every", help="Dev evaluation every N steps.")] = None,
    log_every: Annotated[Optional[int], typer.Option("--log-every", help="Loss logging every N steps [10].")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Tokens per example [128].")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch threads.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda [auto].")] = None,
    bf16: Annotated[bool, typer.Option("--bf16", help="bfloat16 autocast.")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations.")] = False,
    chat: Annotated[bool, typer.Option("--chat", help="Causal-LM prompts through the chat template.")] = False,
    generate: Annotated[bool, typer.Option("--generate", help="Causal-LM: final BLEU / ROUGE-L by greedy decoding.")] = False,
    max_train: MaxTrain = None,
    max_dev: MaxDev = None,
    dev_fraction: DevFraction = None,
    text_col: TextCol = None,
    text_pair_col: TextPairCol = None,
    label_col: LabelCol = None,
    prompt_col: PromptCol = None,
    target_col: TargetCol = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
    checkpoint_every: Annotated[Optional[int], typer.Option(
        "--checkpoint-every", help="Write a checkpoint every N optimizer steps.")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option(
        "--checkpoint-dir", help="Folder for checkpoints [<out>/checkpoints].")] = None,
    keep_checkpoints: Annotated[Optional[int], typer.Option(
        "--keep-checkpoints", help="Newest checkpoints kept on disk [2].")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        "--resume", help="Continue from a checkpoint folder, or the latest one in a checkpoints folder.")] = None,
    fsdp: Annotated[bool, typer.Option(
        "--fsdp", help="Under torchrun: shard every parameter over the processes (FSDP2), for models larger "
                       "than one device; no checkpoints.")] = False,
    stop_if_loss_rises_after: Annotated[Optional[float], typer.Option(
        "--stop-if-loss-rises-after",
        help="Fraction of the run after which a loss above the first logged one stops it (LR sweeps).")] = None,
    report_to: ReportTo = "none",
) -> None:
    """Fine-tune a model with one method and write the adapter plus metrics.json to --out.

    Under torchrun (or accelerate launch) every process runs this command; rank 0 alone prints
    and writes files.
    """
    from peftlab.cli.main import command_line
    from peftlab.cli.options import method_config
    from peftlab.io import check_writable_folder
    from peftlab.train import TrainConfig, distributed, train, write_run
    from peftlab.train.checkpoint import CHECKPOINTS
    from peftlab.tracking import open_tracker, parse_report_to, train_callback

    trackers = parse_report_to(report_to)
    flags = {"r": r, "alpha": alpha, "target_modules": targets, "dropout": dropout}
    config = method_config(method, {k: v for k, v in flags.items() if v is not None}, settings or [])
    chosen = {"learning_rate": lr, "epochs": epochs, "max_steps": steps, "batch_size": batch_size,
              "grad_accum": grad_accum, "warmup_ratio": warmup_ratio, "warmup_steps": warmup_steps,
              "weight_decay": weight_decay, "eval_every": eval_every, "log_every": log_every,
              "max_length": max_length, "num_threads": threads, "device": device,
              "checkpoint_every": checkpoint_every, "keep_checkpoints": keep_checkpoints,
              "stop_if_loss_rises_after": stop_if_loss_rises_after}
    train_config = TrainConfig(seed=seed, bf16=bf16, gradient_checkpointing=gradient_checkpointing, chat=chat,
                               generate=generate, fsdp=fsdp, **{k: v for k, v in chosen.items() if v is not None})
    if max_grad_norm is not None:
        train_config = train_config.replace(max_grad_norm=max_grad_norm or None)

    import torch

    import peftlab

    ddp = distributed.setup(train_config.device)  # joins the process group under torchrun
    echo = typer.echo if ddp.main else (lambda *_: None)
    if ddp.main:  # before any work: a finished run must never be lost to an unwritable --out
        check_writable_folder(out, "--out")
        if checkpoint_dir is not None and train_config.checkpoint_every:
            check_writable_folder(checkpoint_dir, "--checkpoint-dir")
    task = _load_task(data, max_train, max_dev, dev_fraction, text_col=text_col, text_pair_col=text_pair_col,
                      label_col=label_col, prompt_col=prompt_col, target_col=target_col)
    torch.manual_seed(seed)  # the new head's and the adapter's initial weights
    loaded = _load_base(model, task, config)
    peft_model = peftlab.apply(loaded.model, config)
    trainable, total = peft_model.count_parameters()
    runtime = [str(ddp.device)] + ["bf16"] * bf16 + ["gradient checkpointing"] * gradient_checkpointing
    if ddp.world_size > 1:
        runtime.append(f"{ddp.world_size} processes" + (", sharded (FSDP2)" if fsdp else ""))
    echo(f"{method} on {loaded.name} / {task.name}: {len(task.train)} train, {len(task.dev)} dev; "
         f"{trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%); {', '.join(runtime)}")
    with open_tracker(trackers if ddp.main else (), out, run_name=out.name or method) as tracker:
        tracker.log_params({"method": method, "model": model, "data": data, **config.to_dict(),
                            **{f"train/{k}": v for k, v in dataclasses.asdict(train_config).items()}})
        result = train(peft_model, task, loaded.tokenizer, train_config, progress=progress,
                       checkpoint_dir=checkpoint_dir or out / CHECKPOINTS, resume_from=resume,
                       on_log=train_callback(tracker))
    extra = {"model": {"name": model, "source_path": loaded.source_path, "class": type(loaded.model).__name__},
             "data": data}
    if peft_model.sharded:
        extra["fsdp"] = _report_shards(ddp.gather_objects(distributed.resident_bytes(peft_model)), echo)
    with distributed.whole_adapters(peft_model):  # sharded: the adapter tensors gathered on every rank
        if ddp.main:
            write_run(out, peft_model, task, train_config, result, extra, command_line(ctx))
    _print_metrics("dev", result.final_metrics, echo)
    step = result.step_time.get("median", 0.0)
    echo(f"{result.steps} steps in {result.wall_time_s:.1f} s (median step {step * 1000:.0f} ms); "
         f"adapter and metrics.json written to {out}")
    ddp.barrier()  # no rank leaves (and tears the group down) before rank 0 has written
    distributed.shutdown()


def _report_shards(per_rank: list[dict[str, int]], echo) -> dict:
    """Print and return each rank's share of the transformer blocks' parameter bytes."""
    total = per_rank[0]["total"]
    shares = ", ".join(f"rank {rank} {entry['held'] / 2**20:.3f} MiB ({entry['held'] / total:.3f})"
                       for rank, entry in enumerate(per_rank))
    echo(f"fsdp: the blocks' parameters, {total / 2**20:.3f} MiB whole, held as {shares}")
    return {"blocks_bytes": total, "held_bytes_per_rank": [entry["held"] for entry in per_rank]}


def eval_command(
    adapter: Annotated[Path, typer.Argument(help="Adapter folder (peftlab or Hugging Face PEFT).")],
    model: ModelOpt = "minilm",
    data: DataOpt = "sst2",
    max_dev: MaxDev = None,
    dev_fraction: DevFraction = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per forward pass.")] = 64,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens per example.")] = 128,
    generate: Annotated[bool, typer.Option("--generate", help="Causal-LM: BLEU / ROUGE-L by greedy decoding.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Decoding length limit.")] = 64,
    chat: Annotated[bool, typer.Option("--chat", help="Causal-LM prompts through the chat template.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    text_col: TextCol = None,
    text_pair_col: TextPairCol = None,
    label_col: LabelCol = None,
    prompt_col: PromptCol = None,
    target_col: TargetCol = None,
) -> None:
    """Score an adapter on a data set's dev split (method and config come from the adapter folder)."""
    import peftlab
    from peftlab.core.adapter_io import read_config
    from peftlab.train import evaluate

    config = read_config(adapter)  # a missing or broken folder fails before the model loads
    task = _load_task(data, None, max_dev, dev_fraction, text_col=text_col, text_pair_col=text_pair_col,
                      label_col=label_col, prompt_col=prompt_col, target_col=target_col)
    if not task.dev:
        raise ConfigError(f"data {data!r} has no dev split to evaluate on; name a dev file or give --dev-fraction "
                          f"above 0 to hold out part of the training rows")
    loaded = _load_base(model, task, config)  # a QLoRA adapter's base straight into NF4, as in training
    peft_model = peftlab.load_adapter(loaded.model, adapter)
    metrics = evaluate(peft_model, task, loaded.tokenizer, batch_size=batch_size, max_length=max_length,
                       generate=generate, max_new_tokens=max_new_tokens, chat=chat)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        _print_metrics(f"{adapter} on {task.name} dev", metrics)


def _merge_kind(fields: dict, kind: str | None) -> str:
    if kind is not None:
        return kind
    task_type = fields.get("task_type")
    if task_type not in _KINDS:
        raise ConfigError(f"the adapter's task_type is {task_type!r}: pass --kind classification or causal-lm")
    return _KINDS[task_type]


def merge_command(
    adapter: Annotated[Path, typer.Argument(help="Adapter folder to merge.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the merged Hugging Face model.")],
    model: ModelOpt = "minilm",
    safe: Annotated[bool, typer.Option(
        "--safe/--unsafe", help="Merge in a copy and refuse non-finite weights; --unsafe skips the check.")] = True,
    kind: Annotated[Optional[str], typer.Option("--kind", help="classification | causal-lm [from the adapter].")] = None,
    num_labels: Annotated[Optional[int], typer.Option("--num-labels", help="Classifier outputs [from metrics.json].")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
) -> None:
    """Fold an adapter into the base weights and write a plain Hugging Face model folder.

    The merged weights are checked (NaN or infinite ones are refused) unless --unsafe."""
    import peftlab
    from peftlab.core.files import read_adapter_config
    from peftlab.io import check_writable_folder
    from peftlab.models import load_model
    from peftlab.train import read_run

    fields = read_adapter_config(adapter)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists already: choose a new folder or pass --overwrite")
    if adapter.resolve().is_relative_to(out.resolve()):
        raise ConfigError(f"--out {out} holds the adapter being merged, which --overwrite would delete: choose "
                          "another folder")
    check_writable_folder(out, "--out")
    kind = _merge_kind(fields, kind)
    label_names = ((read_run(adapter) or {}).get("task") or {}).get("label_names") or []
    num_labels = _merge_num_labels(kind, num_labels, label_names)
    loaded = load_model(model, kind, num_labels=num_labels)
    merged = peftlab.load_adapter(loaded.model, adapter).merge_and_unload(safe=safe)
    if kind == "classification" and len(label_names) == merged.config.num_labels:
        merged.config.id2label = dict(enumerate(label_names))
        merged.config.label2id = {name: i for i, name in enumerate(label_names)}
    _write_model_folder(merged, loaded.tokenizer, out)
    typer.echo(f"merged model written to {out}")


def _merge_num_labels(kind: str, num_labels: int | None, label_names: list[str]) -> int | None:
    """The classifier outputs to build: --num-labels, else the trained task's label count.

    --num-labels must agree with the labels the adapter was trained on (its metrics.json): the
    adapter's copy of the head has that many outputs, so another number could never load it. It
    matters where the run left no labels (an adapter from Hugging Face PEFT) or saved no head."""
    if kind != "classification":
        if num_labels is not None:
            raise ConfigError(f"--num-labels applies to classification adapters; this one is {kind}: leave it out")
        return None
    if num_labels is not None and label_names and num_labels != len(label_names):
        raise ConfigError(f"--num-labels {num_labels} does not fit the adapter, trained on {len(label_names)} "
                          f"labels ({', '.join(label_names)}): leave --num-labels out or pass {len(label_names)}")
    return num_labels if num_labels is not None else (len(label_names) or None)


def _write_model_folder(model, tokenizer, out: Path) -> None:
    """save_pretrained into a temporary sibling folder swapped in for `out` as a whole."""
    import transformers

    from peftlab.io import replace_folder

    transformers.utils.logging.disable_progress_bar()  # one line of our own is enough
    with replace_folder(out, flush_files=True) as temporary:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("eval")(eval_command)
    app.command("merge")(merge_command)

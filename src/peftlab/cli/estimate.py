"""`peftlab estimate`: parameters, adapter size and training memory, instantly, without weights.

    peftlab estimate llama-2-7b -m lora,qlora,full --r 16
    peftlab estimate path/to/config.json -m all --num-labels 2 --json
    peftlab estimate --source-tables    # the source documents' tables, reproduced, with notes
    peftlab estimate --scaling --csv    # 1B/7B/13B/70B: full vs LoRA vs QLoRA

Options shared by several methods map onto each method's own config field (LoRA `bias` is
--bias, adapters `bias` is --adapter-bias; IA³ `target_modules` is --ia3-targets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from peftlab.errors import PeftlabError

HELP_MODEL = "preset name or path to a Hugging Face config.json (or its folder)"


def _split(text: str | None) -> tuple[str, ...] | str | None:
    if text is None:
        return None
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    return "all-linear" if parts == ("all-linear",) else parts


def _method_options(method_cls, options: dict) -> dict:
    """The CLI options `method_cls` has fields for, renamed where a name is shared."""
    renames = {"adapters": {"bias": "adapter_bias"}, "ia3": {"target_modules": "ia3_targets"}}
    rename = renames.get(method_cls.name, {})
    return {field: options[rename.get(field, field)]
            for field in method_cls.__dataclass_fields__ if rename.get(field, field) in options}


def estimate_command(
    model: Optional[str] = typer.Argument(None, help=HELP_MODEL),
    method: str = typer.Option("lora", "--method", "-m",
                               help="full, lora, qlora, ia3, adapters, prefix, prompt; "
                                    "comma-separated, or 'all'"),
    r: int = typer.Option(8, help="LoRA/QLoRA rank"),
    alpha: float = typer.Option(16, help="LoRA/QLoRA alpha"),
    target_modules: Optional[str] = typer.Option(
        None, help="LoRA/QLoRA targets, comma-separated leaf names or all-linear"),
    bias: str = typer.Option("none", help="LoRA bias: none, all, lora_only"),
    block_size: int = typer.Option(64, help="QLoRA NF4 block size"),
    double_quant: bool = typer.Option(True, help="QLoRA double quantization"),
    double_quant_block_size: int = typer.Option(256, help="QLoRA double-quant block size"),
    ia3_targets: Optional[str] = typer.Option(None, help="IA3 targets, comma-separated"),
    bottleneck_size: Optional[int] = typer.Option(None, help="adapter bottleneck m (default 64)"),
    reduction_factor: Optional[float] = typer.Option(None, help="adapters: m = d // factor"),
    placement: str = typer.Option("houlsby", help="adapters: houlsby (2/layer), pfeiffer (1)"),
    adapter_bias: bool = typer.Option(True, help="adapters: biases in down/up projections"),
    num_virtual_tokens: int = typer.Option(20, help="prefix/prompt length"),
    projection: bool = typer.Option(False, help="prefix: reparameterization MLP"),
    encoder_hidden_size: Optional[int] = typer.Option(None, help="prefix MLP width (default d)"),
    num_labels: Optional[int] = typer.Option(None, help="sequence classification with K labels"),
    batch_size: int = typer.Option(4, help="batch size B"),
    seq_len: int = typer.Option(512, help="sequence length T"),
    memory_model: str = typer.Option("detailed", help="detailed or seed"),
    precision: str = typer.Option("bf16-mixed", help="fp32 or bf16-mixed"),
    attention: str = typer.Option("eager", help="eager (keeps B·H·T·T) or sdpa (fused)"),
    gradient_checkpointing: bool = typer.Option(False, help="keep only block inputs"),
    device: str = typer.Option("cuda", help="cuda or cpu (CPU dropout keeps float masks)"),
    processes: int = typer.Option(1, "--processes", help="devices training together (torchrun); memory "
                                  "is per device, --batch-size the global batch split over them"),
    fsdp: bool = typer.Option(False, "--fsdp", help="with --processes: FSDP2 shards weights, gradients "
                              "and AdamW state over the devices"),
    seeds: bool = typer.Option(False, "--source-tables", help="reproduce the source documents' tables"),
    scaling: bool = typer.Option(False, "--scaling", help="1B/7B/13B/70B scaling table"),
    output_format: str = typer.Option("table", "--format", help="table, markdown, json or csv"),
    json_out: bool = typer.Option(False, "--json", help="print JSON (= --format json)"),
    csv_out: bool = typer.Option(False, "--csv", help="print CSV (= --format csv)"),
    charts: Optional[Path] = typer.Option(None, help="folder to write params.png, memory.png"),
) -> None:
    """Estimate trainable parameters, adapter file size and training memory per method."""
    from peftlab.estimate import METHODS, Settings, estimate
    from peftlab.estimate import render

    if json_out and csv_out:
        raise PeftlabError("--json and --csv are exclusive; pass one of them")
    from peftlab.tables import check_format

    output_format = check_format("json" if json_out else "csv" if csv_out else output_format)
    machine = output_format in ("json", "csv")
    if model is None and not (seeds or scaling):
        raise PeftlabError("no model given; pass a preset or a config.json path "
                           "(see `peftlab estimate --help`), or --source-tables / --scaling")
    settings = Settings(memory_model=memory_model, batch_size=batch_size, seq_len=seq_len,
                        precision=precision, attention=attention,
                        gradient_checkpointing=gradient_checkpointing, num_labels=num_labels,
                        device=device, processes=processes, fsdp=fsdp)
    tables: dict[str, list[dict]] = {}
    payload: dict = {}
    notes: list[str] = []
    if model is not None:
        names = list(METHODS) if method == "all" else [m.strip() for m in method.split(",")]
        options = dict(r=r, alpha=alpha, target_modules=_split(target_modules), bias=bias,
                       block_size=block_size, double_quant=double_quant,
                       double_quant_block_size=double_quant_block_size,
                       ia3_targets=_split(ia3_targets), bottleneck_size=bottleneck_size,
                       reduction_factor=reduction_factor,
                       placement=placement, adapter_bias=adapter_bias,
                       num_virtual_tokens=num_virtual_tokens, projection=projection,
                       encoder_hidden_size=encoder_hidden_size)
        for name in names:
            if name not in METHODS:
                raise PeftlabError(f"unknown method {name!r}; use one of: "
                                   f"{', '.join(METHODS)}, or all")
        ests = [estimate(model, name, settings, **_method_options(METHODS[name], options))
                for name in names]
        per = (f", per device of {processes}{' sharded (FSDP2)' if fsdp else ' (data parallel)'}"
               if processes > 1 else "")
        tables[f"{ests[0].model}: parameters, adapter file, training memory (GB, "
               f"{memory_model} model{per})"] = (render.estimate_rows(ests) if machine
                                            else render.display_rows(ests))
        tables["trainable parameters by module type"] = render.breakdown_rows(ests)
        payload["estimates"] = [e.to_dict() for e in ests]
        notes += [f"{e.method['method']}: {n}" for e in ests for n in e.notes]
        if charts is not None:
            from peftlab.estimate.charts import write_charts

            notes += [f"wrote {p}" for p in write_charts(ests, charts)]
    if seeds:
        seed_tables = render.seed_rows()
        tables.update(seed_tables)
        payload["seeds"] = seed_tables
    if scaling:
        from peftlab.estimate.scaling import scaling_table

        title = (f"scaling: training memory ({settings.precision}, AdamW, B={batch_size}, "
                 f"T={seq_len}, LoRA/QLoRA r={r} on q_proj, v_proj)")
        tables[title] = payload["scaling"] = render.scaling_rows(scaling_table(settings, r))
    if output_format == "json":
        typer.echo(render.to_json(payload))
    elif output_format == "csv":
        typer.echo("\n".join(f"# {title}\n{render.to_csv(rows)}" for title, rows in tables.items()
                             if rows))
    else:
        render.print_tables(tables, notes, output_format)


def register(app: typer.Typer) -> None:
    """Add the `estimate` command to the peftlab app."""
    app.command("estimate")(estimate_command)

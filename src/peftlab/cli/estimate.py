"""`peftlab estimate`: parameters, adapter size and training memory, instantly, without weights.

    peftlab estimate llama-2-7b -m lora,qlora,full --r 16
    peftlab estimate path/to/config.json -m all --num-labels 2 --json
    peftlab estimate gpt2 -m adapters,ia3 --bottleneck-size 16 --target-modules mlp.c_proj
    peftlab estimate --source-tables    # the source documents' tables, reproduced, with notes
    peftlab estimate --scaling --csv    # 1B/7B/13B/70B: full vs LoRA vs QLoRA

The method options are generated from the registry: one `--<field>` per field of any registered
method's config, applied to every chosen method that has that field and converted to its declared
type there (`cli/options.py`). `--set method.field=value` sets one method's field alone (and
reaches a field whose name an option of this command already uses, such as adapters' `scaling`).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from peftlab.core.registry import declarations, method_names
from peftlab.errors import ConfigError, PeftlabError

HELP_MODEL = "preset name or path to a Hugging Face config.json (or its folder)"


def estimate_command(
    model: Optional[str] = typer.Argument(None, help=HELP_MODEL),
    method: str = typer.Option("lora", "--method", "-m",
                               help="registered methods, comma-separated, or 'all'"),
    settings: Optional[list[str]] = typer.Option(
        None, "--set", help="one method's option as method.field=value (repeat)"),
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
    **method_options: Any,
) -> None:
    """Estimate trainable parameters, adapter file size and training memory per method."""
    from peftlab.estimate import Settings, estimate
    from peftlab.estimate import render

    if json_out and csv_out:
        raise PeftlabError("--json and --csv are exclusive; pass one of them")
    from peftlab.tables import check_format

    output_format = check_format("json" if json_out else "csv" if csv_out else output_format)
    machine = output_format in ("json", "csv")
    if model is None and not (seeds or scaling):
        raise PeftlabError("no model given; pass a preset or a config.json path "
                           "(see `peftlab estimate --help`), or --source-tables / --scaling")
    run = Settings(memory_model=memory_model, batch_size=batch_size, seq_len=seq_len,
                   precision=precision, attention=attention,
                   gradient_checkpointing=gradient_checkpointing, num_labels=num_labels,
                   device=device, processes=processes, fsdp=fsdp)
    given = {key: value for key, value in method_options.items() if value is not None}
    tables: dict[str, list[dict]] = {}
    payload: dict = {}
    notes: list[str] = []
    if model is not None:
        names = method_names() if method == "all" else [m.strip() for m in method.split(",")]
        configs = method_configs(names, given, settings or [])
        ests = [estimate(model, config, run) for config in configs]
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

        r = given.get("r", 8)
        title = (f"scaling: training memory ({run.precision}, AdamW, B={batch_size}, "
                 f"T={seq_len}, LoRA/QLoRA r={r} on q_proj, v_proj)")
        tables[title] = payload["scaling"] = render.scaling_rows(scaling_table(run, r))
    if output_format == "json":
        typer.echo(render.to_json(payload))
    elif output_format == "csv":
        typer.echo("\n".join(f"# {title}\n{render.to_csv(rows)}" for title, rows in tables.items()
                             if rows))
    else:
        render.print_tables(tables, notes, output_format)


def method_configs(names: list[str], given: dict[str, str], settings: list[str]) -> list:
    """The config of each method in `names`: every generated option it has a field for, plus its
    own `--set method.field=value` settings (each converted to the field's declared type)."""
    from peftlab.cli.options import method_config

    known = method_names()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r}; use one of: {', '.join(known)}, or all")
    own: dict[str, list[str]] = {name: [] for name in names}
    for setting in settings:
        target, dot, rest = setting.partition(".")
        if not dot or target not in own:
            raise ConfigError(f"--set {setting!r}: write method.field=value with method one of {', '.join(names)}")
        own[target].append(rest)
    fields = {name: _fields(name) for name in names}
    unused = sorted(key for key in given if not any(key in fields[name] for name in names))
    if unused:
        owners = {key: [d.name for d in declarations() if key in _fields(d.name)] for key in unused}
        raise ConfigError("; ".join(f"--{key.replace('_', '-')} is an option of {', '.join(owners[key])}, "
                                    f"not of {', '.join(names)}" for key in unused))
    return [method_config(name, {k: v for k, v in given.items() if k in fields[name]}, own[name])
            for name in names]


def _fields(name: str) -> set[str]:
    from peftlab.core.registry import declaration

    return set(declaration(name).config_class.__dataclass_fields__) - {"modules_to_save"}


def generated_options() -> dict[str, tuple[str, Any]]:
    """Field name -> (help text, option type), for every field of a registered method's config that
    no option of the command itself uses (those are reachable with --set method.field=value).

    A field that is an int (or a choice of ints) or a float in every method that has it is parsed
    as that number, so its flag domain (`cli/flags.py`) is checked as the flag is read; any other
    arrives as text and is converted to each method's declared type (`cli/options.py`)."""
    from peftlab.core.config import describe

    fixed = set(inspect.signature(estimate_command).parameters)
    options: dict[str, list[tuple[str, Any]]] = {}
    for found in declarations():
        hints = _hints(found.config_class)
        for field in sorted(set(found.config_class.__dataclass_fields__) - {"modules_to_save"}):
            if field not in fixed:
                options.setdefault(field, []).append((found.name, hints[field]))
    generated = {}
    for field, owners in options.items():
        by_meaning: dict[str, list[str]] = {}
        for name, annotation in owners:
            by_meaning.setdefault(describe(annotation), []).append(name)
        kinds = {_number_kind(annotation) for _, annotation in owners}
        kind = kinds.pop() if len(kinds) == 1 and None not in kinds else str
        generated[field] = ("; ".join(f"{', '.join(names)}: {meaning}" for meaning, names in by_meaning.items()),
                            kind)
    return generated


def _number_kind(annotation: Any) -> type | None:
    """int or float when `annotation` (ranges, None stripped) is that number or a choice of ints, else None."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _number_kind(args[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return _number_kind(members[0]) if len(members) == 1 else None
    if origin is typing.Literal:
        return int if all(type(arg) is int for arg in args) else None
    return annotation if annotation in (int, float) else None


def _hints(annotated) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(annotated, include_extras=True)


def _command_with_method_options():
    """`estimate_command` with one keyword option per generated method option (typer reads the
    signature; the values arrive in `**method_options`)."""
    signature = inspect.signature(estimate_command)
    hints = _hints(estimate_command)  # this module's annotations are strings (PEP 563): resolve them
    fixed = [p.replace(annotation=hints[p.name]) for p in signature.parameters.values()
             if p.kind is not inspect.Parameter.VAR_KEYWORD]
    generated = [inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
                                   default=typer.Option(None, f"--{field.replace('_', '-')}", help=help_text,
                                                        rich_help_panel="Method options"))
                 for field, (help_text, kind) in sorted(generated_options().items())]

    def command(**values: Any) -> None:
        fixed_values = {p.name: values.pop(p.name) for p in fixed}
        estimate_command(**fixed_values, **values)

    command.__signature__ = signature.replace(parameters=[*fixed, *generated], return_annotation=None)
    command.__annotations__ = {p.name: p.annotation for p in (*fixed, *generated)}
    command.__doc__ = estimate_command.__doc__
    return command


def register(app: typer.Typer) -> None:
    """Add the `estimate` command to the peftlab app."""
    app.command("estimate")(_command_with_method_options())

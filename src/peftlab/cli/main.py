"""The `peftlab` command line: one typer app, with commands contributed by modules.

Each module in `COMMAND_MODULES` exposes `register(app)`, which adds its commands. Modules import
their heavy dependencies (torch, transformers) inside the command functions, so `--help` and
light commands stay fast.

Every `PeftlabError` (a problem the user can act on) ends the command with ONE line
`error: <message>` on stderr and exit code 2, never a traceback; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import importlib

import typer
from typer.core import TyperGroup

from peftlab.errors import PeftlabError

COMMAND_MODULES = ("peftlab.cli.train", "peftlab.cli.estimate", "peftlab.cli.compare", "peftlab.cli.choose")
ERROR_EXIT_CODE = 2


ARGV_KEY = "peftlab.argv"


def command_line(ctx: typer.Context) -> list[str]:
    """The words of the running command (`peftlab train --r 16 ...`), for run records."""
    return ctx.meta.get(ARGV_KEY, [])


class _PeftlabGroup(TyperGroup):
    """Records the command line, runs a subcommand, turns a `PeftlabError` into one line + exit 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        words = [info_name or "peftlab", *args]
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta[ARGV_KEY] = words
        return ctx

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except PeftlabError as error:
            message = " ".join(str(error).split())  # one line, whatever the message holds
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(ERROR_EXIT_CODE) from None


app = typer.Typer(cls=_PeftlabGroup, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  add_completion=False)


@app.callback()
def _root() -> None:
    """peftlab: parameter-efficient fine-tuning (LoRA, QLoRA, adapters, IA³, prefix, prompt, full)."""


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    app(prog_name="peftlab")

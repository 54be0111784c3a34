"""The `peftlab` command line: one typer app, with commands contributed by modules.

Each module in `COMMAND_MODULES` exposes `register(app)`, which adds its commands. Modules import
their heavy dependencies (torch, transformers) inside the command functions, so `--help` and
light commands stay fast.

Every `PeftlabError` (a problem the user can act on) and every usage error (an unknown option,
a flag value outside its domain, see `cli/flags.py`) ends the command with ONE line
`error: <message>` on stderr and exit code 2, never a traceback; anything else is a bug and
keeps its traceback. Warnings peftlab logs (a checkpoint skipped, tensors cast) are printed as
one `warning: <message>` line each.
"""

from __future__ import annotations

import importlib
import logging
import re

import typer
from typer.core import TyperGroup

from peftlab.cli.flags import declare_flag_domains
from peftlab.errors import PeftlabError

# The exceptions of the click typer uses (a vendored copy in recent typer versions).
_click_errors = importlib.import_module(typer.BadParameter.__module__)

COMMAND_MODULES = ("peftlab.cli.train", "peftlab.cli.estimate", "peftlab.cli.compare", "peftlab.cli.choose")
ERROR_EXIT_CODE = 2


ARGV_KEY = "peftlab.argv"


def command_line(ctx: typer.Context) -> list[str]:
    """The words of the running command (`peftlab train --r 16 ...`), for run records."""
    return ctx.meta.get(ARGV_KEY, [])


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _EchoWarnings(logging.Handler):
    """peftlab's logged warnings as `warning: <message>` on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"warning: {_one_line(record.getMessage())}", err=True)


# "Got unexpected extra argument (true)": a value given to a flag, as in `--tune-lr true`.
_BOOLEAN_WORD = re.compile(r"unexpected extra argument.*\((true|false|yes|no|on|off|0|1)\)", re.IGNORECASE)


class _PeftlabGroup(TyperGroup):
    """Records the command line, gives numeric flags their domains, runs a subcommand, and turns a
    `PeftlabError` or a usage error into one line + exit 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        words = [info_name or "peftlab", *args]
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta[ARGV_KEY] = words
        return ctx

    def get_command(self, ctx, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is None:
            return None
        help_option = command.get_help_option(ctx) if ctx is not None else None
        for param in [*command.params, help_option]:
            if getattr(param, "is_flag", False):
                param.metavar = ""  # a flag takes no value: its help shows none (typer would show <bool>)
        return declare_flag_domains(command)

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except PeftlabError as error:
            typer.echo(f"error: {_one_line(str(error))}", err=True)
            raise typer.Exit(ERROR_EXIT_CODE) from None
        except _click_errors.UsageError as error:
            if isinstance(error, _click_errors.NoArgsIsHelpError):
                raise
            where = error.ctx.command_path if error.ctx is not None else "peftlab"
            message = _one_line(error.format_message())
            if _BOOLEAN_WORD.search(message):
                message += "; flags take no value: write the flag alone, or its --no- form, e.g. --tune-lr / --no-tune-lr"
            typer.echo(f"error: {message} (see {where} --help)", err=True)
            raise typer.Exit(ERROR_EXIT_CODE) from None


_LOG = logging.getLogger("peftlab")
if not any(isinstance(handler, _EchoWarnings) for handler in _LOG.handlers):
    _LOG.addHandler(_EchoWarnings(logging.WARNING))

app = typer.Typer(cls=_PeftlabGroup, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  add_completion=False)


@app.callback()
def _root() -> None:
    """peftlab: parameter-efficient fine-tuning (LoRA, QLoRA, adapters, IA³, prefix, prompt, full)."""


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    app(prog_name="peftlab")

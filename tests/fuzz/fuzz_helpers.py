"""Shared by the fuzz modules: the real CLI entry point, invoked cheaply, and the outcome rules."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import typer
from hypothesis import settings
from typer.testing import CliRunner

from peftlab.cli.main import app

CASES = settings().max_examples  # per boundary: 500 in CI (see conftest.py)


class Cli:
    """`peftlab ...` through typer's CliRunner on the command built once: typer's building of the
    command from the app is ~90 % of an invocation and the same for every case."""

    def __init__(self) -> None:
        self.runner = CliRunner()
        self.command = typer.main.get_command(app)

    def __call__(self, *args):
        with mock.patch("typer.testing._get_command", lambda _: self.command):
            return self.runner.invoke(app, [str(a) for a in args])


def assert_clean_outcome(result, *, allow_success: bool = True) -> str | None:
    """Exit 0, or exit 2 with exactly one `error:` line and nothing on stdout; never a traceback.
    Returns the error line (None on success)."""
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 0 and allow_success:
        assert "error:" not in result.stderr, result.stderr
        return None
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}

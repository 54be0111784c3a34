"""The shared table renderer: no cell is ever cut, at 80 columns, when piped, or in any format.

Each command's own table is rendered at 80 columns (and narrower) and every cell must appear
whole in the output, with no truncation mark; the text formats parse back to the same cells.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from peftlab.cli.choose import recommendation_table
from peftlab.cli.main import app
from peftlab.choose import ChooseInputs, choose
from peftlab.compare.report import console_table
from peftlab.core.registry import method_names
from peftlab.estimate import Settings, estimate
from peftlab.estimate.render import display_rows
from peftlab.tables import FORMATS, TableData, _text, column_widths, format_tables, print_tables

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example-compare" / "results.json"
TRUNCATION = "…"


def _render(tables, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    print_tables(tables, console=console)
    return console.export_text()


def _assert_whole(table: TableData, output: str) -> None:
    """Every cell appears unbroken: numbers as one token, prose word by word."""
    assert TRUNCATION not in output
    flat = " ".join(output.split())
    for row in table.rows:
        for cell in row:
            text = _text(cell)
            if re.fullmatch(r"[-\d,.%]+", text):
                assert re.search(rf"(?<![\d,.]){re.escape(text)}(?![\d,.])", output), f"{text!r} is cut"
            else:
                for word in text.split():
                    assert word in flat, f"{word!r} of {text!r} is cut"


def _estimate_table() -> TableData:
    ests = [estimate("llama-2-70b", name, Settings()) for name in method_names()]
    return TableData.from_records("llama-2-70b", display_rows(ests))


def _choose_table() -> TableData:
    return recommendation_table(choose(ChooseInputs(task="classification", memory=24.0, model="llama-2-7b")))


def _compare_table() -> TableData:
    return TableData.from_rich(console_table(json.loads(EXAMPLE.read_text())))


@pytest.mark.parametrize("make", [_estimate_table, _choose_table, _compare_table], ids=["estimate", "choose", "compare"])
@pytest.mark.parametrize("width", [40, 80, 200])
def test_every_cell_whole_at_any_width(make, width):
    table = make()
    output = _render([table], width)
    assert max(len(line) for line in output.splitlines()) <= width
    _assert_whole(table, output)


def test_layout_is_chosen_by_width():
    table = _estimate_table()
    assert column_widths(table, 200) is not None                        # one table
    assert "(1/2)" in _render([table], 80) and "(2/2)" in _render([table], 80)  # column groups
    narrow = _render([table], 24)                                        # one block per row
    assert "┃" not in narrow and "trainable" in narrow


def test_cli_estimate_at_80_columns_piped_shows_every_number_whole():
    result = CliRunner().invoke(app, ["estimate", "llama-2-70b", "--method", "all"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    _assert_whole(_estimate_table(), result.output)


def test_cli_choose_at_80_columns_shows_every_cell_whole():
    result = CliRunner().invoke(app, ["choose", "--task", "classification", "--memory", "24", "--model",
                                      "llama-2-7b"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    _assert_whole(_choose_table(), result.output)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "table"])
def test_text_formats_carry_the_same_cells(fmt):
    table = _compare_table()
    text = format_tables([table], fmt)
    if fmt == "json":
        assert json.loads(text)[table.title] == table.records()
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(text.split("\n", 1)[1])))
        assert rows == [list(table.columns), *([str(c) for c in row] for row in table.rows)]
    else:
        lines = [line for line in text.splitlines() if line.startswith("| ")]
        assert len(lines) == len(table.rows) + 2 and all(line.count(" | ") == len(table.columns) - 1 for line in lines)


@pytest.mark.parametrize("command", [["estimate", "llama-2-7b", "-m", "lora"],
                                     ["choose", "--task", "classification"]])
def test_cli_format_option(command):
    runner = CliRunner()
    for fmt in ("markdown", "csv", "json"):
        result = runner.invoke(app, [*command, "--format", fmt])
        assert result.exit_code == 0, result.output
        if fmt == "json":
            json.loads(result.output)
        elif fmt == "markdown":
            assert "| --- |" in result.output.replace("---: |", "--- |")
    bad = runner.invoke(app, [*command, "--format", "yaml"])
    assert bad.exit_code == 2 and "--format 'yaml'" in bad.output

"""One way to print a table, for every command: readable at 80 columns and when piped, never cut.

    table = TableData("lora vs full", ("method", "trainable", "total GB"), [("lora", 4_194_304, "1.2")])
    print_tables([table], "table")          # rich table, or one block per row when it cannot fit
    text = format_tables([table], "markdown" | "csv" | "json")

`--format` of `peftlab estimate`, `compare` and `choose` picks one of `FORMATS`:

    table      the rich table when its narrowest layout fits the width (prose wraps at spaces,
               numbers never break); otherwise its columns in groups, each table repeating the
               first column that names the rows; when even two columns do not fit, each row as
               a block of "column  value" lines ("stacked"). Nothing is ever cut to "…".
    markdown   GitHub pipe tables under "### title", notes as a list
    csv        one CSV block per table, preceded by "# title"
    json       {title: [{column: value}, ...]}

The width is the console's: the terminal's, `COLUMNS` when set, else 80 (when piped). Integers
print with thousands separators in table and markdown, plain in csv and json. Torch-free.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from peftlab.errors import ConfigError

FORMATS = ("table", "markdown", "json", "csv")
# A cell that reads as a number (optionally signed, with separators, a unit or a suffix): right-aligned.
_NUMERIC = re.compile(r"^[-+−]?[\d,.]+(e[-+]?\d+)?\s*(%|x|×|[KMB]|[KMGT]i?B|ms|s|GB|MB|KB|B)?$")


@dataclass(frozen=True)
class TableData:
    """A titled table: `columns` names and `rows` of cells (str, int, float or None).

    The first `key_columns` columns name the rows: a table too wide for the console repeats them
    beside each group of the other columns."""

    title: str
    columns: tuple[str, ...]
    rows: Sequence[Sequence[Any]] = ()
    caption: str | None = None
    key_columns: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        bad = [row for row in self.rows if len(row) != len(self.columns)]
        if bad:
            raise ValueError(f"table {self.title!r}: a row has {len(bad[0])} cells for {len(self.columns)} columns")

    @classmethod
    def from_records(cls, title: str, records: Sequence[dict[str, Any]], **extra: Any) -> "TableData":
        """Rows from dicts sharing keys (the first record's keys name the columns)."""
        columns = tuple(records[0]) if records else ()
        return cls(title, columns, [tuple(r.get(c) for c in columns) for r in records], **extra)

    @classmethod
    def from_rich(cls, table: Table) -> "TableData":
        """The cells of a rich `Table` built elsewhere, markup removed."""
        columns = tuple(_plain(c.header) for c in table.columns)
        cells = [[_plain(cell) for cell in column.cells] for column in table.columns]
        return cls(_plain(table.title or ""), columns, list(zip(*cells)),
                   caption=_plain(table.caption) if table.caption else None)

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


def _plain(value: Any) -> str:
    if isinstance(value, Text):
        return value.plain
    return Text.from_markup(value).plain if isinstance(value, str) else str(value)


def _text(value: Any) -> str:
    """A cell as people read it: '–' for missing, ints with thousands separators."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) >= 1e4 else f"{value:.6g}"
    return str(value)


def _numeric_column(table: TableData, index: int) -> bool:
    values = [row[index] for row in table.rows if row[index] not in (None, "", "–", "—")]
    return bool(values) and all(isinstance(v, (int, float)) or _NUMERIC.match(str(v).strip()) for v in values)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


# --- table: the width decides the layout ---------------------------------------------------------------
_CELL_PADDING, _BORDER = 2, 1  # rich's default: one space each side of a cell, one rule between cells


def column_widths(table: TableData, width: int) -> list[int] | None:
    """Widths that show every cell of `table` whole within `width` characters, or None.

    A number never breaks, so a numeric column needs its widest cell; prose may wrap at spaces,
    so it needs its longest word and gets spare room up to its widest cell, narrowest first.
    """
    rows = [[_text(v) for v in row] for row in table.rows]
    numeric = [_numeric_column(table, i) for i in range(len(table.columns))]
    widest = [max(cell_len(t) for t in [name, *(r[i] for r in rows)]) for i, name in enumerate(table.columns)]
    least = [widest[i] if numeric[i] else max(cell_len(w) for t in [name, *(r[i] for r in rows)] for w in t.split() or [""])
             for i, name in enumerate(table.columns)]
    room = width - len(table.columns) * (_CELL_PADDING + _BORDER) - _BORDER
    if sum(least) > room:
        return None
    widths, spare = list(least), room - sum(least)
    for i in sorted(range(len(widths)), key=lambda i: widest[i] - least[i]):
        extra = min(widest[i] - widths[i], spare // max(1, sum(1 for j in range(len(widths)) if widths[j] < widest[j])))
        widths[i] += extra
        spare -= extra
    for i in range(len(widths)):  # what is left, in column order
        extra = min(widest[i] - widths[i], spare)
        widths[i] += extra
        spare -= extra
    return widths


def rich_table(table: TableData, widths: Sequence[int]) -> Table:
    """The wide layout at `widths` (`column_widths`): numbers whole, prose wrapped at spaces."""
    rendered = Table(title=table.title or None, title_justify="left", caption=table.caption, caption_justify="left")
    for index, (name, size) in enumerate(zip(table.columns, widths)):
        numeric = _numeric_column(table, index)
        rendered.add_column(name, justify="right" if numeric else "left", no_wrap=numeric, overflow="fold",
                            width=size)
    for row in table.rows:
        rendered.add_row(*(Text(_text(v)) for v in row))
    return rendered


def stacked(table: TableData) -> Table:
    """The narrow layout: one block per row, "column  value" lines, the key cells in bold first."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    for number, row in enumerate(table.rows):
        if number:
            grid.add_row("", "")
        for name, value in zip(table.columns[:table.key_columns], row[:table.key_columns]):
            grid.add_row(Text(name), Text(_text(value), style="bold"))
        for name, value in zip(table.columns[table.key_columns:], row[table.key_columns:]):
            grid.add_row(Text(name), Text(_text(value)))
    return grid


def column_groups(table: TableData, width: int) -> list[tuple[int, ...]] | None:
    """The fewest runs of consecutive columns, each shown beside the key columns, whose tables fit
    `width`; None when the key columns and any one other do not fit together."""
    keys = tuple(range(min(table.key_columns, len(table.columns) - 1)))
    groups: list[list[int]] = [list(keys)]
    for index in range(len(keys), len(table.columns)):
        if column_widths(_columns(table, (*groups[-1], index)), width) is None:
            if len(groups[-1]) == len(keys) or column_widths(_columns(table, (*keys, index)), width) is None:
                return None
            groups.append(list(keys))
        groups[-1].append(index)
    return [tuple(group) for group in groups]


def _columns(table: TableData, indices: Sequence[int], title: str | None = None) -> TableData:
    return TableData(table.title if title is None else title, tuple(table.columns[i] for i in indices),
                     [tuple(row[i] for i in indices) for row in table.rows], caption=table.caption)


def print_table(table: TableData, console: Console) -> None:
    """The whole table if it fits; else its columns in groups beside the key columns; else stacked."""
    groups = column_groups(table, console.width) if len(table.columns) > 1 else [(0,)]
    if groups is None:
        if table.title:
            console.print(Text(table.title, style="italic"))
        console.print(stacked(table))
        if table.caption:
            console.print(Text(table.caption, style="dim"))
        return
    for number, group in enumerate(groups, 1):
        title = table.title if number == 1 else f"({number}/{len(groups)})"
        part = _columns(table, group, title if len(groups) == 1 or number > 1 else f"{title} (1/{len(groups)})")
        console.print(rich_table(part, column_widths(part, console.width)))


# --- text formats -------------------------------------------------------------------------------------------
def _markdown_cell(value: Any) -> str:
    return _text(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: TableData) -> str:
    lines = [f"### {table.title}", ""] if table.title else []
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "|".join(" ---: " if _numeric_column(table, i) else " --- " for i in range(len(table.columns)))
                 + "|")
    lines += ["| " + " | ".join(_markdown_cell(v) for v in row) + " |" for row in table.rows]
    if table.caption:
        lines += ["", table.caption]
    return "\n".join(lines)


def csv_table(table: TableData) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(["" if v is None else v for v in row] for row in table.rows)
    return out.getvalue()


def format_tables(tables: Iterable[TableData], fmt: str, notes: Sequence[str] = ()) -> str:
    """`tables` (and `notes`) as markdown, csv or json text."""
    tables = [t for t in tables if t.rows]
    if fmt == "json":
        payload: dict[str, Any] = {t.title or f"table {i + 1}": t.records() for i, t in enumerate(tables)}
        if notes:
            payload["notes"] = list(notes)
        return json.dumps(payload, indent=2, default=str)
    if fmt == "csv":
        return "\n".join((f"# {t.title}\n" if t.title else "") + csv_table(t) for t in tables).rstrip("\n")
    if fmt == "markdown":
        blocks = [markdown_table(t) for t in tables]
        if notes:
            blocks.append("\n".join(f"- {note}" for note in notes))
        return "\n\n".join(blocks)
    raise ConfigError(f"format {fmt!r} is not text: use one of markdown, csv, json")


def print_tables(tables: Iterable[TableData], fmt: str = "table", notes: Sequence[str] = (),
                 console: Console | None = None) -> None:
    """Print `tables` then `notes` in `fmt` (see the module docstring); text formats go out verbatim."""
    console = console or Console()
    check_format(fmt)
    if fmt != "table":
        console.out(format_tables(tables, fmt, notes), highlight=False)  # verbatim: no markup, wrap or emoji
        return
    for table in tables:
        if table.rows:
            print_table(table, console)
    for note in notes:
        console.print(Text(f"note: {note}"))

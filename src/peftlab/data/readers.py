"""Read tabular training data (CSV, TSV, JSONL) into lists of string-keyed rows.

The format is sniffed from the extension only: `.csv` (RFC-4180 quoting, as E2E needs), `.tsv`
(no quoting at all, because SST-2 sentences contain bare `"` characters that a quoting reader
would swallow) and `.jsonl` / `.json` (one object per line). Every reader returns
`list[dict[str, str]]` with the header (or JSON keys) as column names, so the task layer never
cares where rows came from.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from peftlab.errors import PeftlabError

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


class DataError(PeftlabError, ValueError):
    """A data file is missing, unreadable, or lacks a column the task needs."""


def _read_delimited(path: Path, delimiter: str, quoting: int) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: the file is empty (a header line is required)")
        rows = []
        for line_number, values in enumerate(reader, start=2):
            if not values:
                continue
            if len(values) != len(header):
                raise DataError(
                    f"{path}:{line_number}: {len(values)} fields, but the header has "
                    f"{len(header)} ({', '.join(header)})"
                )
            rows.append(dict(zip(header, values)))
    return rows


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line_number}: expected a JSON object per line")
            # Labels may be JSON numbers; the task layer maps every label through str().
            rows.append({key: value if isinstance(value, str) else json.dumps(value)
                         for key, value in record.items()})
    return rows


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """All rows of a CSV / TSV / JSONL file as dicts of column name -> string value."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_delimited(path, ",", csv.QUOTE_MINIMAL)
    if suffix == ".tsv":
        return _read_delimited(path, "\t", csv.QUOTE_NONE)
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    raise DataError(f"{path}: unknown data format {suffix!r}; use one of {', '.join(SUFFIXES)}")


def find_split_file(folder: Path, split: str) -> Path:
    """The one file in `folder` whose stem starts with `split` ("train" / "dev") and has a known
    suffix; `dev` also accepts `validation`/`valid`/`val` because public datasets use all four."""
    stems = {"train": ("train",), "dev": ("dev", "validation", "valid", "val")}[split]
    matches = sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in SUFFIXES and p.stem.lower().startswith(stems)
    )
    if len(matches) != 1:
        found = ", ".join(p.name for p in sorted(folder.iterdir())) or "nothing"
        what = "no" if not matches else "more than one"
        raise DataError(
            f"{folder}: {what} {split} file ({'/'.join(stems)}*{{{','.join(SUFFIXES)}}}) "
            f"found among: {found}; pass train_file= / dev_file= explicitly"
        )
    return matches[0]

"""Read training data through Hugging Face `datasets`: files, `save_to_disk` folders, the HF cache.

    read_table("train.csv")                 a datasets.Dataset (CSV, TSV, JSONL / JSON, Parquet, Arrow)
    read_splits("my-dataset/")              {"train": Dataset, "validation": ...} of a save_to_disk folder
    read_cached("user/name[:config]")       the splits of a data set in the local Hugging Face cache
    to_rows(table, columns)                 list[dict[str, str]]: what the task layer reads

The format is the file's extension: `.csv` (RFC-4180 quoting, as E2E needs), `.tsv` (no
quoting at all, because SST-2 sentences contain bare `"` characters that a quoting reader would
swallow), `.jsonl` / `.json`, `.parquet`, `.arrow`. Delimited files are read with every column as
text (no number or missing-value guessing, so "0", "" and "NA" stay as written). Each read builds
in a temporary cache and keeps the table in memory: nothing is left in ~/.cache/huggingface.
`datasets` costs ~50-100 ms more per file than the `csv` module did on the embedded subsets
(BENCHMARKS.md, "Data through datasets"), which a training run never notices.

Nothing is downloaded: a name must already be in the local Hugging Face hub cache
($HF_HOME/hub, from `hf download NAME --repo-type dataset` on a machine with internet) or in the
`datasets` cache of an earlier `load_dataset(NAME)`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from peftlab.errors import PeftlabError

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".arrow")
SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation", "valid", "val")}
_DELIMITED = {".csv": (",", csv.QUOTE_MINIMAL), ".tsv": ("\t", csv.QUOTE_NONE)}
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".arrow": "arrow"}


class DataError(PeftlabError, ValueError):
    """A data file is missing, unreadable, or lacks a column the task needs."""


class NotCachedError(DataError):
    """A data set name that is in neither local Hugging Face cache."""


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[Any]:
    """`datasets`, offline and without its progress bars and info logs, restored afterwards."""
    import datasets

    bars = datasets.is_progress_bar_enabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        yield datasets
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


ENCODING = "utf-8-sig"  # UTF-8, with the byte-order mark some spreadsheet exports put first dropped


def _header(path: Path, delimiter: str, quoting: int) -> list[str]:
    try:
        with path.open(newline="", encoding=ENCODING) as handle:
            header = next(csv.reader(handle, delimiter=delimiter, quoting=quoting), None)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: is not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                        f"{error.start}); save it as UTF-8") from None
    if not header:
        raise DataError(f"{path}: the file is empty (a header line is required)")
    return header


def _error(path: Path, error: Exception) -> DataError:
    """One line naming the file and the parser's reason (`datasets` wraps it in its own error)."""
    cause = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    reason = " ".join(str(cause).split())[:300] or type(cause).__name__
    return DataError(f"{path}: cannot be read as {path.suffix.lstrip('.').upper()} ({reason}); fix the file or "
                     f"convert it to one of {', '.join(SUFFIXES)}")


def read_table(path: str | Path):
    """The rows of one data file as an in-memory `datasets.Dataset`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unknown data format {suffix!r}; use one of {', '.join(SUFFIXES)}")
    with _quiet_datasets() as datasets, tempfile.TemporaryDirectory(prefix="peftlab-data-") as cache:
        options: dict[str, Any] = {}
        if suffix in _DELIMITED:
            delimiter, quoting = _DELIMITED[suffix]
            columns = _header(path, delimiter, quoting)
            options = dict(delimiter=delimiter, quoting=quoting, keep_default_na=False, na_filter=False, encoding=ENCODING,
                           features=datasets.Features({c: datasets.Value("string") for c in columns}))
        builder = "csv" if suffix in _DELIMITED else _BUILDERS[suffix]
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                         keep_in_memory=True, **options)
        except Exception as error:  # pandas / pyarrow / datasets each raise their own kinds
            raise _error(path, error) from None


def is_saved_dataset(folder: Path) -> bool:
    """Whether `folder` was written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def read_splits(folder: str | Path) -> dict[str, Any]:
    """The splits of a `save_to_disk` folder (a single Dataset is the "train" split)."""
    folder = Path(folder)
    with _quiet_datasets() as datasets:
        try:
            loaded = datasets.load_from_disk(str(folder), keep_in_memory=True)
        except Exception as error:
            raise DataError(f"{folder}: not a readable save_to_disk folder ({' '.join(str(error).split())[:300]})") \
                from None
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def read_cached(name: str) -> dict[str, Any]:
    """The splits of data set `name` ("user/name", optionally ":config") from the local HF cache."""
    repo, _, config = name.partition(":")
    with _quiet_datasets() as datasets:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = snapshot_download(repo, repo_type="dataset", local_files_only=True)
        except (LocalEntryNotFoundError, ValueError, OSError):
            folder = None
        try:
            if folder is not None:  # the hub cache holds the repository's data files
                return dict(datasets.load_dataset(folder, data_dir=config or None, keep_in_memory=True))
            return dict(datasets.load_dataset(repo, config or None, keep_in_memory=True))  # the datasets cache
        except (ConnectionError, FileNotFoundError, ValueError) as error:
            if folder is not None:
                raise DataError(f"data set {name!r} is in the Hugging Face cache ({folder}) but cannot be read "
                                f"({' '.join(str(error).split())[:200]})") from None
    raise NotCachedError(f"data set {name!r} is not in the local Hugging Face cache and nothing is downloaded here: "
                         f"run `hf download {repo} --repo-type dataset` where there is internet and copy "
                         "~/.cache/huggingface over")


def find_split(names: Sequence[str], split: str) -> str | None:
    """The split of `names` playing `split` ("train" / "dev"; dev also answers to validation/valid/val)."""
    return next((n for wanted in SPLIT_NAMES[split] for n in names if n.lower() == wanted), None)


def _text(value: Any) -> str:
    # Labels may be numbers (JSON, Parquet, ClassLabel ids); the task layer maps labels through str().
    return value if isinstance(value, str) else json.dumps(value)


def to_rows(table, columns: Sequence[str] | None = None) -> list[dict[str, str]]:
    """`table`'s rows (only `columns`, if given) as dicts of column name -> text."""
    if columns is not None:
        table = table.select_columns(list(dict.fromkeys(columns)))
    return [{key: _text(value) for key, value in row.items()} for row in table.to_list()]


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """All rows of a data file as dicts of column name -> text."""
    return to_rows(read_table(path))


def find_split_file(folder: Path, split: str) -> Path:
    """The one file in `folder` whose stem starts with `split` ("train" / "dev") and has a known
    suffix; `dev` also accepts `validation`/`valid`/`val` because public datasets use all four."""
    stems = SPLIT_NAMES[split]
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

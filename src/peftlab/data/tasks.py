"""Tasks: the examples a training run learns from and is scored on.

A `Task` is a frozen bundle of a training split, a dev split and what is needed to score it.
Two kinds exist:

- ``"classification"``: `ClassificationExample(text, label, text_pair)`; single sentences or
  sentence pairs. Labels in the file may be ints or strings; they become ids into
  `Task.label_names`, a stable sorted list (numeric order when every label is an integer, so
  SST-2's "0"/"1" keep their ids).
- ``"causal-lm"``: `CausalLMExample(prompt, target)`; the loss covers target tokens only (see
  `CausalLMCollator`). Several rows may share one prompt (E2E has ~8 references per meaning
  representation), so `Task.dev_references` groups the dev targets by prompt for BLEU / ROUGE-L.

The dev split is for final scores only: hyper-parameter sweeps carve their validation set out of
the training data with `Task.split_validation`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Union

from peftlab.data.readers import (
    SUFFIXES, DataError, NotCachedError, find_split, find_split_file, is_saved_dataset, read_cached, read_splits, read_table, to_rows,
)

CLASSIFICATION = "classification"
CAUSAL_LM = "causal-lm"
KINDS = (CLASSIFICATION, CAUSAL_LM)

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"


@dataclass(frozen=True)
class ClassificationExample:
    text: str
    label: int  # index into Task.label_names
    text_pair: str | None = None


@dataclass(frozen=True)
class CausalLMExample:
    prompt: str
    target: str


@dataclass(frozen=True)
class ReferenceGroup:
    """One prompt with every reference target it has (the unit BLEU / ROUGE-L score)."""

    prompt: str
    references: tuple[str, ...]


Example = Union[ClassificationExample, CausalLMExample]


def group_references(examples: tuple[CausalLMExample, ...] | list[CausalLMExample]) -> tuple[ReferenceGroup, ...]:
    """Group causal-LM examples by prompt, in first-seen order, keeping references in row order."""
    groups: dict[str, list[str]] = {}
    for example in examples:
        groups.setdefault(example.prompt, []).append(example.target)
    return tuple(ReferenceGroup(prompt, tuple(refs)) for prompt, refs in groups.items())


@dataclass(frozen=True)
class Task:
    """A named training split and dev split of one kind.

    `train` and `dev` are tuples of examples in file order. `label_names[i]` is the label string
    of class id `i` (classification only). `dev_references` is `group_references(dev)` for
    causal-LM tasks and empty otherwise. `dev_origin` says where the dev split came from when it
    was not the source's own (a seeded part of the training rows), else "".
    """

    name: str
    kind: str
    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    label_names: tuple[str, ...] = ()
    dev_references: tuple[ReferenceGroup, ...] = ()
    dev_origin: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"unknown task kind {self.kind!r}; use one of {', '.join(KINDS)}")

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def dev_units_of(self, examples: tuple[Example, ...]) -> list:
        """The units a split is drawn in: rows, or distinct prompts for causal-LM (in order)."""
        keys = [ex.prompt if self.kind == CAUSAL_LM else i for i, ex in enumerate(examples)]
        return list(dict.fromkeys(keys))

    def split_validation(self, size: float | int, seed: int = 0) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
        """Carve a validation set out of the *training* data: returns `(train_rest, validation)`.

        `size` is a fraction in (0, 1) or a count >= 1. Classification splits rows; causal-LM
        splits whole prompt groups so no prompt has references on both sides (that would leak
        the answer into validation). The choice is uniform with `random.Random(seed)`; both
        parts keep the original order.
        """
        # One key per row; rows sharing a key (a prompt, for causal-LM) move together.
        keys = [ex.prompt if self.kind == CAUSAL_LM else i for i, ex in enumerate(self.train)]
        units = self.dev_units_of(self.train)
        if isinstance(size, float) and 0.0 < size < 1.0:
            count = max(1, round(size * len(units)))
        elif isinstance(size, int) and not isinstance(size, bool) and 1 <= size < len(units):
            count = size
        else:
            raise DataError(
                f"validation size {size!r} must be a fraction in (0, 1) or an int in "
                f"[1, {len(units) - 1}] ({len(units)} {'prompts' if self.kind == CAUSAL_LM else 'rows'})"
            )
        chosen = {units[i] for i in random.Random(seed).sample(range(len(units)), count)}
        rest = tuple(ex for key, ex in zip(keys, self.train) if key not in chosen)
        validation = tuple(ex for key, ex in zip(keys, self.train) if key in chosen)
        return rest, validation


DEV_FRACTION = 0.1  # of the training rows, as the dev split of a source that has none


def check_dev_fraction(fraction: float) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise DataError(f"dev fraction {fraction!r} must be in [0, 1): the part of the training rows held out "
                        "as the dev split when the data has none (0: no dev split)")


def _carve_dev(task: Task, fraction: float, seed: int, where: str) -> Task:
    """`task` (no dev rows) with a seeded `fraction` of its training units as the dev split."""
    unit = "prompts" if task.kind == CAUSAL_LM else "rows"
    total = len(task.dev_units_of(task.train))
    if total - max(1, round(fraction * total)) < 1:
        raise DataError(f"{where}: {total} training {unit} cannot give a dev split of fraction {fraction:g}; "
                        "add a dev file (a folder with train* and dev* files) or change --dev-fraction")
    train, dev = task.split_validation(float(fraction), seed)
    origin = (f"{len(task.dev_units_of(dev))} of {total} training {unit} of {where} held out as the dev split "
              f"(--dev-fraction {fraction:g}, seed {seed}): the data has no dev split")
    references = group_references(dev) if task.kind == CAUSAL_LM else ()
    return replace(task, train=train, dev=dev, dev_references=references, dev_origin=origin)


def _limited(task: Task, max_train: int | None, max_dev: int | None) -> Task:
    """`task` with the first `max_train` training rows and the first `max_dev` dev rows (causal-LM:
    prompts with all their references)."""
    train = task.train[:max_train] if max_train is not None else task.train
    dev = task.dev
    if max_dev is not None:
        if task.kind == CAUSAL_LM:
            keep = {g.prompt for g in group_references(dev)[:max_dev]}
            dev = tuple(ex for ex in dev if ex.prompt in keep)
        else:
            dev = dev[:max_dev]
    references = group_references(dev) if task.kind == CAUSAL_LM else ()
    return replace(task, train=train, dev=dev, dev_references=references)


# Column names tried in order when the caller does not name one.
DEFAULT_COLUMNS = {
    "text": ("sentence", "text", "sentence1"),
    "text_pair": ("sentence2", "text_pair"),
    "label": ("label", "labels"),
    "prompt": ("prompt", "mr", "input"),
    "target": ("target", "ref", "output", "completion"),
}

EMBEDDED = {
    "sst2": (CLASSIFICATION, "sst2_train.tsv", "sst2_dev.tsv"),
    "e2e": (CAUSAL_LM, "e2e_train.csv", "e2e_dev.csv"),
}


def _column(columns: Sequence[str], role: str, given: str | None, where: str, required: bool = True) -> str | None:
    """The column playing `role`: the one named by the caller, else the first default present."""
    columns = list(columns)
    if given is not None:
        if given in columns:
            return given
        raise DataError(f"{where}: no column {given!r} for the {role} (columns: {', '.join(columns)})")
    for candidate in DEFAULT_COLUMNS[role]:
        if candidate in columns:
            return candidate
    if not required:
        return None
    raise DataError(
        f"{where}: no {role} column (tried {', '.join(DEFAULT_COLUMNS[role])}; columns: "
        f"{', '.join(columns)}); pass {role}_col="
    )


def _infer_kind(columns: Sequence[str], explicit_causal: bool, explicit_classification: bool) -> str:
    if explicit_causal:
        return CAUSAL_LM
    if explicit_classification:
        return CLASSIFICATION
    columns = set(columns)
    if columns & set(DEFAULT_COLUMNS["label"]):
        return CLASSIFICATION
    if columns & set(DEFAULT_COLUMNS["prompt"]) and columns & set(DEFAULT_COLUMNS["target"]):
        return CAUSAL_LM
    raise DataError(f"cannot tell the task kind from the columns ({', '.join(sorted(columns))}); pass kind=")


def _sorted_labels(values: set[str]) -> tuple[str, ...]:
    if all(re.fullmatch(r"-?\d+", v) for v in values):
        return tuple(sorted(values, key=int))
    return tuple(sorted(values))


def _roles(source: "_Source", roles: dict[str, str | None], optional: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Role -> column of the training table (checked in the dev table too)."""
    chosen = {role: _column(source.train.column_names, role, given, source.train_where, role not in optional)
              for role, given in roles.items()}
    if source.dev is not None and source.dev.num_rows:
        for role, column in chosen.items():
            if column is not None:
                _column(source.dev.column_names, role, column, source.dev_where)
    return chosen


def _classification(source: "_Source", text_col, text_pair_col, label_col):
    columns = _roles(source, {"text": text_col, "text_pair": text_pair_col, "label": label_col}, ("text_pair",))
    used = [c for c in columns.values() if c is not None]
    train_rows = to_rows(source.train, used)
    dev_rows = to_rows(source.dev, used) if source.dev is not None else []
    text, pair, label = columns["text"], columns["text_pair"], columns["label"]
    label_names = _sorted_labels({row[label].strip() for row in train_rows})
    if len(label_names) < 2:  # one class is no classification (transformers would build a regression head)
        raise DataError(f"{source.train_where}: column {label!r} holds one label only ({', '.join(map(repr, label_names))}) "
                        "in the training rows used: a classifier needs at least two; check --label-col or the data")
    ids = {name: i for i, name in enumerate(label_names)}

    def examples(rows, where):
        out = []
        for row in rows:
            name = row[label].strip()
            if name not in ids:
                raise DataError(f"{where}: label {name!r} does not occur in the training data ({', '.join(label_names)})")
            out.append(ClassificationExample(row[text], ids[name], row[pair] if pair else None))
        return tuple(out)

    return examples(train_rows, source.train_where), examples(dev_rows, source.dev_where), label_names


def _causal(source: "_Source", prompt_col, target_col):
    columns = _roles(source, {"prompt": prompt_col, "target": target_col})
    prompt, target = columns["prompt"], columns["target"]

    def examples(table):
        return tuple(CausalLMExample(row[prompt], row[target]) for row in to_rows(table, [prompt, target]))

    return examples(source.train), examples(source.dev) if source.dev is not None else ()


@dataclass(frozen=True)
class _Source:
    """Where a task's rows come from: tables (`datasets.Dataset`) and names for messages."""

    name: str
    kind: str | None
    train: Any
    dev: Any
    train_where: str
    dev_where: str


def _from_files(name: str, kind: str | None, train: Path, dev: Path | None) -> _Source:
    return _Source(name, kind, read_table(train), read_table(dev) if dev else None, str(train), str(dev))


def _from_splits(name: str, splits: dict[str, Any], train_split: str | None, dev_split: str | None) -> _Source:
    """A source from named splits (a save_to_disk folder, a cached data set); `train_split` /
    `dev_split` override the usual names (train; dev, validation, valid, val)."""
    names = list(splits)
    train = train_split or find_split(names, "train")
    dev = dev_split or find_split(names, "dev")
    for wanted in (train, dev_split):
        if wanted is not None and wanted not in splits:
            raise DataError(f"{name}: no split {wanted!r} (splits: {', '.join(names)})")
    if train is None:
        raise DataError(f"{name}: no train split (splits: {', '.join(names)}); pass train_file=<split name>")
    return _Source(name, None, splits[train], splits[dev] if dev else None, f"{name}[{train}]", f"{name}[{dev}]")


# A data set name as the Hugging Face hub writes it: "name" or "user/name", optionally ":config".
_HUB_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?(:[\w.-]+)?")


def _resolve(source: str, train_file, dev_file) -> _Source:
    if source in EMBEDDED and not Path(source).exists():
        kind, train_name, dev_name = EMBEDDED[source]
        return _from_files(source, kind, EMBEDDED_DIR / train_name, EMBEDDED_DIR / dev_name)
    path = Path(source)
    if path.is_dir() and is_saved_dataset(path):
        return _from_splits(path.name, read_splits(path), train_file, dev_file)
    if path.is_dir():
        # Explicit file names are relative to the folder (an absolute path stays as it is).
        train = path / train_file if train_file else find_split_file(path, "train")
        dev = path / dev_file if dev_file else find_split_file(path, "dev")
        return _from_files(path.name, None, train, dev)
    if path.is_file():
        return _from_files(path.stem, None, path, Path(dev_file) if dev_file else None)
    others = (f"an embedded name ({', '.join(EMBEDDED)}), or a data file or folder that exists "
              f"({', '.join(SUFFIXES)}, or a save_to_disk folder)")
    if _HUB_NAME.fullmatch(source) and path.suffix.lower() not in SUFFIXES:
        try:
            return _from_splits(source, read_cached(source), train_file, dev_file)
        except NotCachedError as error:
            raise DataError(f"{error}; or use {others}") from None
    raise DataError(f"no data set {source!r}: use {others}, or a data set name in the local Hugging Face cache")


def load_task(
    source: str,
    *,
    kind: str | None = None,
    text_col: str | None = None,
    text_pair_col: str | None = None,
    label_col: str | None = None,
    prompt_col: str | None = None,
    target_col: str | None = None,
    train_file: str | None = None,
    dev_file: str | None = None,
    max_train: int | None = None,
    max_dev: int | None = None,
    dev_fraction: float = DEV_FRACTION,
    dev_seed: int = 0,
) -> Task:
    """Load an embedded task ("sst2", "e2e") or one from a file, a folder or the HF cache.

    `source` may be a data file (CSV, TSV, JSONL, Parquet, Arrow), a folder with one `train*` and
    one `dev*` (or `validation*`) file, a `save_to_disk` folder, or a data set name in the local
    Hugging Face cache ("user/name", "name:config"). `train_file=` / `dev_file=` name the files of
    a folder, or the splits of a saved or cached data set. A single file becomes the training split
    and the dev split is empty unless `dev_file=` is given. Columns default to sentence/text
    (+ sentence2 for pairs) and label, or prompt/mr and target/ref; the kind is inferred from the
    columns when not given. A source without dev rows (a single file, a folder or data set with
    only a training split) gets `dev_fraction` of its training rows (whole prompt groups for
    causal-LM) as its dev split, chosen with `random.Random(dev_seed)` before any other limit and
    stated in `Task.dev_origin`; `dev_fraction=0` leaves the dev split empty. `max_train` keeps the
    first rows of the training split; `max_dev` keeps the first dev rows (classification) or the
    first distinct prompts with all their references (causal-LM).
    """
    check_dev_fraction(dev_fraction)
    source_data = _resolve(source, train_file, dev_file)
    if not source_data.train.num_rows:
        raise DataError(f"{source_data.train_where}: no training rows")
    carve = (source_data.dev is None or not source_data.dev.num_rows) and dev_fraction > 0
    explicit_causal = prompt_col is not None or target_col is not None
    explicit_cls = text_col is not None or label_col is not None or text_pair_col is not None
    kind = kind or source_data.kind or _infer_kind(source_data.train.column_names, explicit_causal, explicit_cls)
    if kind not in KINDS:
        raise DataError(f"unknown task kind {kind!r}; use one of {', '.join(KINDS)}")
    if max_train is not None and not carve:  # a carved dev split is drawn from all the training rows
        source_data = replace(source_data, train=source_data.train.select(range(min(max_train, source_data.train.num_rows))))

    if kind == CLASSIFICATION:
        if max_dev is not None and source_data.dev is not None:
            source_data = replace(source_data, dev=source_data.dev.select(range(min(max_dev, source_data.dev.num_rows))))
        train, dev, labels = _classification(source_data, text_col, text_pair_col, label_col)
        task = Task(source_data.name, kind, train, dev, label_names=labels)
    else:
        train, dev = _causal(source_data, prompt_col, target_col)
        task = _limited(Task(source_data.name, kind, train, dev), None, None if carve else max_dev)
    if carve:
        task = _limited(_carve_dev(task, dev_fraction, dev_seed, source_data.train_where), max_train, max_dev)
    return task

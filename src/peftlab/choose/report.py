"""`peftlab choose --from-report DIR`: recommend from measurements instead of rules of thumb.

Reads the `results.json` of a `peftlab compare` folder: a list of records (or an object whose
"results" is that list), one per method run,

    {"method": "lora", "config": {...}, "error": null | "message",
     "measurements": {"quality": 0.91, "peak_memory_bytes": ..., "step_time_s": 0.21,
                      "adapter_bytes": ..., "trainable_params": ...}}

(other keys are ignored). Under the user's constraints (memory, storage per task, latency) the
records that fit form a Pareto front over quality (higher is better), peak memory, step time
and adapter size (lower is better); the front is ranked by quality. Where the measurement
contradicts the rule table (`engine.rank`), the recommendation says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from peftlab.choose.engine import GB, SCHEMA, ChooseInputs, rank
from peftlab.choose.rules import load_rules
from peftlab.errors import PeftlabError

RESULTS_NAME = "results.json"
_TABLE = load_rules()
# (field, lower is better); quality is maximised, the others minimised.
OBJECTIVES = (("quality", False), ("peak_memory_bytes", True), ("step_time_s", True),
              ("adapter_bytes", True))


class ReportError(PeftlabError):
    """A compare results folder is missing or its results.json is malformed."""


@dataclass(frozen=True)
class Measurements:
    quality: float
    peak_memory_bytes: int
    step_time_s: float
    adapter_bytes: int
    trainable_params: int | None = None


@dataclass(frozen=True)
class ResultRecord:
    """One method run of `peftlab compare`; `measurements` is None when it failed."""

    method: str
    config: dict
    measurements: Measurements | None
    error: str | None = None

    @property
    def label(self) -> str:
        info = _TABLE["methods"].get(self.method)
        return info["label"] if info else self.method


def _number(where: str, key: str, value, *, integer: bool, positive: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or value < 0 or (positive and value <= 0):
        kind = "a non-negative integer" if integer else "a positive number" if positive else "a number"
        raise ReportError(f"{RESULTS_NAME}: {where}: measurements.{key} must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _record(index: int, raw) -> ResultRecord:
    where = f"record {index}"
    if not isinstance(raw, dict):
        raise ReportError(f"{RESULTS_NAME}: {where} must be an object, got {type(raw).__name__}")
    method = raw.get("method")
    if not isinstance(method, str) or not method:
        raise ReportError(f"{RESULTS_NAME}: {where}: 'method' must be a method name, got {method!r}")
    where = f"record {index} ({method})"
    config = raw.get("config", {})
    if not isinstance(config, dict):
        raise ReportError(f"{RESULTS_NAME}: {where}: 'config' must be an object")
    error = raw.get("error")
    if error is not None:
        return ResultRecord(method, config, None, str(error))
    found = raw.get("measurements")
    if not isinstance(found, dict):
        raise ReportError(f"{RESULTS_NAME}: {where}: 'measurements' must be an object (or give 'error')")
    for key, _ in OBJECTIVES:
        if key not in found:
            raise ReportError(f"{RESULTS_NAME}: {where}: measurements.{key} is missing")
    trainable = found.get("trainable_params")
    return ResultRecord(method, config, Measurements(
        quality=_number(where, "quality", found["quality"], integer=False),
        peak_memory_bytes=_number(where, "peak_memory_bytes", found["peak_memory_bytes"], integer=True),
        step_time_s=_number(where, "step_time_s", found["step_time_s"], integer=False, positive=True),
        adapter_bytes=_number(where, "adapter_bytes", found["adapter_bytes"], integer=True),
        trainable_params=None if trainable is None else
        _number(where, "trainable_params", trainable, integer=True)))


def read_results(folder: str | Path) -> tuple[ResultRecord, ...]:
    """The validated records of `folder/results.json`; errors name the folder, record and field."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"report folder {folder} not found; pass the --out folder of a "
                          f"`peftlab compare` run")
    path = folder / RESULTS_NAME
    if not path.is_file():
        raise ReportError(f"{path} not found; run `peftlab compare --out {folder}` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ReportError(f"{path} is not valid JSON ({err}); rerun `peftlab compare`") from err
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        data = data["results"]
    if not isinstance(data, list) or not data:
        raise ReportError(f"{path}: expected a non-empty list of method records")
    return tuple(_record(i, raw) for i, raw in enumerate(data))


def dominates(a: Measurements, b: Measurements) -> bool:
    """a is at least as good as b on every objective and better on one."""
    better = False
    for key, lower in OBJECTIVES:
        x, y = (getattr(a, key), getattr(b, key)) if lower else (getattr(b, key), getattr(a, key))
        if x > y:
            return False
        better = better or x < y
    return better


def pareto_front(records: tuple[ResultRecord, ...]) -> tuple[int, ...]:
    """Indices of the measured records that no other measured record dominates."""
    measured = [(i, r.measurements) for i, r in enumerate(records) if r.measurements]
    return tuple(i for i, m in measured if not any(dominates(o, m) for j, o in measured if j != i))


@dataclass(frozen=True)
class Choice:
    """One feasible measured record, ranked; `dominated_by` names who beats it everywhere."""

    rank: int
    method: str
    label: str
    config: dict
    measurements: Measurements
    on_front: bool
    dominated_by: tuple[str, ...]


@dataclass(frozen=True)
class ReportRecommendation:
    folder: str
    inputs: ChooseInputs
    choices: tuple[Choice, ...]
    excluded: tuple[tuple[str, str], ...]  # (label, why)
    overrides: tuple[str, ...]
    rule_of_thumb: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "from_report": self.folder, "inputs": asdict(self.inputs),
                "choices": [asdict(c) for c in self.choices],
                "excluded": [{"method": m, "why": why} for m, why in self.excluded],
                "overrides": list(self.overrides), "rule_of_thumb": list(self.rule_of_thumb)}


def _constraint(record: ResultRecord, inputs: ChooseInputs) -> str | None:
    """Why a measured record breaks the user's constraints, or None."""
    m = record.measurements
    if isinstance(inputs.memory, (int, float)) and m.peak_memory_bytes > inputs.memory * GB:
        return f"peak memory {m.peak_memory_bytes / GB:.2f} GB > {inputs.memory:g} GB available"
    if inputs.storage_mb is not None and m.adapter_bytes > inputs.storage_mb * 1e6:
        return f"adapter {m.adapter_bytes / 1e6:.1f} MB > {inputs.storage_mb:g} MB per task"
    info = _TABLE["methods"].get(record.method)
    if inputs.latency_critical and info and info["latency_overhead"]:
        return f"latency critical, and its inference adds {info['inference']} ({info['source']})"
    return None


def _overrides(records, choices, excluded, inputs, table) -> tuple[str, ...]:
    """Where the measurement contradicts the rule of thumb, one sentence each."""
    ranking = rank(inputs, table)
    threshold = table["report"]["quality_points_threshold"]
    qualities = [r.measurements.quality for r in records if r.measurements]
    scale = 100.0 if qualities and max(qualities) <= 1.0 else 1.0  # fractions -> points
    by_method = {}
    for record in records:
        by_method.setdefault(record.method, record)
    said = {m: f"the rule of thumb said {by_method[m].label} for {inputs.task} ({ranking.reasons[m][0]})"
            for m in ranking.methods if m in by_method}
    out = []
    best = choices[0] if choices else None
    for method in ranking.methods:
        record = by_method.get(method)
        if record is None:
            continue
        if record.error is not None:
            out.append(f"measured: {record.label} failed on your setup ({record.error}); {said[method]}")
        elif method in excluded:
            out.append(f"measured: {record.label} breaks your constraints ({excluded[method]}); {said[method]}")
        elif best is not None and best.method != method:
            gap = (best.measurements.quality - record.measurements.quality) * scale
            if gap >= threshold:
                out.append(f"measured: {record.label} {gap:.1f} points below {best.label} on your data; "
                           f"{said[method]}")
    if best is not None and ranking.methods and best.method != ranking.methods[0]:
        where = (f"ranked it #{ranking.methods.index(best.method) + 1}"
                 if best.method in ranking.methods else "did not recommend it")
        out.append(f"measured: {best.label} is the best fit on your data; the rule of thumb {where} "
                   f"for {inputs.task}")
    return tuple(out)


def recommend_from_report(folder: str | Path, inputs: ChooseInputs,
                          table: dict = _TABLE) -> ReportRecommendation:
    """Rank the measured methods of a compare folder under `inputs`' constraints."""
    records = read_results(folder)
    excluded: dict[str, str] = {}
    listed: list[tuple[str, str]] = []
    feasible = []
    for record in records:
        why = f"failed: {record.error}" if record.error is not None else _constraint(record, inputs)
        if why is None:
            feasible.append(record)
        else:
            excluded.setdefault(record.method, why)
            listed.append((record.label, why))
    front = set(pareto_front(tuple(feasible)))
    order = sorted(range(len(feasible)), key=lambda i: (
        i not in front, -feasible[i].measurements.quality, feasible[i].measurements.peak_memory_bytes,
        feasible[i].measurements.step_time_s, feasible[i].measurements.adapter_bytes, i))
    choices = tuple(
        Choice(rank, feasible[i].method, feasible[i].label, feasible[i].config,
               feasible[i].measurements, i in front,
               tuple(o.label for o in feasible if dominates(o.measurements, feasible[i].measurements)))
        for rank, i in enumerate(order, start=1))
    return ReportRecommendation(str(folder), inputs, choices, tuple(listed),
                                _overrides(records, choices, excluded, inputs, table),
                                rank(inputs, table).methods)

"""What `--from-report` reads from a `peftlab compare` folder's `results.json`, validated.

Two layouts are accepted, each record becoming one `ResultRecord`:

    flat      [{"method": "lora", "config": {...}, "error": null | "message",
                "measurements": {"quality": 0.91, "quality_metric": "accuracy" (optional),
                                 "peak_memory_bytes": int, "step_time_s": 0.21,
                                 "adapter_bytes": int, "trainable_params": int (optional)}}]
              (or {"results": [...]})
    compare/1 {"schema": "peftlab.compare/1", "methods": [{"method", "config", "error": null |
                {"phase", "type", "message"}, "measurements": {"quality": {"metric", "value"},
                "memory": {"peak_gpu_mb" | "peak_rss_mb"}, "step_time": {"median_ms"},
                "adapter_file_bytes", "params": {"trainable"}}}]}   (MB here are 2**20 bytes)
    compare/2 the same, plus each quality's "ci" and "learned", and the comparison's paired
              differences ("quality": {"pairs": [{"a", "b", "distinguishable"}]}): a record's
              `ties` are the methods whose quality it cannot be told apart from

Other keys are ignored. A malformed file fails with one line naming the record and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from peftlab.choose.rules import load_rules
from peftlab.errors import PeftlabError

RESULTS_NAME = "results.json"
MIB = 2**20
# Metrics reported as fractions (shown as points ×100) and metrics where lower is better.
FRACTION_METRICS = ("accuracy", "macro_f1", "f1")
LOWER_IS_BETTER = ("perplexity", "loss")
_LABELS = {name: info["label"] for name, info in load_rules()["methods"].items()}


class ReportError(PeftlabError):
    """A compare results folder is missing or its results.json is malformed."""


@dataclass(frozen=True)
class Measurements:
    """One run's measured objectives; `quality` in the metric's own units."""

    quality: float
    peak_memory_bytes: int
    step_time_s: float
    adapter_bytes: int
    trainable_params: int | None = None
    metric: str | None = None
    quality_ci: tuple[float, float] | None = None  # 95 % interval (compare/2)
    learned: bool | None = None  # False: no better than the baseline at this budget (compare/2)

    @property
    def score(self) -> float:
        """Quality oriented so that higher is better (perplexity is negated)."""
        return -self.quality if self.metric in LOWER_IS_BETTER else self.quality


@dataclass(frozen=True)
class ResultRecord:
    """One method run; `measurements` is None when it failed (`error` says why)."""

    method: str
    config: dict
    measurements: Measurements | None
    error: str | None = None
    ties: tuple[str, ...] = ()  # methods whose measured quality this one cannot be told apart from
    intervals: bool = False     # whether the comparison measured intervals (then `ties` is known)

    @property
    def label(self) -> str:
        return _LABELS.get(self.method, self.method)


def _number(where: str, key: str, value, *, integer: bool = False, positive: bool = False, signed: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or (value < 0 and not signed) or (positive and value <= 0):
        kind = "a non-negative integer" if integer else "a positive number" if positive else "a number"
        raise ReportError(f"{RESULTS_NAME}: {where}: measurements.{key} must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _flat(where: str, found: dict) -> Measurements:
    for key in ("quality", "peak_memory_bytes", "step_time_s", "adapter_bytes"):
        if key not in found:
            raise ReportError(f"{RESULTS_NAME}: {where}: measurements.{key} is missing")
    trainable = found.get("trainable_params")
    return Measurements(
        quality=_number(where, "quality", found["quality"]),
        peak_memory_bytes=_number(where, "peak_memory_bytes", found["peak_memory_bytes"], integer=True),
        step_time_s=_number(where, "step_time_s", found["step_time_s"], positive=True),
        adapter_bytes=_number(where, "adapter_bytes", found["adapter_bytes"], integer=True),
        trainable_params=None if trainable is None else
        _number(where, "trainable_params", trainable, integer=True),
        metric=found.get("quality_metric"))


def _nested(where: str, found: dict) -> Measurements:
    """The `peftlab.compare/1` layout; GPU peak memory when measured, else the process's RSS."""
    quality, memory = found["quality"], found.get("memory") or {}
    peak = "peak_gpu_mb" if memory.get("peak_gpu_mb") is not None else "peak_rss_mb"
    trainable = (found.get("params") or {}).get("trainable")
    ci = quality.get("ci")
    if ci is not None:
        ci = (_number(where, "quality.ci[0]", ci[0] if isinstance(ci, list) and len(ci) == 2 else None, signed=True),
              _number(where, "quality.ci[1]", ci[1], signed=True))
    learned = quality.get("learned")
    return Measurements(
        quality=_number(where, "quality.value", quality.get("value")),
        peak_memory_bytes=round(_number(where, f"memory.{peak}", memory.get(peak)) * MIB),
        step_time_s=_number(where, "step_time.median_ms", (found.get("step_time") or {}).get("median_ms"),
                            positive=True) / 1000,
        adapter_bytes=_number(where, "adapter_file_bytes", found.get("adapter_file_bytes"), integer=True),
        trainable_params=None if trainable is None else
        _number(where, "params.trainable", trainable, integer=True),
        metric=quality.get("metric"), quality_ci=ci, learned=learned if isinstance(learned, bool) else None)


def _error_text(error) -> str:
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {error.get('message', '')}".strip(": ")
        return f"{text} ({error['phase']})" if error.get("phase") else text
    return str(error)


def _ties(data) -> dict[str, set[str]] | None:
    """method -> the methods it cannot be told apart from, when the file has paired intervals."""
    pairs = data.get("quality", {}).get("pairs") if isinstance(data, dict) and isinstance(data.get("quality"), dict) \
        else None
    if not isinstance(pairs, list):
        return None
    ties: dict[str, set[str]] = {}
    for pair in pairs:
        if isinstance(pair, dict) and pair.get("distinguishable") is False:
            ties.setdefault(str(pair.get("a")), set()).add(str(pair.get("b")))
            ties.setdefault(str(pair.get("b")), set()).add(str(pair.get("a")))
    return ties


def _record(index: int, raw) -> ResultRecord:
    where = f"record {index}"
    if not isinstance(raw, dict):
        raise ReportError(f"{RESULTS_NAME}: {where} must be an object, got {type(raw).__name__}")
    method = raw.get("method")
    if not isinstance(method, str) or not method:
        raise ReportError(f"{RESULTS_NAME}: {where}: 'method' must be a method name, got {method!r}")
    where = f"record {index} ({method})"
    config = raw.get("config") or {}
    if not isinstance(config, dict):
        raise ReportError(f"{RESULTS_NAME}: {where}: 'config' must be an object")
    if raw.get("error") is not None:
        return ResultRecord(method, config, None, _error_text(raw["error"]))
    found = raw.get("measurements")
    if not isinstance(found, dict):
        raise ReportError(f"{RESULTS_NAME}: {where}: 'measurements' must be an object (or give 'error')")
    nested = isinstance(found.get("quality"), dict)
    return ResultRecord(method, config, (_nested if nested else _flat)(where, found))


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
    ties = _ties(data)
    if isinstance(data, dict):
        data = next((data[k] for k in ("methods", "results") if isinstance(data.get(k), list)), data)
    if not isinstance(data, list) or not data:
        raise ReportError(f"{path}: expected a non-empty list of method records")
    records = tuple(_record(i, raw) for i, raw in enumerate(data))
    if ties is None:
        return records
    return tuple(replace(r, ties=tuple(sorted(ties.get(r.method, ()))), intervals=True) for r in records)

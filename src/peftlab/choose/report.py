"""`peftlab choose --from-report DIR`: recommend from measurements instead of rules of thumb.

The records of a `peftlab compare` folder (`results.py` reads and validates them) that meet the
user's constraints (memory, storage per task, latency) form a Pareto front over quality (higher
is better; perplexity lower), peak memory, step time and adapter size (lower is better); the
front comes first, ranked by quality. Where a measurement contradicts the rule table
(`engine.rank`), the recommendation says so.

Quality differences are only differences when the comparison can tell them apart: with paired
intervals (compare/2), two methods whose interval of the difference contains 0 count as equal in
quality (neither dominates the other on it, no sentence says one is below the other, and they are
named as indistinguishable at this budget); without intervals, gaps under the table's noise
threshold are ignored. A method that did not learn at the comparison's budget is not recommended.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from peftlab.choose.engine import GB, SCHEMA, ChooseInputs, rank
from peftlab.choose.results import (FRACTION_METRICS, LOWER_IS_BETTER, Measurements, ResultRecord,
                                    read_results)
from peftlab.choose.rules import load_rules

_TABLE = load_rules()


def _costs(m: Measurements) -> tuple[float, ...]:
    """The four objectives, each oriented so that lower is better."""
    return (-m.score, m.peak_memory_bytes, m.step_time_s, m.adapter_bytes)


def _tied(a: ResultRecord, b: ResultRecord) -> bool:
    """Whether the comparison cannot tell a's quality from b's."""
    return b.method in a.ties


def dominates(a: ResultRecord, b: ResultRecord) -> bool:
    """a is at least as good as b on every objective and better on one (tied qualities are equal)."""
    costs_a, costs_b = list(_costs(a.measurements)), list(_costs(b.measurements))
    if _tied(a, b):
        costs_a[0] = costs_b[0]
    pairs = list(zip(costs_a, costs_b))
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def pareto_front(records: tuple[ResultRecord, ...]) -> tuple[int, ...]:
    """Indices of the measured records that no other measured record dominates."""
    measured = [(i, r) for i, r in enumerate(records) if r.measurements]
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
    if m.learned is False:
        return "did not learn at the comparison's budget (no better than its baseline)"
    info = _TABLE["methods"].get(record.method)
    if inputs.latency_critical and info and info["latency_overhead"]:
        return f"latency critical, and its inference adds {info['inference']} ({info['source']})"
    return None


def _shortfall(best: Measurements, other: Measurements, values: list[Measurements]) -> tuple[float, str]:
    """How far `other`'s quality is behind `best`'s: (gap, words). Fractions (accuracy) count in
    points ×100; lower-is-better metrics (perplexity) compare the values themselves."""
    if best.metric in LOWER_IS_BETTER:
        return other.quality - best.quality, f"{best.metric} {other.quality:.2f} vs {best.quality:.2f} for"
    fraction = best.metric in FRACTION_METRICS or (best.metric is None and max(m.quality for m in values) <= 1)
    gap = (best.quality - other.quality) * (100 if fraction else 1)
    return gap, f"{gap:.1f} points below"


def _overrides(records, choices, excluded, inputs, table) -> tuple[str, ...]:
    """Where the measurement contradicts the rule of thumb, one sentence each."""
    ranking = rank(inputs, table)
    threshold = table["report"]["quality_points_threshold"]
    values = [r.measurements for r in records if r.measurements]
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
        elif record.measurements.learned is False:
            out.append(f"measured: {record.label} {excluded[method]}, so it is not recommended; {said[method]}")
        elif method in excluded:
            out.append(f"measured: {record.label} breaks your constraints ({excluded[method]}); {said[method]}")
        elif best is not None and best.method != method and not _tied(record, _record_of(records, best.method)):
            gap, words = _shortfall(best.measurements, record.measurements, values)
            if gap >= threshold or record.intervals:
                out.append(f"measured: {record.label} {words} {best.label} on your data; {said[method]}")
    tied = [c.label for c in choices if best is not None and c.method != best.method
            and _tied(_record_of(records, best.method), _record_of(records, c.method))]
    if tied:
        out.append(f"measured: {best.label} and {', '.join(tied)} cannot be told apart in quality on your data at "
                   "this budget (paired 95% intervals); choose among them on cost")
    top_tied = best is not None and ranking.methods and ranking.methods[0] in (
        {best.method} | set(_record_of(records, best.method).ties))
    if best is not None and ranking.methods and not top_tied:
        where = (f"ranked it #{ranking.methods.index(best.method) + 1}"
                 if best.method in ranking.methods else "did not recommend it")
        out.append(f"measured: {best.label} is the best fit on your data; the rule of thumb {where} "
                   f"for {inputs.task}")
    return tuple(out)


def _record_of(records, method: str) -> ResultRecord:
    return next(r for r in records if r.method == method)


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

    def behind(r: ResultRecord) -> int:
        """How many feasible records are better in quality by more than the noise."""
        return sum(o.measurements.score > r.measurements.score and not _tied(r, o) for o in feasible)

    # Tied qualities do not order the list: the count of distinguishably better records does,
    # then the costs.
    order = sorted(range(len(feasible)), key=lambda i: (
        i not in front, behind(feasible[i]) if feasible[i].intervals else 0, _costs(feasible[i].measurements), i))
    choices = tuple(
        Choice(rank, feasible[i].method, feasible[i].label, feasible[i].config,
               feasible[i].measurements, i in front,
               tuple(o.label for o in feasible if dominates(o, feasible[i])))
        for rank, i in enumerate(order, start=1))
    return ReportRecommendation(str(folder), inputs, choices, tuple(listed),
                                _overrides(records, choices, excluded, inputs, table),
                                rank(inputs, table).methods)

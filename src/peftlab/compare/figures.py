"""Reading and formatting a comparison's figures, shared by the report, the charts and the table.

Every figure is shown with its uncertainty: a score as `78.7 [75.9, 81.4]` (its 95 % interval),
a difference as `+1.2 [−0.8, +3.1]`, and a ratio as `1.36× [1.30, 1.42]`, or, when the
interval contains 1, as `≈ 1.00 (within noise)`: a ratio the measurement cannot tell from 1 is
not a finding.
"""

from __future__ import annotations

from typing import Any

WITHIN_NOISE = "≈ 1.00 (within noise)"


def dig(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def measured(record: dict[str, Any], *path: str) -> Any:
    return dig(record.get("measurements"), *path)


def points(results: dict[str, Any]) -> float:
    """The factor from a metric's own units to the report's (100 for accuracy)."""
    return (results.get("quality") or {}).get("points") or 1.0


def quality_value(record: dict[str, Any], scale: float | None = None) -> float | None:
    """The headline dev metric in report units: accuracy (a 0..1 fraction) in percent; ROUGE-L and
    BLEU are percentages already and perplexity is not one, so they stay as measured."""
    value, metric = measured(record, "quality", "value"), measured(record, "quality", "metric")
    if value is None:
        return None
    if scale is None:
        scale = 100.0 if metric in ("accuracy", "macro_f1") else 1.0
    return value * scale


def num(value: float | None, fmt: str = "{:,.0f}", missing: str = "–") -> str:
    return missing if value is None else fmt.format(value)


def mb(value: float | None) -> str:
    return num(value, "{:,.0f} MB")


def count(value: int | None) -> str:
    if value is None:
        return "–"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= size:
            return f"{value / size:.2f}{suffix}"
    return str(value)


def size(value: int | None) -> str:
    if value is None:
        return "–"
    for unit, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= unit:
            return f"{value / unit:.1f} {suffix}"
    return f"{value} B"


def score(value: float | None, ci: list[float] | None, scale: float = 1.0, digits: int = 1) -> str:
    """`78.7 [75.9, 81.4]`."""
    if value is None:
        return "–"
    shown = f"{value * scale:.{digits}f}"
    return shown + (f" [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]" if ci else "")


def difference(found: dict[str, Any] | None, scale: float = 1.0, digits: int = 1) -> str:
    """`+1.2 [−0.8, +3.1]`, marked `(indistinguishable)` when the interval contains 0."""
    if not found:
        return "–"
    low, high = found["ci"]
    text = f"{found['diff'] * scale:+.{digits}f} [{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]"
    return text + ("" if found["distinguishable"] else " (indistinguishable)")


def ratio(found: dict[str, Any] | None, digits: int = 2) -> str:
    """`1.36× [1.30, 1.42]`, or `≈ 1.00 (within noise)` when the interval contains 1."""
    if not found:
        return "–"
    low, high = found["ci"]
    if low <= 1.0 <= high:
        return WITHIN_NOISE
    return f"{found['value']:.{digits}f}× [{low:.{digits}f}, {high:.{digits}f}]"


def ms(summary: dict[str, Any] | None) -> str:
    """A time's median with its interval over rounds: `940 ms [912, 968]`."""
    if not summary or summary.get("median_ms") is None:
        return "–"
    low, high = summary.get("ci_ms") or (None, None)
    digits = 0 if summary["median_ms"] >= 100 else 1
    interval = f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None else ""
    return f"{summary['median_ms']:.{digits}f} ms{interval}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)

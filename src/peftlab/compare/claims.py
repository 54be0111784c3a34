"""The source documents' claims about the ordering of methods, checked against a comparison.

A claim is data (`SOURCE_CLAIMS`): `subject` is `relation` to each of `others`, with a band of
`points` (accuracy points, or the metric's own units). It is decided on the paired intervals of
the differences (`quality.py`), never on point values:

    close:   seen if every interval of subject − other lies inside [−points, +points];
             not seen if one lies wholly outside; otherwise undecided at this budget
    behind:  seen if every interval lies wholly below −points; not seen if one reaches above
             −points wholly (the gap is surely smaller); otherwise undecided

A claim about a method that did not learn at this budget is not checked: its failure says
something about the learning rate or the budget, not about the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SEEN, NOT_SEEN, UNDECIDED, NOT_CHECKED = "seen", "not seen", "undecided at this budget", "not checked"


@dataclass(frozen=True)
class Claim:
    text: str
    subject: str
    relation: str  # "close" | "behind"
    others: tuple[str, ...]
    points: float


SOURCE_CLAIMS = (
    Claim("LoRA comes close to full fine-tuning", "lora", "close", ("full",), 2.0),
    Claim("Prompt tuning falls behind with little data", "prompt", "behind", ("full", "lora"), 2.0),
)


def _pair(quality: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
    """The paired difference a − b from the analysis (its pairs hold each pair once)."""
    for pair in quality.get("pairs", []):
        if (pair["a"], pair["b"]) == (a, b):
            return pair
        if (pair["a"], pair["b"]) == (b, a):
            return {"diff": -pair["diff"], "ci": [-pair["ci"][1], -pair["ci"][0]],
                    "distinguishable": pair["distinguishable"]}
    return None


def _verdict(claim: Claim, low: float, high: float) -> str:
    band = claim.points
    if claim.relation == "close":
        if -band <= low and high <= band:
            return SEEN
        return NOT_SEEN if high < -band or low > band else UNDECIDED
    if high < -band:
        return SEEN
    return NOT_SEEN if low > -band else UNDECIDED


def check_claim(claim: Claim, results: dict[str, Any]) -> tuple[str, str]:
    """(verdict, detail) of `claim` on a comparison's results (see the module doc)."""
    quality = results.get("quality") or {}
    scale = quality.get("points") or 1.0
    records = {r["method"]: r for r in results.get("methods", [])}
    names = (claim.subject, *claim.others)
    absent = [n for n in names if n not in records or (records[n].get("measurements") or {}).get("quality") is None]
    if absent:
        return NOT_CHECKED, f"no quality measured for {', '.join(absent)}"
    unlearned = [n for n in names if n not in quality.get("learned", [])]
    if unlearned:
        return NOT_CHECKED, (f"{', '.join(unlearned)} did not learn at this budget, which says nothing about "
                             "the claim (see Quality)")
    verdicts, details = [], []
    for other in claim.others:
        pair = _pair(quality, claim.subject, other)
        if pair is None:
            return NOT_CHECKED, f"no paired difference for {claim.subject} − {other}"
        low, high = pair["ci"][0] * scale, pair["ci"][1] * scale
        verdicts.append(_verdict(claim, low, high))
        details.append(f"{claim.subject} − {other}: {pair['diff'] * scale:+.1f} [{low:+.1f}, {high:+.1f}]")
    verdict = (SEEN if all(v == SEEN for v in verdicts) else NOT_SEEN if NOT_SEEN in verdicts else UNDECIDED)
    return verdict, "; ".join(details)

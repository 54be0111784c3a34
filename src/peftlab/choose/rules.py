"""The rule table (`rules.json` + each method's `choose.json`): loading, validation, the matcher.

The source documents' decision framework lives in `rules.json` as data so that it can be read, diffed and
tested row by row; what `choose` knows about one method (its recipe, inference cost, next steps
and any rules citing its own paper) is that method's `choose.json`, named by its declaration and
merged in here, with its label and mergeability read from the declaration itself. This module
only knows the table's shape. A rule is

    {"id", "group", "when": {fact: condition}, "source": "source 003, Decision Tree",
     "text": "...", "note": why this rule wins where the seeds disagree,
     "recommend": [method | {"method", "set", "source", "text"}], "demote": [method],
     "demote_because": {"source", "text"}, "advice": true}

and a condition is a value (equality) or one of {"in": [...]}, {"lt": n}, {"ge": n}. A numeric
condition never matches an unknown (None) fact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from peftlab.core.registry import declarations
from peftlab.errors import ConfigError

RULES_PATH = Path(__file__).with_name("rules.json")
# Facts a rule may test: the inputs (engine.ChooseInputs.facts) plus `merge`, which is true
# once an earlier rule set merge for the first-ranked method.
FACTS = ("task", "latency_critical", "accelerator", "examples", "num_tasks", "storage_mb",
         "combine_tasks", "goal", "merge")
_OPERATORS = ("in", "lt", "ge")
_MODES = ("first", "all")


@dataclass(frozen=True)
class Reason:
    """One cited rule: `source` is the seed section, `text` what it says, `rule` the row id."""

    rule: str
    source: str
    text: str

    def __str__(self) -> str:
        return f"{self.source}: {self.text}"

    def to_dict(self) -> dict:
        return {"rule": self.rule, "source": self.source, "text": self.text}


def matches(when: dict[str, Any], facts: dict[str, Any]) -> bool:
    """True when every condition of `when` holds for `facts`."""
    for name, condition in when.items():
        value = facts.get(name)
        if isinstance(condition, dict):
            (operator, operand), = condition.items()
            if operator == "in":
                if value not in operand:
                    return False
            elif value is None or not (value < operand if operator == "lt" else value >= operand):
                return False
        elif value != condition:
            return False
    return True


def recommended(rule: dict) -> list[dict]:
    """The rule's `recommend` items as dicts with `method` (a bare name is shorthand)."""
    return [{"method": item} if isinstance(item, str) else item for item in rule.get("recommend", ())]


def _check_when(rule_id: str, when: Any) -> None:
    if not isinstance(when, dict):
        raise ConfigError(f"rules.json: rule {rule_id!r}: 'when' must be an object")
    for name, condition in when.items():
        if name not in FACTS:
            raise ConfigError(f"rules.json: rule {rule_id!r} tests unknown fact {name!r}; "
                              f"use one of: {', '.join(FACTS)}")
        if isinstance(condition, dict) and (len(condition) != 1 or next(iter(condition)) not in _OPERATORS):
            raise ConfigError(f"rules.json: rule {rule_id!r}: condition on {name!r} must be one of "
                              f"{', '.join(_OPERATORS)}")


def validate(table: dict) -> dict:
    """Check the table's references (groups, methods, facts, ids); return it unchanged."""
    for key in ("order", "methods", "targets", "ranges", "rules", "memory_fallbacks",
                "next_steps", "tasks", "goals", "report"):  # methods, next_steps: from the declarations
        if key not in table:
            raise ConfigError(f"rules.json: missing top-level key {key!r}")
    groups = {}
    for group in table["order"]:
        if group.get("mode") not in _MODES:
            raise ConfigError(f"rules.json: group {group.get('group')!r} mode must be one of {', '.join(_MODES)}")
        groups[group["group"]] = group
    methods = table["methods"]
    seen = set()
    for rule in table["rules"]:
        rule_id = rule.get("id")
        if rule_id in seen:
            raise ConfigError(f"rules.json: rule id {rule_id!r} appears twice")
        seen.add(rule_id)
        for key in ("group", "when", "source", "text"):
            if key not in rule:
                raise ConfigError(f"rules.json: rule {rule_id!r} has no {key!r}")
        if rule["group"] not in groups:
            raise ConfigError(f"rules.json: rule {rule_id!r} is in unknown group {rule['group']!r}; "
                              f"groups: {', '.join(groups)}")
        _check_when(rule_id, rule["when"])
        for method in [item["method"] for item in recommended(rule)] + list(rule.get("demote", ())):
            if method not in methods:
                raise ConfigError(f"rules.json: rule {rule_id!r} names unknown method {method!r}; "
                                  f"methods: {', '.join(methods)}")
    for fallback in table["memory_fallbacks"]:
        for key in ("from", "to"):
            if fallback[key] != "*" and fallback[key] not in methods:
                raise ConfigError(f"rules.json: memory fallback {fallback['id']!r}: unknown method "
                                  f"{fallback[key]!r}")
    _check_when("ranges", table["ranges"]["high_when"])
    for name, info in methods.items():
        for key in ("label", "config", "config_source", "inference", "mergeable", "latency_overhead", "source"):
            if key not in info:
                raise ConfigError(f"rules.json: method {name!r} has no {key!r}")
    missing = sorted(set(methods) - set(table["next_steps"]))
    if missing:
        raise ConfigError(f"rules.json: no next_steps for {', '.join(missing)}")
    return table


@lru_cache(maxsize=None)
def _load(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _read(path: str | Path) -> dict:
    try:
        return json.loads(_load(str(path)))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the rule table {path}: {err}") from err


def with_methods(table: dict) -> dict:
    """`table` plus every registered method's choose data: `methods` (label and mergeability from
    the declaration, the rest from its choose.json), `next_steps`, and its rules after the seeds'."""
    table = {**table, "methods": {}, "next_steps": {}, "rules": list(table["rules"])}
    for found in declarations():
        if found.choose is None:
            continue
        data = _read(found.choose)
        capabilities = found.capabilities
        table["methods"][found.name] = {
            "label": found.label, "mergeable": capabilities.mergeable and capabilities.separate_delta,
            **{k: v for k, v in data.items() if k not in ("next_steps", "rules")}}
        table["next_steps"][found.name] = data["next_steps"]
        table["rules"] += data.get("rules", [])
    return table


def load_rules(path: str | Path = RULES_PATH) -> dict:
    """The validated rule table (a fresh dict each call, so callers cannot alter the shared one)."""
    return validate(with_methods(_read(path)))

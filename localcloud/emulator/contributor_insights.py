"""What a Contributor Insights rule counts in some JSON log lines: the evaluation moto does not do.

moto stores insight rules (`PutInsightRule`) and evaluates nothing, so a rule whose filter names a
field the functions no longer write would deploy and count nothing, silently. `contributions`
applies a `CloudWatchLogRule` body to log events as CloudWatch documents it: the event's log group
is one of `LogGroupNames` (or starts with one ending in `*`), every filter holds (all are ANDed;
`In`, `NotIn`, `StartsWith`, `EqualTo`, `NotEqualTo`, `GreaterThan`, `LessThan`, `IsPresent`), and
the contributor is the tuple of its `Keys` values. Assumed, not documented: an event missing a key
is not counted (our rules make it explicit with `IsPresent` filters). Only `AggregateOn: Count`
and single-level or nested `$.a.b` paths; anything else is refused rather than guessed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["UnsupportedRule", "contributions"]

_MISSING = object()


class UnsupportedRule(ValueError):
    """The rule uses what this evaluator does not model (or what CloudWatch would refuse)."""


def contributions(body: Mapping[str, Any] | str, events: Iterable[tuple[str, str]]) -> Counter[tuple[str, ...]]:
    """Count per contributor (the tuple of the rule's key values) the `(log group name, message)` events it matches."""
    rule = json.loads(body) if isinstance(body, str) else body
    if rule.get("Schema") != {"Name": "CloudWatchLogRule", "Version": 1} or rule.get("LogFormat") != "JSON":
        raise UnsupportedRule(f"only JSON CloudWatchLogRule rules are evaluated, got schema {rule.get('Schema')!r} and"
                              f" format {rule.get('LogFormat')!r}")
    if rule.get("AggregateOn") != "Count":
        raise UnsupportedRule(f"only AggregateOn Count is evaluated, got {rule.get('AggregateOn')!r}")
    contribution = rule["Contribution"]
    keys, filters = contribution["Keys"], contribution.get("Filters", [])
    counted: Counter[tuple[str, ...]] = Counter()
    for group, message in events:
        if not any(_group_matches(pattern, group) for pattern in rule["LogGroupNames"]):
            continue
        try:
            event = json.loads(message)
        except ValueError:
            continue  # a JSON rule reads JSON lines only
        if not isinstance(event, dict) or not all(_holds(f, event) for f in filters):
            continue
        values = [_at(event, key) for key in keys]
        if any(value is _MISSING for value in values):
            continue
        counted[tuple(str(value) for value in values)] += 1
    return counted


def _group_matches(pattern: str, group: str) -> bool:
    return group.startswith(pattern[:-1]) if pattern.endswith("*") else group == pattern


def _at(event: Mapping[str, Any], path: str) -> Any:
    if not path.startswith("$."):
        raise UnsupportedRule(f"a JSON rule's fields are paths like '$.tenant', got {path!r}")
    value: Any = event
    for part in path[2:].split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _holds(condition: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    value = _at(event, condition["Match"])
    operators = set(condition) - {"Match"}
    if len(operators) != 1:
        raise UnsupportedRule(f"a filter takes one operator, got {sorted(operators)} in {dict(condition)!r}")
    (operator,) = operators
    operand = condition[operator]
    if operator == "IsPresent":
        return (value is not _MISSING) == bool(operand)
    if value is _MISSING:
        return operator == "NotIn"
    if operator == "In":
        return value in operand
    if operator == "NotIn":
        return value not in operand
    if operator == "StartsWith":
        return isinstance(value, str) and any(value.startswith(prefix) for prefix in operand)
    if operator == "EqualTo":
        return value == operand
    if operator == "NotEqualTo":
        return value != operand
    if operator in ("GreaterThan", "LessThan"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return value > operand if operator == "GreaterThan" else value < operand
    raise UnsupportedRule(f"unknown filter operator {operator!r}; CloudWatch takes In, NotIn, StartsWith, EqualTo,"
                          " NotEqualTo, GreaterThan, LessThan, IsPresent")

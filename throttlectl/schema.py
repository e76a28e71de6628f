"""What each tunable document may hold, and the checks `set` makes before it writes one.

One source of truth: the fields are those of the Lambda side's dataclasses (`DownstreamTunables`,
`BreakerPolicy`) and every document is run through the parsers the Lambdas use
(`parse_tunables`, `parse_breaker_policy`). Where a Lambda would *clamp* a value into range and
carry on, the CLI refuses it and names the bound: an operator who typed 50 must not get 10 silently.
Pure: no AWS calls.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from throttling.core.circuit_breaker import DURATION_BOUNDS_SEC, MAX_MINIMUM_CALLS, MAX_WINDOW_BUCKETS, BreakerPolicy
from throttling.core.names import TUNABLE_FLOOR_FRACTION, TUNABLE_SEED_FRACTION, TUNABLE_TENANT_SHARE_PREFIX, TUNABLES_MODES
from throttling.core.tunables import (
    BURST_BOUNDS,
    DECREASE_FACTOR_BOUNDS,
    FLOOR_FRACTION_BOUNDS,
    INCREASE_FRACTION_PER_SEC_BOUNDS,
    MAX_CONCURRENCY_BOUNDS,
    RATE_PER_SEC_BOUNDS,
    SEED_FRACTION_BOUNDS,
    DownstreamTunables,
    InvalidTunables,
    decode_document,
    parse_breaker_policy,
    parse_tunables,
)
from throttlectl.exceptions import Refused

__all__ = [
    "BREAKER_POLICY",
    "DOWNSTREAM_LIMITS",
    "KINDS",
    "FieldChange",
    "TunableKind",
    "diff",
    "document_of",
    "kind_of",
    "parse_assignments",
]

# What BreakerPolicy.__post_init__ enforces, worded for a table (validation itself is the parser's).
_SECONDS = f"{DURATION_BOUNDS_SEC[0]:g}..{DURATION_BOUNDS_SEC[1]:g} s"
BREAKER_BOUNDS = {
    "failure_rate_threshold": "(0, 1]",
    "slow_call_rate_threshold": "(0, 1]",
    "slow_call_duration_sec": _SECONDS,
    "minimum_calls": f"whole 1..{MAX_MINIMUM_CALLS}",
    "window_sec": _SECONDS,
    "window_buckets": f"whole 1..{MAX_WINDOW_BUCKETS}",
    "open_duration_sec": _SECONDS,
    "probe_lease_sec": _SECONDS,
}
_HARD_BOUNDS = {
    "rate_per_sec": RATE_PER_SEC_BOUNDS,
    "burst": BURST_BOUNDS,
    "max_concurrency": MAX_CONCURRENCY_BOUNDS,
    # The inner loop's, which the Lambdas clamp as well.
    "decrease_factor": DECREASE_FACTOR_BOUNDS,
    "increase_fraction_per_sec": INCREASE_FRACTION_PER_SEC_BOUNDS,
    TUNABLE_FLOOR_FRACTION: FLOOR_FRACTION_BOUNDS,
    TUNABLE_SEED_FRACTION: SEED_FRACTION_BOUNDS,
}


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class TunableKind:
    """One family of documents under `/throttling/<stage>/<prefix>/<name>`.

    `validate` returns the document to write or raises `Refused`; `ceiling_rate_per_sec` and
    `ceiling_burst` are the downstream's contract, which the Lambdas clamp the rate and burst to.
    """

    prefix: str
    title: str
    fields: tuple[str, ...]
    has_mode: bool
    _dataclass: type
    _validate: Callable[[str, Mapping[str, Any], float | None, int | None], dict[str, Any]]
    _bounds: Callable[[float | None, int | None], dict[str, str]]
    _in_force: Callable[[Any, float | None, int | None], tuple[dict[str, Any], tuple[str, ...]]]
    # Fields named by a prefix and a name of the operator's choosing (a tenant's share: `share_<tenant>`).
    field_prefixes: tuple[str, ...] = ()
    # Fields of the dataclass that a document never names as such (they come by `field_prefixes`).
    by_prefix_only: tuple[str, ...] = ()

    def validate(self, key: str, document: Mapping[str, Any], ceiling_rate_per_sec: float | None = None,
                 ceiling_burst: int | None = None) -> dict[str, Any]:
        named = set(self.fields) - set(self.by_prefix_only)
        unknown = sorted(name for name in set(document) - named
                         if not (isinstance(name, str) and name.startswith(self.field_prefixes)))
        if unknown:
            known = [*sorted(named), *(f"{prefix}<name>" for prefix in self.field_prefixes)]
            raise Refused(
                f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for {key}; "
                f"known fields: {', '.join(known)}"
            )
        return self._validate(key, document, ceiling_rate_per_sec, ceiling_burst)

    @property
    def defaults(self) -> dict[str, Any]:
        """What the Lambdas use for a field the document leaves out (fields without one are required)."""
        return {
            f.name: f.default for f in dataclasses.fields(self._dataclass) if f.default is not dataclasses.MISSING
        }

    def bounds(self, ceiling_rate_per_sec: float | None = None, ceiling_burst: int | None = None) -> dict[str, str]:
        return self._bounds(ceiling_rate_per_sec, ceiling_burst)

    def in_force(self, raw: str, ceiling_rate_per_sec: float | None = None,
                 ceiling_burst: int | None = None) -> tuple[dict[str, Any], tuple[str, ...]]:
        """What the Lambdas make of a stored value: the values in force and the fields they clamp.

        Raises `InvalidTunables` when they would refuse it (and keep their last good value).
        """
        return self._in_force(raw, ceiling_rate_per_sec, ceiling_burst)


# -- downstream limits ---------------------------------------------------------------------------


def _downstream_validate(key: str, document: Mapping[str, Any], ceiling: float | None,
                         ceiling_burst: int | None) -> dict[str, Any]:
    try:
        result = parse_tunables(document, ceiling_rate_per_sec=ceiling, ceiling_burst=ceiling_burst)
    except InvalidTunables as error:
        raise Refused(f"{key}: {error}") from None
    if result.clamped_fields:
        # A document that starts its bucket below the rate is a downstream known only by a ceiling.
        bound = "contract" if result.tunables.seed_fraction == 1 else "ceiling"
        raise Refused("; ".join(_clamp_message(key, name, document[name], ceiling, ceiling_burst,
                                               floor_fraction=result.tunables.floor_fraction, bound=bound)
                                for name in result.clamped_fields))
    return json.loads(result.tunables.to_document())


def _clamp_message(key: str, name: str, value: Any, ceiling: float | None, ceiling_burst: int | None, *,
                   floor_fraction: float, bound: str = "contract") -> str:
    low, high = _HARD_BOUNDS[name]
    downstream = key.rsplit("/", 1)[-1]
    if name == "rate_per_sec" and ceiling is not None and ceiling < high and value > ceiling:
        return (
            f"{key}: rate_per_sec {value:g} is above {downstream}'s {bound} of {ceiling:g} req/s (the "
            f"DOWNSTREAM_RATE_LIMIT_PER_SEC its functions are deployed with); the Lambdas would clamp it to "
            f"{ceiling:g}: give a value in [{low:g}, {ceiling:g}]"
        )
    if name == "burst" and ceiling_burst is not None and ceiling_burst < high and value > ceiling_burst:
        return (
            f"{key}: burst {value:g} is above {downstream}'s {bound} burst of {ceiling_burst} (the "
            f"DOWNSTREAM_BURST its functions are deployed with); the Lambdas would clamp it to "
            f"{ceiling_burst}: give a whole number in [{low:g}, {ceiling_burst}]"
        )
    if name == TUNABLE_SEED_FRACTION and low <= value < floor_fraction:
        return (
            f"{key}: seed_fraction {value:g} is below the floor_fraction of {floor_fraction:g}; a bucket never runs"
            f" below its floor, so the Lambdas would start it at {floor_fraction:g}: give a seed_fraction in"
            f" [{floor_fraction:g}, {high:g}], or lower floor_fraction"
        )
    side, bound = ("below the lower bound", low) if value < low else ("above the upper bound", high)
    return (
        f"{key}: {name} {value:g} is {side} {bound:g}; the Lambdas would clamp it to {bound:g}: "
        f"give a value in [{low:g}, {high:g}]"
    )


def _downstream_bounds(ceiling: float | None, ceiling_burst: int | None) -> dict[str, str]:
    low, high = RATE_PER_SEC_BOUNDS
    rate = f"{low:g}..{high:g}" if ceiling is None or ceiling >= high else f"{low:g}..{ceiling:g} (contract)"
    burst_low, burst_high = BURST_BOUNDS
    burst = (f"whole {burst_low}..{burst_high}" if ceiling_burst is None or ceiling_burst >= burst_high
             else f"whole {burst_low}..{ceiling_burst} (contract)")
    return {
        "rate_per_sec": rate,
        "burst": burst,
        "max_concurrency": f"whole {MAX_CONCURRENCY_BOUNDS[0]}..{MAX_CONCURRENCY_BOUNDS[1]}",
        "mode": "|".join(TUNABLES_MODES),
    }


def _downstream_in_force(raw: Any, ceiling: float | None, ceiling_burst: int | None) -> tuple[dict[str, Any], tuple[str, ...]]:
    result = parse_tunables(raw, ceiling_rate_per_sec=ceiling, ceiling_burst=ceiling_burst)
    values = json.loads(result.tunables.to_document())
    # A field clamped to its default (a seed_fraction of 2 is the default 1) is left out of the document,
    # yet the operator must see what it was clamped to.
    for name in result.clamped_fields:
        values.setdefault(name, getattr(result.tunables, name))
    return values, result.clamped_fields


DOWNSTREAM_LIMITS = TunableKind(
    prefix="downstreams",
    title="downstream limits",
    fields=tuple(f.name for f in dataclasses.fields(DownstreamTunables)),
    has_mode=True,
    _dataclass=DownstreamTunables,
    _validate=_downstream_validate,
    _bounds=_downstream_bounds,
    _in_force=_downstream_in_force,
    field_prefixes=(TUNABLE_TENANT_SHARE_PREFIX,),
    by_prefix_only=("tenant_shares",),
)


# -- breaker policies ----------------------------------------------------------------------------


def _breaker_validate(key: str, document: Mapping[str, Any], ceiling: float | None,
                      ceiling_burst: int | None) -> dict[str, Any]:
    try:
        parse_breaker_policy(document)
    except InvalidTunables as error:
        raise Refused(f"{key}: {error}") from None
    return dict(sorted(document.items()))


def _breaker_in_force(raw: Any, ceiling: float | None, ceiling_burst: int | None) -> tuple[dict[str, Any], tuple[str, ...]]:
    result = parse_breaker_policy(raw)
    return dataclasses.asdict(result.tunables), result.clamped_fields


BREAKER_POLICY = TunableKind(
    prefix="breakers",
    title="circuit breaker policy",
    fields=tuple(f.name for f in dataclasses.fields(BreakerPolicy)),
    has_mode=False,
    _dataclass=BreakerPolicy,
    _validate=_breaker_validate,
    _bounds=lambda ceiling, ceiling_burst: {name: BREAKER_BOUNDS.get(name, "see BreakerPolicy") for name in
                             (f.name for f in dataclasses.fields(BreakerPolicy))},
    _in_force=_breaker_in_force,
)

KINDS: dict[str, TunableKind] = {kind.prefix: kind for kind in (DOWNSTREAM_LIMITS, BREAKER_POLICY)}


def kind_of(key: str) -> TunableKind:
    """The kind of the tunable at `key` (relative to the stage prefix, e.g. `downstreams/crm`)."""
    kind = KINDS.get(key.split("/", 1)[0])
    if kind is None:
        raise Refused(
            f"no schema for {key!r}: throttlectl validates only {', '.join(p + '/<name>' for p in KINDS)}; "
            f"change other parameters with the AWS CLI"
        )
    return kind


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """`FIELD=VALUE` arguments as a dict; each VALUE is JSON (`5`, `0.5`, `true`) or else a plain string (`manual`)."""
    assignments: dict[str, Any] = {}
    for item in items:
        name, equals, text = item.partition("=")
        name = name.strip()
        if not equals or not name:
            raise Refused(f"expected FIELD=VALUE, got {item!r}; e.g. rate_per_sec=5 mode=manual")
        if name in assignments:
            raise Refused(f"{name} is given twice ({name}={json.dumps(assignments[name])} and {item})")
        try:
            value = decode_document(text)
        except InvalidTunables:
            value = text  # then refused by the field's own check, with the value as typed
        assignments[name] = value
    return assignments


def document_of(raw: str | None) -> dict[str, Any] | None:
    """The JSON object a stored value holds, or None when it holds none (garbage, absent)."""
    if raw is None:
        return None
    try:
        value = decode_document(raw)
    except InvalidTunables:
        return None
    return value if isinstance(value, dict) else None


def diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """Field by field, what differs between two documents (a missing field reads as None; 9 equals 9.0)."""
    old = old or {}
    return tuple(
        FieldChange(name, old.get(name), new.get(name))
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    )

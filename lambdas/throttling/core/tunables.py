"""Tunable limits: the documents' schema, parsing and validation, pure (`throttling.adapters.ssm_tunables` reads them).

The CDK app seeds JSON documents under `/throttling/<stage>/`: one per downstream
(`downstreams/<name>`: rate, burst, concurrency) and one per circuit breaker (`breakers/<name>`);
operators and the controller own them afterwards. A bad value must never take a consumer down, so:
- a field out of range is clamped into range and logged as a warning;
- a document that does not parse (bad JSON, wrong type, missing field) or a failed read is refused:
  the last good value stays in force and an error is logged; before any good value was seen, the
  defaults the function was deployed with are used.

Whatever its shape, a document raises nothing but `InvalidTunables`: `decode_document` refuses,
before and while decoding, what `json` would choke on or hand over unusable (more than
`MAX_DOCUMENT_CHARS`, nesting deeper than `MAX_DOCUMENT_DEPTH`, NaN and Infinity, integers of more
than `MAX_INTEGER_DIGITS` digits, a field given twice), and every field is checked by comparison
only, which no number can overflow.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from throttling.core import names
from throttling.core.adaptive_rate import AdaptiveRatePolicy
from throttling.core.circuit_breaker import BreakerPolicy
from throttling.core.hierarchical_rate import TenantShares
from throttling.core.json_depth import nesting_depth
from throttling.core.validation import clipped, is_int, is_number, shown


# Hard bounds whatever the downstream: below them nothing flows, above them one DynamoDB item,
# one Map state or one account's Lambda concurrency could not follow anyway.
RATE_PER_SEC_BOUNDS = (0.01, 10_000.0)
BURST_BOUNDS = (1, 5_000)
MAX_CONCURRENCY_BOUNDS = (1, 1_000)
# The inner loop's: a cut below a tenth would starve the fleet on one stray 429, above 0.95 it barely
# slows; a climb faster than half the ceiling per second is no climb, slower than 0.1 % never recovers;
# a floor of 1 % still lets probes through.
_LOOP_DEFAULTS = AdaptiveRatePolicy()
DECREASE_FACTOR_BOUNDS = (0.1, 0.95)
INCREASE_FRACTION_PER_SEC_BOUNDS = (0.001, 0.5)
FLOOR_FRACTION_BOUNDS = (0.01, 1.0)
# A seed is a share of the ceiling as the floor is; it may not start the bucket below the floor.
SEED_FRACTION_BOUNDS = (0.01, 1.0)
# Where a downstream's limit is unknown, an unused bucket starts at a tenth of the ceiling and a 429 may cut
# it to half that: the lab's unknown_limit scenario (a limit a fifth of the ceiling) reaches 0.95 of it in
# seconds from there, while a seed near the ceiling would open with a flood of 429s.
DEFAULT_DISCOVERY_SEED_FRACTION = 0.1

# Parameter Store's advanced tier holds at most 8 KB (a standard parameter 4,096 characters); a
# tunables document is a few dozen. Nothing larger is worth decoding.
MAX_DOCUMENT_CHARS = 8_192
# Documents are flat objects. json recurses once per level and raises RecursionError past about a
# thousand, which a 4 KB parameter of brackets reaches; the bound keeps decoding far from it.
MAX_DOCUMENT_DEPTH = 8
# Every bound above has at most 5 digits; an integer beyond a float's exact range is a typo, and
# past 4,300 digits Python refuses to convert it at all.
MAX_INTEGER_DIGITS = 15
_SHARING_DEFAULTS = TenantShares()
# A tenant named in a document: what the parameters' AllowedPattern admits after the prefix.
_TENANT_IN_DOCUMENT = re.compile(r"[a-z0-9_]{1,34}")
_EXAMPLE = '{"rate_per_sec": 10, "burst": 10, "max_concurrency": 2, "mode": "auto"}'


class InvalidTunables(ValueError):
    """The document cannot be used at all; the message says which field and why."""


@dataclass(frozen=True)
class DownstreamTunables:
    """The limits in force for one downstream.

    `mode` "manual" pins the values: the controller reads them but never writes over them.
    `decrease_factor`, `increase_fraction_per_sec` and `floor_fraction` tune the limiter's inner
    loop (`adaptive`); `seed_fraction` (below 1 only where the downstream's limit is unknown and
    `rate_per_sec` is a ceiling) is where an unused bucket starts before the loop discovers the rate.
    A document may leave them out, and `to_document` leaves them out at their defaults.
    `tenant_shares` (the document's `share_<tenant>` fields), `default_tenant_share`, `borrow_depth`,
    `reserve_standard` and `reserve_batch` share the bucket among tenants and priority classes
    (`shares`, `throttling.core.hierarchical_rate.TenantShares`); optional likewise.
    """

    rate_per_sec: float
    burst: int
    max_concurrency: int
    mode: str = names.TUNABLES_MODE_AUTO
    decrease_factor: float = _LOOP_DEFAULTS.decrease_factor
    increase_fraction_per_sec: float = _LOOP_DEFAULTS.increase_fraction_per_sec
    floor_fraction: float = _LOOP_DEFAULTS.floor_fraction
    seed_fraction: float = _LOOP_DEFAULTS.seed_fraction
    tenant_shares: tuple[tuple[str, float], ...] = ()
    default_tenant_share: float = _SHARING_DEFAULTS.default_share
    borrow_depth: float = _SHARING_DEFAULTS.borrow_depth
    reserve_standard: float = _SHARING_DEFAULTS.reserve_of(names.PRIORITY_STANDARD)
    reserve_batch: float = _SHARING_DEFAULTS.reserve_of(names.PRIORITY_BATCH)

    @property
    def shares(self) -> TenantShares:
        """How tenants and priority classes share the bucket, as these tunables set it."""
        return TenantShares(dict(self.tenant_shares), default_share=self.default_tenant_share,
                            borrow_depth=self.borrow_depth,
                            priority_reserves={names.PRIORITY_CRITICAL: 0.0, names.PRIORITY_STANDARD: self.reserve_standard,
                                               names.PRIORITY_BATCH: self.reserve_batch})

    @property
    def adaptive(self) -> AdaptiveRatePolicy:
        """The inner loop these tunables set: it starts at the rate in force where the contract is known, at
        `seed_fraction` of it where the rate is only a ceiling."""
        return AdaptiveRatePolicy(decrease_factor=self.decrease_factor,
                                  increase_fraction_per_sec=self.increase_fraction_per_sec,
                                  floor_fraction=self.floor_fraction, seed_fraction=self.seed_fraction)

    def to_document(self) -> str:
        document = asdict(self)
        for name in _LOOP_FIELDS:
            if document[name] == getattr(_LOOP_DEFAULTS, name):
                del document[name]
        for name in _SHARING_FIELDS:
            if document[name] == getattr(_DEFAULT_TUNABLES_SHARING, name):
                del document[name]
        del document["tenant_shares"]
        document.update({f"{names.TUNABLE_TENANT_SHARE_PREFIX}{tenant}": share for tenant, share in self.tenant_shares})
        return json.dumps(document, sort_keys=True)


_LOOP_FIELDS = (names.TUNABLE_DECREASE_FACTOR, names.TUNABLE_INCREASE_FRACTION_PER_SEC, names.TUNABLE_FLOOR_FRACTION,
                names.TUNABLE_SEED_FRACTION)
_SHARING_FIELDS = (names.TUNABLE_DEFAULT_TENANT_SHARE, names.TUNABLE_BORROW_DEPTH, names.TUNABLE_RESERVE_STANDARD,
                   names.TUNABLE_RESERVE_BATCH)
_DEFAULT_TUNABLES_SHARING = DownstreamTunables(rate_per_sec=1.0, burst=1, max_concurrency=1)


def discovery_fields(seed_fraction: float | None = None, floor_fraction: float | None = None) -> dict[str, float]:
    """The inner loop's fields of the document of a downstream known only by a ceiling (its `rate_per_sec`): where
    an unused bucket starts (`DEFAULT_DISCOVERY_SEED_FRACTION` unless given) and the floor (half the seed unless given).

    The stacks seed them and the lab's unknown-limit runs parse them, so both discover a rate as the callers do.
    """
    seed = DEFAULT_DISCOVERY_SEED_FRACTION if seed_fraction is None else seed_fraction
    return {names.TUNABLE_SEED_FRACTION: seed,
            names.TUNABLE_FLOOR_FRACTION: seed / 2 if floor_fraction is None else floor_fraction}


T = TypeVar("T")


@dataclass(frozen=True)
class Clamped(Generic[T]):
    """A parsed document and the fields that had to be clamped (empty when it was within range)."""

    tunables: T
    clamped_fields: tuple[str, ...]


def parse_tunables(
    raw: str | Mapping[str, Any], *, ceiling_rate_per_sec: float | None = None, ceiling_burst: int | None = None
) -> Clamped[DownstreamTunables]:
    """Parse and clamp a tunables document; raise `InvalidTunables` (and nothing else) when it cannot be used.

    `ceiling_rate_per_sec` and `ceiling_burst` are the downstream's contract: a rate or a burst above
    it is clamped to it, so a typo in Parameter Store cannot melt the downstream.
    """
    document = _as_mapping(raw)
    rate = _number(document, names.TUNABLE_RATE_PER_SEC)
    burst = _integer(document, names.TUNABLE_BURST)
    max_concurrency = _integer(document, names.TUNABLE_MAX_CONCURRENCY)
    mode = document.get(names.TUNABLE_MODE, names.TUNABLES_MODE_AUTO)
    if not isinstance(mode, str) or mode not in names.TUNABLES_MODES:
        raise InvalidTunables(f"mode must be one of {list(names.TUNABLES_MODES)}, got {shown(mode)}")

    clamped: list[str] = []
    rate_high = RATE_PER_SEC_BOUNDS[1] if ceiling_rate_per_sec is None else min(RATE_PER_SEC_BOUNDS[1], ceiling_rate_per_sec)
    rate_in_range = _clamp(rate, RATE_PER_SEC_BOUNDS[0], rate_high)
    if rate_in_range != rate:
        clamped.append(names.TUNABLE_RATE_PER_SEC)
    burst_high = BURST_BOUNDS[1] if ceiling_burst is None else min(BURST_BOUNDS[1], ceiling_burst)
    burst_in_range = int(_clamp(burst, BURST_BOUNDS[0], burst_high))
    if burst_in_range != burst:
        clamped.append(names.TUNABLE_BURST)
    concurrency_in_range = int(_clamp(max_concurrency, *MAX_CONCURRENCY_BOUNDS))
    if concurrency_in_range != max_concurrency:
        clamped.append(names.TUNABLE_MAX_CONCURRENCY)
    loop: dict[str, float] = {}
    for name, bounds in ((names.TUNABLE_DECREASE_FACTOR, DECREASE_FACTOR_BOUNDS),
                         (names.TUNABLE_INCREASE_FRACTION_PER_SEC, INCREASE_FRACTION_PER_SEC_BOUNDS),
                         (names.TUNABLE_FLOOR_FRACTION, FLOOR_FRACTION_BOUNDS),
                         (names.TUNABLE_SEED_FRACTION, SEED_FRACTION_BOUNDS)):
        if name not in document:
            continue
        value = _number(document, name)
        loop[name] = _clamp(value, *bounds)
        if loop[name] != value:
            clamped.append(name)
    # A bucket never runs below its floor, so a seed under it would start there anyway: raised to it, as
    # the other loop fields are clamped, rather than refusing the document the floor and seed make sense in.
    floor = loop.get(names.TUNABLE_FLOOR_FRACTION, _LOOP_DEFAULTS.floor_fraction)
    if loop.get(names.TUNABLE_SEED_FRACTION, floor) < floor:
        loop[names.TUNABLE_SEED_FRACTION] = floor
        if names.TUNABLE_SEED_FRACTION not in clamped:
            clamped.append(names.TUNABLE_SEED_FRACTION)
    sharing = _sharing(document)
    return Clamped(
        DownstreamTunables(rate_in_range, burst_in_range, concurrency_in_range, mode, **loop, **sharing),
        tuple(clamped),
    )


def _sharing(document: Mapping[str, Any]) -> dict[str, Any]:
    """The tenants' shares and the classes' reserves a document gives; refused (never clamped) when out of range:
    a share is a policy between tenants, and no bound says which tenant a wrong one should favour."""
    sharing: dict[str, Any] = {}
    for name in _SHARING_FIELDS:
        if name in document:
            sharing[name] = _number(document, name)
    shares = []
    for name in sorted(document):
        if not isinstance(name, str) or not name.startswith(names.TUNABLE_TENANT_SHARE_PREFIX):
            continue
        tenant = name[len(names.TUNABLE_TENANT_SHARE_PREFIX):]
        if not _TENANT_IN_DOCUMENT.fullmatch(tenant):
            raise InvalidTunables(f"{shown(name)} names no tenant: after {names.TUNABLE_TENANT_SHARE_PREFIX!r} give a "
                                  "lowercase snake_case tenant id of at most 34 characters")
        shares.append((tenant, _number(document, name)))
    if shares:
        sharing["tenant_shares"] = tuple(shares)
    if not sharing:
        return sharing
    candidate = DownstreamTunables(1.0, 1, 1, **sharing)
    try:
        candidate.shares  # noqa: B018 - TenantShares validates every value and says which is wrong
    except (TypeError, ValueError) as error:
        raise InvalidTunables(f"{error}") from None
    return sharing


def parse_breaker_policy(raw: str | Mapping[str, Any]) -> Clamped[BreakerPolicy]:
    """Parse a breaker's tunables document; every field is optional and defaults as in `BreakerPolicy`."""
    document = _as_mapping(raw)
    known = set(BreakerPolicy.__dataclass_fields__)
    unknown = set(document) - known
    if unknown:
        unknown_names = sorted(shown(name) for name in unknown)
        more = f" and {len(unknown_names) - 10} more" if len(unknown_names) > 10 else ""
        listed = ", ".join(unknown_names[:10]) + more
        raise InvalidTunables(f"unknown breaker fields [{listed}]; known: {sorted(known)}")
    try:
        return Clamped(BreakerPolicy(**document), ())
    except (TypeError, ValueError) as error:
        raise InvalidTunables(str(error)) from None


def decode_document(raw: str) -> Any:
    """The JSON value a stored document holds; `InvalidTunables` for anything `json` would choke on.

    Refused, with the reason: text longer than `MAX_DOCUMENT_CHARS`, nesting deeper than
    `MAX_DOCUMENT_DEPTH`, NaN and Infinity (which `json` accepts though JSON has no such values),
    integers of more than `MAX_INTEGER_DIGITS` digits, a number too large for a float, and an object
    that gives a field twice (`json` would keep the last one silently).
    """
    if not isinstance(raw, str):
        raise InvalidTunables(f"the value must be JSON text, got {type(raw).__name__}")
    if len(raw) > MAX_DOCUMENT_CHARS:
        raise InvalidTunables(f"the value is {len(raw)} characters long; a tunables document is a small JSON object"
                              f" of at most {MAX_DOCUMENT_CHARS}, e.g. {_EXAMPLE}")
    depth = nesting_depth(raw)
    if depth > MAX_DOCUMENT_DEPTH:
        raise InvalidTunables(f"the value nests {depth} levels deep; a tunables document is a flat JSON object"
                              f" (at most {MAX_DOCUMENT_DEPTH} levels), e.g. {_EXAMPLE}")
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_int=_bounded_int, parse_float=_finite_float,
                          object_pairs_hook=_object_without_repeats)
    except InvalidTunables:
        raise
    except (ValueError, RecursionError) as error:
        raise InvalidTunables(f"the value is not JSON ({clipped(str(error))}); expected e.g. {_EXAMPLE}") from None


def _as_mapping(raw: str | Mapping[str, Any]) -> Mapping[str, Any]:
    document = raw if isinstance(raw, Mapping) else decode_document(raw)
    if not isinstance(document, Mapping):
        raise InvalidTunables(f"the value must be a JSON object, got {type(document).__name__}")
    return document


def _refuse_constant(name: str) -> Any:
    raise InvalidTunables(f"{name} is not a JSON number; give a finite number")


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise InvalidTunables(f"an integer of {digits} digits ({clipped(text, 24)}) is beyond any bound; "
                              f"give at most {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidTunables(f"{clipped(text, 24)} is too large for a number; give a finite number")
    return value


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise InvalidTunables(f"field {shown(key)} is given twice; give each field once")
        document[key] = value
    return document


def _check_number(name: str, value: Any) -> None:
    """Refuse what no numeric check can take: non-finite floats and integers too large for a float."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidTunables(f"{name} must be a finite number, got {value!r}")
    if is_int(value) and abs(value) >= 10**MAX_INTEGER_DIGITS:
        raise InvalidTunables(f"{name} must have at most {MAX_INTEGER_DIGITS} digits, got {shown(value)}")


def _number(document: Mapping[str, Any], name: str) -> float:
    if name not in document:
        raise InvalidTunables(f"{name} is missing")
    value = document[name]
    if not is_number(value):
        raise InvalidTunables(f"{name} must be a finite number, got {shown(value)}")
    _check_number(name, value)
    return float(value)


def _integer(document: Mapping[str, Any], name: str) -> int:
    value = _number(document, name)
    if value != int(value):
        raise InvalidTunables(f"{name} must be a whole number, got {shown(document[name])}")
    return int(value)


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def preview(raw: Any) -> str:
    """A raw document as a log line shows it: clipped, and never raising."""
    try:
        return clipped(raw if isinstance(raw, str) else shown(raw, 500), 500)
    except Exception:  # noqa: BLE001 - a log line must never fail
        return "<unprintable>"

"""Operator- and controller-tunable limits, read from SSM Parameter Store.

The CDK app seeds JSON documents under `/throttling/<stage>/`: one per downstream
(`downstreams/<name>`: rate, burst, concurrency) and one per circuit breaker (`breakers/<name>`);
operators and the controller own them afterwards. A bad value must never take a consumer down, so:
- a field out of range is clamped into range and logged as a warning;
- a document that does not parse (bad JSON, wrong type, missing field) or a failed read is refused:
  the last good value stays in force and an error is logged; before any good value was seen, the
  defaults the function was deployed with are used.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from throttling.circuit_breaker import BreakerPolicy

logger = logging.getLogger(__name__)

MODES = ("auto", "manual")

# Hard bounds whatever the downstream: below them nothing flows, above them one DynamoDB item,
# one Map state or one account's Lambda concurrency could not follow anyway.
RATE_PER_SEC_BOUNDS = (0.01, 10_000.0)
BURST_BOUNDS = (1, 5_000)
MAX_CONCURRENCY_BOUNDS = (1, 1_000)


class InvalidTunables(ValueError):
    """The document cannot be used at all; the message says which field and why."""


@dataclass(frozen=True)
class DownstreamTunables:
    """The limits in force for one downstream.

    `mode` "manual" pins the values: the controller reads them but never writes over them.
    """

    rate_per_sec: float
    burst: int
    max_concurrency: int
    mode: str = "auto"

    def to_document(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


T = TypeVar("T")


@dataclass(frozen=True)
class Clamped(Generic[T]):
    """A parsed document and the fields that had to be clamped (empty when it was within range)."""

    tunables: T
    clamped_fields: tuple[str, ...]


def parse_tunables(
    raw: str | Mapping[str, Any], *, ceiling_rate_per_sec: float | None = None
) -> Clamped[DownstreamTunables]:
    """Parse and clamp a tunables document; raise `InvalidTunables` when it cannot be used.

    `ceiling_rate_per_sec` is the downstream's contractual limit: a rate above it is clamped to it,
    so a typo in Parameter Store cannot melt the downstream.
    """
    document = _as_mapping(raw)
    rate = _number(document, "rate_per_sec")
    burst = _integer(document, "burst")
    max_concurrency = _integer(document, "max_concurrency")
    mode = document.get("mode", "auto")
    if mode not in MODES:
        raise InvalidTunables(f"mode must be one of {list(MODES)}, got {mode!r}")

    clamped: list[str] = []
    rate_high = RATE_PER_SEC_BOUNDS[1] if ceiling_rate_per_sec is None else min(RATE_PER_SEC_BOUNDS[1], ceiling_rate_per_sec)
    rate_in_range = _clamp(rate, RATE_PER_SEC_BOUNDS[0], rate_high)
    if rate_in_range != rate:
        clamped.append("rate_per_sec")
    burst_in_range = int(_clamp(burst, *BURST_BOUNDS))
    if burst_in_range != burst:
        clamped.append("burst")
    concurrency_in_range = int(_clamp(max_concurrency, *MAX_CONCURRENCY_BOUNDS))
    if concurrency_in_range != max_concurrency:
        clamped.append("max_concurrency")
    return Clamped(
        DownstreamTunables(rate_in_range, burst_in_range, concurrency_in_range, mode),
        tuple(clamped),
    )


def parse_breaker_policy(raw: str | Mapping[str, Any]) -> Clamped[BreakerPolicy]:
    """Parse a breaker's tunables document; every field is optional and defaults as in `BreakerPolicy`."""
    document = _as_mapping(raw)
    known = set(BreakerPolicy.__dataclass_fields__)
    unknown = set(document) - known
    if unknown:
        raise InvalidTunables(f"unknown breaker fields {sorted(unknown)}; known: {sorted(known)}")
    try:
        return Clamped(BreakerPolicy(**document), ())
    except (TypeError, ValueError) as error:
        raise InvalidTunables(str(error)) from None


class TunablesReader(Generic[T]):
    """Reads one tunables document with a short cache, and never lets a bad value through.

    `fetch` returns the raw parameter value; in Lambda it is Powertools' SSM provider (which caches
    for `max_age_sec`), injected so tests and the lab can pass a plain function. `parse` turns it
    into a value or raises `InvalidTunables` (downstream limits by default).
    """

    def __init__(
        self,
        parameter_name: str,
        *,
        defaults: T,
        fetch: Callable[[str], str],
        ceiling_rate_per_sec: float | None = None,
        parse: Callable[[str], Clamped[T]] | None = None,
    ) -> None:
        self.parameter_name = parameter_name
        self._fetch = fetch
        self._parse = parse or (lambda raw: parse_tunables(raw, ceiling_rate_per_sec=ceiling_rate_per_sec))
        self._last_good = defaults

    def get(self) -> T:
        try:
            raw = self._fetch(self.parameter_name)
        except Exception as error:  # noqa: BLE001 - any read failure must fall back, not crash-loop
            logger.error(
                "could not read tunables; keeping the last good value",
                extra={"parameter": self.parameter_name, "error": repr(error), "in_force": _describe(self._last_good)},
            )
            return self._last_good
        try:
            result = self._parse(raw)
        except InvalidTunables as error:
            logger.error(
                "refused an invalid tunables document; keeping the last good value",
                extra={"parameter": self.parameter_name, "error": str(error), "value": str(raw)[:500],
                       "in_force": _describe(self._last_good)},
            )
            return self._last_good
        if result.clamped_fields:
            logger.warning(
                "tunables out of range were clamped",
                extra={"parameter": self.parameter_name, "clamped": list(result.clamped_fields),
                       "value": str(raw)[:500], "in_force": _describe(result.tunables)},
            )
        self._last_good = result.tunables
        return result.tunables


def powertools_ssm_fetch(max_age_sec: int = 5, boto3_client: Any = None) -> Callable[[str], str]:
    """A `fetch` for `TunablesReader` backed by Powertools' SSM provider and its cache."""
    from aws_lambda_powertools.utilities.parameters import SSMProvider

    provider = SSMProvider(boto3_client=boto3_client)

    def fetch(name: str) -> str:
        value = provider.get(name, max_age=max_age_sec)
        return value if isinstance(value, str) else json.dumps(value)

    return fetch


def defaults_from_environment(raw: str | None, fallback: DownstreamTunables) -> DownstreamTunables:
    """The deploy-time defaults a function carries in its environment; `fallback` if they are unusable."""
    if not raw:
        return fallback
    try:
        return parse_tunables(raw).tunables
    except InvalidTunables as error:
        logger.error("deploy-time tunables defaults are invalid; using built-in fallback",
                     extra={"error": str(error), "value": raw[:500]})
        return fallback


def _describe(value: Any) -> Any:
    return asdict(value) if hasattr(value, "__dataclass_fields__") else value


def _as_mapping(raw: str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    try:
        document = json.loads(raw)
    except (TypeError, ValueError) as error:
        raise InvalidTunables(f"the value is not JSON ({error}); expected e.g. "
                              f'{{"rate_per_sec": 10, "burst": 10, "max_concurrency": 2, "mode": "auto"}}') from None
    if not isinstance(document, Mapping):
        raise InvalidTunables(f"the value must be a JSON object, got {type(document).__name__}")
    return document


def _number(document: Mapping[str, Any], name: str) -> float:
    if name not in document:
        raise InvalidTunables(f"{name} is missing")
    value = document[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidTunables(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _integer(document: Mapping[str, Any], name: str) -> int:
    value = _number(document, name)
    if value != int(value):
        raise InvalidTunables(f"{name} must be a whole number, got {document[name]!r}")
    return int(value)


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)

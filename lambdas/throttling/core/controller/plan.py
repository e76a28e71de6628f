"""What the controller knows about each downstream: its plan (written by the CDK app) and its alarm routes.

The stack builds each `DownstreamPlan` and stores `to_document()` as one SSM parameter per
downstream; the controller reads them back with `from_document` (Lambda's 4 KB environment could
not hold them for more than a few downstreams).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from throttling.core.names import ALARM_BREAKER, ALARM_ERRORS, ALARM_ROUTE_KINDS
from throttling.core.controller.setting import Bounds

__all__ = [
    "ALARM_ROUTE_KINDS",
    "AlarmRoute",
    "DownstreamPlan",
    "Plans",
    "PlansUnavailable",
    "parse_alarm_routes",
    "parse_plan_documents",
    "parse_plans",
]

# An alarm route: a slow-down kind of the controller, or "breaker" (a sustained error rate: open
# the downstream's breaker, and slow down as for errors).


@dataclass(frozen=True)
class DownstreamPlan:
    """What the controller knows about one downstream (the CDK app hands it over as JSON).

    :param parameter_name: the tunables document, e.g. `/throttling/dev/downstreams/crm`.
    :param services: the Powertools services whose metrics (dimension `service`) count for it.
    :param bounds: where the controller may move its setting.
    :param contract_rate_per_sec: the downstream's contract: no rate read above it is believed.
    :param p99_latency_threshold_ms: a p99 above it slows down (aimd); None ignores latency.
    :param consumer_functions: functions whose SQS mappings follow its `max_concurrency`.
    :param map_run_workflows: state machines (ARNs) whose running Distributed Map runs follow its
        `max_concurrency` (their Map reads it from its tunables only when a run starts).
    :param breaker_parameter_name: its breaker's policy document (how long an alarm opens it for).
    :param alarms: alarm name -> what it means for this downstream (one of `ALARM_ROUTE_KINDS`).
    """

    name: str
    parameter_name: str
    services: tuple[str, ...]
    bounds: Bounds
    contract_rate_per_sec: float
    p99_latency_threshold_ms: float | None = None
    consumer_functions: tuple[str, ...] = ()
    map_run_workflows: tuple[str, ...] = ()
    breaker_parameter_name: str | None = None
    alarms: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_document(cls, name: str, raw: Mapping[str, Any]) -> DownstreamPlan:
        """The plan of downstream `name` from its JSON document; `ValueError` naming a bad or unknown field."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"downstream {name!r}: a plan must be a JSON object, got {type(raw).__name__}")
        known = {"parameter_name", "services", "bounds", "contract_rate_per_sec", "p99_latency_threshold_ms",
                 "consumer_functions", "map_run_workflows", "breaker_parameter_name", "alarms"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"downstream {name!r}: unknown plan fields {sorted(unknown)}; known: {sorted(known)}")
        services = tuple(raw.get("services", ()))
        if not services or not all(isinstance(s, str) and s for s in services):
            raise ValueError(f"downstream {name!r}: services must be a non-empty list of names, got {raw.get('services')!r}")
        return cls(
            name=name,
            parameter_name=str(raw["parameter_name"]),
            services=services,
            bounds=Bounds.from_document(raw["bounds"]),
            contract_rate_per_sec=float(raw["contract_rate_per_sec"]),
            p99_latency_threshold_ms=raw.get("p99_latency_threshold_ms"),
            consumer_functions=tuple(raw.get("consumer_functions", ())),
            map_run_workflows=_names(name, "map_run_workflows", raw.get("map_run_workflows", ())),
            breaker_parameter_name=raw.get("breaker_parameter_name"),
            alarms=_alarm_kinds(name, raw.get("alarms", {})),
        )

    def to_document(self) -> dict[str, Any]:
        """The JSON document `from_document` reads back (the name is the parameter's, not in it)."""
        return {
            "parameter_name": self.parameter_name,
            "breaker_parameter_name": self.breaker_parameter_name,
            "services": list(self.services),
            "bounds": self.bounds.to_document(),
            "contract_rate_per_sec": self.contract_rate_per_sec,
            "p99_latency_threshold_ms": self.p99_latency_threshold_ms,
            "consumer_functions": list(self.consumer_functions),
            "map_run_workflows": list(self.map_run_workflows),
            "alarms": dict(self.alarms),
        }


def _names(name: str, field_name: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, (list, tuple)) or not all(isinstance(item, str) and item for item in raw):
        raise ValueError(f"downstream {name!r}: {field_name} must be a list of non-empty names, got {raw!r}")
    return tuple(raw)


def _alarm_kinds(name: str, raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError(f"downstream {name!r}: alarms must map alarm names to kinds, got {raw!r}")
    for alarm, kind in raw.items():
        if kind not in ALARM_ROUTE_KINDS:
            raise ValueError(f"downstream {name!r}: alarm {alarm!r} has kind {kind!r}; kinds: {list(ALARM_ROUTE_KINDS)}")
    return dict(raw)


def parse_plans(raw: str) -> dict[str, DownstreamPlan]:
    """A JSON object of name -> plan (`ValueError` naming the bad field)."""
    document = json.loads(raw)
    if not isinstance(document, Mapping) or not document:
        raise ValueError(f"the downstream plans must be a non-empty JSON object, got {raw[:200]!r}")
    return {name: DownstreamPlan.from_document(name, plan) for name, plan in document.items()}


class PlansUnavailable(RuntimeError):
    """No usable plan was ever read: the controller has nothing to run on."""


@dataclass(frozen=True)
class AlarmRoute:
    """Which downstream an alarm speaks for, and what it means there."""

    downstream: str
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in ALARM_ROUTE_KINDS:
            raise ValueError(f"alarm route kind must be one of {list(ALARM_ROUTE_KINDS)}, got {self.kind!r}")

    @property
    def signal_kind(self) -> str:
        return ALARM_ERRORS if self.kind == ALARM_BREAKER else self.kind


@dataclass(frozen=True)
class Plans:
    """The plans in force, the alarm routes they declare, and the documents refused (name -> why)."""

    downstreams: Mapping[str, DownstreamPlan]
    refused: Mapping[str, str] = field(default_factory=dict)

    @property
    def alarms(self) -> dict[str, AlarmRoute]:
        """Alarm name -> route, from every plan (an alarm speaks for one downstream)."""
        return {alarm: AlarmRoute(plan.name, kind) for plan in self.downstreams.values()
                for alarm, kind in plan.alarms.items()}


def parse_plan_documents(documents: Mapping[str, str]) -> Plans:
    """The plan parameters (downstream name -> JSON text), each refused alone when it does not parse."""
    plans: dict[str, DownstreamPlan] = {}
    refused: dict[str, str] = {}
    for name, text in sorted(documents.items()):
        try:
            plans[name] = DownstreamPlan.from_document(name, json.loads(text))
        except (TypeError, ValueError, KeyError, RecursionError) as error:
            refused[name] = f"{type(error).__name__}: {error}"[:500]
    return Plans(plans, refused)


def parse_alarm_routes(raw: str) -> dict[str, AlarmRoute]:
    """The `CONTROLLER_ALARMS` JSON: alarm name -> {downstream, kind}."""
    document = json.loads(raw or "{}")
    return {name: AlarmRoute(**route) for name, route in document.items()}

"""The control loop's adapters and its one run: CloudWatch in, SSM tunables out, mappings reconciled.

What the controller knows about each downstream (its plan: where its tunables live, its bounds,
the services whose metrics count, the alarms routed to it) is one SSM parameter per downstream
that the CDK app writes under one path (`PlanReader`); Lambda's 4 KB environment could not hold
them for more than a few downstreams.

Per downstream, a run reads the tunables document (SSM is the source of truth: read every run,
so a redeploy or an operator's edit is adopted, never fought), the controller's state (DynamoDB,
one item per downstream) and one period of the callers' metrics (`GetMetricData`, one request for
every downstream), asks the pure `controller.decide`, and writes back only what changed:
`max_concurrency`, `rate_per_sec` and (with the rate) `burst`, keeping every other field of the
document. A document in `"mode": "manual"` is read and never written. Then the SQS event-source
mappings of the downstream's consumers get `MaximumConcurrency` from the document, since they
cannot read SSM themselves.

Why the state lives in DynamoDB and not in the tunables document: it changes every period (the
clean streak, the last period seen) while the setting rarely does. In the document, each run
would be a new parameter version, burying the decisions operators look for in the history (SSM
keeps 100), and SSM has no conditional write to keep it consistent. In DynamoDB the state is
written with a version condition, and a parameter version is a decision.

Clients are injected (boto3 is never imported here); time comes from the caller.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from throttling.controller import (
    ALARM_KINDS,
    AlarmSignal,
    Bounds,
    ControllerPolicy,
    ControllerState,
    Decision,
    PeriodMetrics,
    Setting,
    decide,
    evaluated_period,
)
from throttling.tunables import InvalidTunables, decode_document, parse_tunables

__all__ = [
    "ALARM_ROUTE_KINDS",
    "SQS_MINIMUM_CONCURRENCY",
    "AlarmRoute",
    "CloudWatchPeriodReader",
    "ControlLoop",
    "ControllerStateStore",
    "DownstreamPlan",
    "Plans",
    "PlanReader",
    "PlansUnavailable",
    "EventSourceMappingReconciler",
    "Outcome",
    "TunablesDocumentStore",
    "mapping_concurrency",
    "parse_alarm_routes",
    "parse_plan_documents",
    "parse_plans",
]

logger = logging.getLogger(__name__)

# Lambda refuses an SQS mapping's MaximumConcurrency below 2 (and above 1,000).
SQS_MINIMUM_CONCURRENCY = 2
SQS_MAXIMUM_CONCURRENCY = 1_000
# An alarm route: a slow-down kind of the controller, or "breaker" (a sustained error rate: open
# the downstream's breaker, and slow down as for errors).
ALARM_ROUTE_KINDS = (*ALARM_KINDS, "breaker")


@dataclass(frozen=True)
class DownstreamPlan:
    """What the controller knows about one downstream (the CDK app hands it over as JSON).

    :param parameter_name: the tunables document, e.g. `/throttling/dev/downstreams/crm`.
    :param services: the Powertools services whose metrics (dimension `service`) count for it.
    :param bounds: where the controller may move its setting.
    :param contract_rate_per_sec: the downstream's contract: no rate read above it is believed.
    :param p99_latency_threshold_ms: a p99 above it slows down (aimd); None ignores latency.
    :param consumer_functions: functions whose SQS mappings follow its `max_concurrency`.
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
    breaker_parameter_name: str | None = None
    alarms: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, name: str, raw: Mapping[str, Any]) -> DownstreamPlan:
        if not isinstance(raw, Mapping):
            raise ValueError(f"downstream {name!r}: a plan must be a JSON object, got {type(raw).__name__}")
        known = {"parameter_name", "services", "bounds", "contract_rate_per_sec", "p99_latency_threshold_ms",
                 "consumer_functions", "breaker_parameter_name", "alarms"}
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
            bounds=Bounds.from_mapping(raw["bounds"]),
            contract_rate_per_sec=float(raw["contract_rate_per_sec"]),
            p99_latency_threshold_ms=raw.get("p99_latency_threshold_ms"),
            consumer_functions=tuple(raw.get("consumer_functions", ())),
            breaker_parameter_name=raw.get("breaker_parameter_name"),
            alarms=_alarm_kinds(name, raw.get("alarms", {})),
        )


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
    return {name: DownstreamPlan.from_mapping(name, plan) for name, plan in document.items()}


class PlansUnavailable(RuntimeError):
    """No usable plan was ever read: the controller has nothing to run on."""


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
            plans[name] = DownstreamPlan.from_mapping(name, json.loads(text))
        except (TypeError, ValueError, KeyError, RecursionError) as error:
            refused[name] = f"{type(error).__name__}: {error}"[:500]
    return Plans(plans, refused)


class PlanReader:
    """Reads the plans under one SSM path; a bad read or document never costs the last good plans.

    `fetch(path)` returns downstream name -> parameter value for every parameter directly under the
    path; in Lambda it is Powertools' SSM provider (`get_multiple`, cached for a minute), injected
    so tests pass a plain function. A document that does not parse is refused and its downstream
    keeps its last good plan (or has none, and is reported); a failed read keeps every last good
    plan. With no plan ever read, `get` raises `PlansUnavailable`.
    """

    def __init__(self, path: str, fetch: Callable[[str], Mapping[str, str]]) -> None:
        self.path = path
        self._fetch = fetch
        self._last_good: dict[str, DownstreamPlan] = {}

    def get(self) -> Plans:
        try:
            documents = self._fetch(self.path)
        except Exception as error:  # noqa: BLE001 - any read failure falls back to the last good plans
            if not self._last_good:
                raise PlansUnavailable(f"could not read the controller's plans under {self.path}: {error!r}") from error
            logger.error("could not read the plans; keeping the last good ones",
                         extra={"path": self.path, "error": repr(error)})
            return Plans(dict(self._last_good))
        parsed = parse_plan_documents(documents)
        for name, why in parsed.refused.items():
            logger.error("refused a plan document; its last good plan stays in force",
                         extra={"path": f"{self.path}/{name}", "error": why, "kept": name in self._last_good})
        in_force = {**{n: p for n, p in self._last_good.items() if n in parsed.refused}, **parsed.downstreams}
        if not in_force:
            raise PlansUnavailable(f"no usable plan under {self.path}: found {sorted(documents) or 'none'};"
                                   f" refused {dict(parsed.refused)}")
        self._last_good = in_force
        return Plans(in_force, parsed.refused)


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
        return "errors" if self.kind == "breaker" else self.kind


def parse_alarm_routes(raw: str) -> dict[str, AlarmRoute]:
    """The `CONTROLLER_ALARMS` JSON: alarm name -> {downstream, kind}."""
    document = json.loads(raw or "{}")
    return {name: AlarmRoute(**route) for name, route in document.items()}


def mapping_concurrency(max_concurrency: int, reserved_concurrency: int | None) -> int:
    """The `MaximumConcurrency` an SQS mapping gets for a downstream's `max_concurrency`.

    Never below Lambda's minimum of 2, and never above the function's reserved concurrency: a
    mapping allowed more than the function may run gets throttled invocations, whose batches go
    back to the queue with a receive spent, and healthy messages end in the dead-letter queue.
    """
    desired = max(SQS_MINIMUM_CONCURRENCY, min(max_concurrency, SQS_MAXIMUM_CONCURRENCY))
    if reserved_concurrency is not None:
        desired = min(desired, max(SQS_MINIMUM_CONCURRENCY, reserved_concurrency))
    return desired


# -- CloudWatch ----------------------------------------------------------------------------------

_SUMS = {
    "calls": "DownstreamCalls",
    "throttled": "DownstreamThrottled",
    "server_errors": "DownstreamUnavailable",
    "limiter_refused": "RateLimited",
    "down": "DownstreamDown",
}
_LATENCY = "DownstreamLatency"
_LATENCY_STATS = {"p50": "p50", "p99": "p99", "mean": "Average", "samples": "SampleCount"}


class CloudWatchPeriodReader:
    """One period of every downstream's caller metrics, in one `GetMetricData` request.

    The callers publish Powertools EMF metrics (namespace `Throttling`, dimensions `service` and
    `Downstream`); a downstream called by several services is the sum of their counts. Across
    services the p99 is the largest (conservative) and the median and mean are weighted by each
    service's number of samples (the median so only approximately: CloudWatch cannot merge
    percentiles of separate metrics).
    """

    def __init__(self, client: Any, namespace: str = "Throttling") -> None:
        self._client = client
        self.namespace = namespace

    def read(self, plans: Sequence[DownstreamPlan], start: float, end: float) -> dict[str, PeriodMetrics | None]:
        period_sec = int(end - start)
        queries: list[dict[str, Any]] = []
        keys: dict[str, tuple[str, str, str]] = {}
        for plan in plans:
            for service in plan.services:
                stats = [(field_name, metric, "Sum") for field_name, metric in _SUMS.items()]
                stats += [(field_name, _LATENCY, stat) for field_name, stat in _LATENCY_STATS.items()]
                for field_name, metric, stat in stats:
                    query_id = f"q{len(queries)}"
                    keys[query_id] = (plan.name, service, field_name)
                    queries.append({
                        "Id": query_id,
                        "MetricStat": {
                            "Metric": {
                                "Namespace": self.namespace,
                                "MetricName": metric,
                                "Dimensions": [{"Name": "Downstream", "Value": plan.name},
                                               {"Name": "service", "Value": service}],
                            },
                            "Period": period_sec,
                            "Stat": stat,
                        },
                        "ReturnData": True,
                    })
        values: dict[tuple[str, str, str], float] = {}
        for chunk in range(0, len(queries), 500):
            kwargs: dict[str, Any] = {
                "MetricDataQueries": queries[chunk : chunk + 500],
                "StartTime": _utc(start),
                "EndTime": _utc(end),
                "ScanBy": "TimestampAscending",
            }
            while True:
                response = self._client.get_metric_data(**kwargs)
                for result in response.get("MetricDataResults", []):
                    datapoints = [float(v) for v in result.get("Values", []) if v is not None]
                    if datapoints:
                        key = keys[result["Id"]]
                        # One period asked for, so one datapoint; a sum keeps counts right if CloudWatch splits it.
                        values[key] = sum(datapoints) if key[2] in _SUMS or key[2] == "samples" else datapoints[0]
                token = response.get("NextToken")
                if not token:
                    break
                kwargs["NextToken"] = token
        return {plan.name: _combine(plan, values, float(period_sec)) for plan in plans}


def _combine(plan: DownstreamPlan, values: Mapping[tuple[str, str, str], float], period_sec: float) -> PeriodMetrics | None:
    def total(field_name: str) -> float | None:
        found = [values[(plan.name, s, field_name)] for s in plan.services if (plan.name, s, field_name) in values]
        return sum(found) if found else None

    calls = total("calls")
    if calls is None:
        return None
    down = total("down") or 0.0
    weighted: dict[str, float] = {}
    weights: dict[str, float] = {}
    p99: float | None = None
    for service in plan.services:
        samples = values.get((plan.name, service, "samples"), 1.0)
        for field_name in ("p50", "mean"):
            value = values.get((plan.name, service, field_name))
            if value is not None:
                weighted[field_name] = weighted.get(field_name, 0.0) + value * samples
                weights[field_name] = weights.get(field_name, 0.0) + samples
        value = values.get((plan.name, service, "p99"))
        if value is not None:
            p99 = value if p99 is None else max(p99, value)
    return PeriodMetrics(
        calls=calls,
        throttled=total("throttled") or 0.0,
        # The callers count a "down" answer as `DownstreamUnavailable` too; the controller wants them apart.
        server_errors=max(0.0, (total("server_errors") or 0.0) - down),
        limiter_refused=total("limiter_refused") or 0.0,
        down=down,
        latency_p50_ms=weighted["p50"] / weights["p50"] if weights.get("p50") else None,
        latency_p99_ms=p99,
        latency_mean_ms=weighted["mean"] / weights["mean"] if weights.get("mean") else None,
        period_sec=period_sec,
    )


# -- SSM -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TunablesDocument:
    name: str
    document: dict[str, Any]
    version: int


class TunablesDocumentStore:
    """Reads a tunables document whole and writes it back whole, with only the controller's fields changed."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def read(self, name: str) -> TunablesDocument:
        """The document and its version; `InvalidTunables` when the value is not a usable JSON object."""
        parameter = self._client.get_parameter(Name=name)["Parameter"]
        document = decode_document(parameter["Value"])
        if not isinstance(document, dict):
            raise InvalidTunables(f"the value must be a JSON object, got {type(document).__name__}")
        return TunablesDocument(name, document, int(parameter["Version"]))

    def write(self, read: TunablesDocument, changes: Mapping[str, Any]) -> bool:
        """Write `changes` over the document read, unless someone wrote it meanwhile (then False).

        SSM has no conditional write: the version is checked again just before the write, which
        leaves a window of one request in which an operator's edit could still be overwritten.
        """
        latest = self._client.get_parameter(Name=read.name)["Parameter"]
        if int(latest["Version"]) != read.version:
            return False
        document = {**read.document, **changes}
        self._client.put_parameter(Name=read.name, Value=json.dumps(document, sort_keys=True), Type="String",
                                   Overwrite=True)
        return True


# -- DynamoDB ------------------------------------------------------------------------------------


class ControllerStateStore:
    """One item per downstream (`pk`), with a `version` every write checks (a lost race skips the write)."""

    def __init__(self, table_name: str, client: Any) -> None:
        self.table_name = table_name
        self._client = client

    def load(self, downstream: str) -> tuple[ControllerState, int | None]:
        item = self._client.get_item(TableName=self.table_name, Key={"pk": {"S": downstream}},
                                     ConsistentRead=True).get("Item")
        if item is None:
            return ControllerState(), None
        plain = {key: Decimal(value["N"]) for key, value in item.items() if "N" in value}
        return ControllerState.from_item(plain), int(plain.get("version", 0))

    def save(self, downstream: str, state: ControllerState, version: int | None, now: float) -> bool:
        item = {"pk": {"S": downstream}, "version": {"N": str((version or 0) + 1)},
                "updated_at": {"S": _utc(now).isoformat(timespec="seconds")}}
        for key, value in state.to_item().items():
            item[key] = {"N": _number(value)}
        kwargs: dict[str, Any] = {"TableName": self.table_name, "Item": item}
        if version is None:
            kwargs["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            kwargs["ConditionExpression"] = "#version = :version"
            kwargs["ExpressionAttributeNames"] = {"#version": "version"}
            kwargs["ExpressionAttributeValues"] = {":version": {"N": str(version)}}
        try:
            self._client.put_item(**kwargs)
        except Exception as error:  # noqa: BLE001 - botocore's ClientError, told apart by its code
            if getattr(error, "response", {}).get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True


# -- Lambda --------------------------------------------------------------------------------------


class EventSourceMappingReconciler:
    """Sets `ScalingConfig.MaximumConcurrency` of a function's SQS mappings from the tunables."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def reconcile(self, function_name: str, max_concurrency: int) -> list[dict[str, Any]]:
        """The changes made: `[{"uuid", "from", "to"}]` (empty when every mapping already agrees)."""
        reserved = self._client.get_function_concurrency(FunctionName=function_name).get(
            "ReservedConcurrentExecutions")
        desired = mapping_concurrency(max_concurrency, reserved)
        changes = []
        for mapping in self._mappings(function_name):
            if ":sqs:" not in str(mapping.get("EventSourceArn", "")):
                continue  # only SQS mappings have a MaximumConcurrency
            current = (mapping.get("ScalingConfig") or {}).get("MaximumConcurrency")
            if current == desired:
                continue
            self._client.update_event_source_mapping(UUID=mapping["UUID"], ScalingConfig={"MaximumConcurrency": desired})
            changes.append({"uuid": mapping["UUID"], "function": function_name, "from": current, "to": desired,
                            "reserved_concurrency": reserved})
        return changes

    def _mappings(self, function_name: str) -> list[dict[str, Any]]:
        mappings: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"FunctionName": function_name}
        while True:
            response = self._client.list_event_source_mappings(**kwargs)
            mappings += response.get("EventSourceMappings", [])
            if not response.get("NextMarker"):
                return mappings
            kwargs["Marker"] = response["NextMarker"]


# -- one run ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a run did for one downstream (logged, and emitted as metrics by the handler)."""

    downstream: str
    action: str
    reason: str
    mode: str | None = None
    previous: Setting | None = None
    setting: Setting | None = None
    written: bool = False
    mapping_changes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "downstream": self.downstream,
            "action": self.action,
            "reason": self.reason,
            "mode": self.mode,
            "written": self.written,
            "max_concurrency": None if self.setting is None else self.setting.max_concurrency,
            "rate_per_sec": None if self.setting is None else self.setting.rate_per_sec,
            "previous": None if self.previous is None else {"max_concurrency": self.previous.max_concurrency,
                                                            "rate_per_sec": self.previous.rate_per_sec},
            "mapping_changes": self.mapping_changes,
            "error": self.error,
        }


class ControlLoop:
    """One controller run over some or all downstreams; each downstream fails alone.

    :param period_sec: the period the controller judges (default one minute).
    :param metrics_delay_sec: how long after its end a period's metrics count as complete.
    """

    def __init__(
        self,
        *,
        plans: Mapping[str, DownstreamPlan],
        policy: ControllerPolicy,
        metrics: CloudWatchPeriodReader,
        tunables: TunablesDocumentStore,
        states: ControllerStateStore,
        mappings: EventSourceMappingReconciler | None = None,
        period_sec: float = 60.0,
        metrics_delay_sec: float = 30.0,
    ) -> None:
        self.plans = dict(plans)
        self.policy = policy
        self._metrics = metrics
        self._tunables = tunables
        self._states = states
        self._mappings = mappings
        self.period_sec = period_sec
        self.metrics_delay_sec = metrics_delay_sec

    def run(
        self,
        now: float,
        *,
        only: Sequence[str] | None = None,
        alarms: Mapping[str, Sequence[AlarmSignal]] | None = None,
    ) -> list[Outcome]:
        names = list(only) if only is not None else list(self.plans)
        unknown = [name for name in names if name not in self.plans]
        if unknown:
            raise ValueError(f"no plan for downstreams {unknown}; known: {sorted(self.plans)}")
        start, end = evaluated_period(now, self.period_sec, self.metrics_delay_sec)
        try:
            period = self._metrics.read([self.plans[name] for name in names], start, end)
        except Exception as error:  # noqa: BLE001 - without metrics the controller can still reconcile and hold
            logger.exception("could not read the period's metrics; every downstream holds")
            period = {name: None for name in names}
            metrics_error = repr(error)
        else:
            metrics_error = None
        outcomes = []
        for name in names:
            try:
                outcome = self._run_one(self.plans[name], period.get(name), now, end, (alarms or {}).get(name, ()))
            except Exception as error:  # noqa: BLE001 - one downstream's failure must not stop the others
                logger.exception("controller run failed for %s", name)
                outcome = Outcome(name, "error", f"failed: {error!r}", error=repr(error))
            if metrics_error and outcome.error is None:
                outcome.error = f"metrics unavailable: {metrics_error}"
            outcomes.append(outcome)
        return outcomes

    def _run_one(
        self, plan: DownstreamPlan, metrics: PeriodMetrics | None, now: float, period_end: float,
        alarms: Sequence[AlarmSignal],
    ) -> Outcome:
        try:
            read = self._tunables.read(plan.parameter_name)
            parsed = parse_tunables(read.document, ceiling_rate_per_sec=plan.contract_rate_per_sec).tunables
        except (InvalidTunables, ValueError) as error:
            # An operator's broken document is theirs to fix; the callers keep their last good value.
            return Outcome(plan.name, "error", f"refused the tunables document: {error}", error=str(error))
        current = Setting(parsed.max_concurrency, parsed.rate_per_sec)
        if parsed.mode == "manual":
            outcome = Outcome(plan.name, "hold", "hold: mode manual (pinned by an operator)", mode="manual",
                              previous=current, setting=current)
        else:
            outcome = self._decide(plan, read, current, metrics, now, period_end, alarms)
        if self._mappings is not None and outcome.setting is not None:
            for function_name in plan.consumer_functions:
                outcome.mapping_changes += self._mappings.reconcile(function_name, outcome.setting.max_concurrency)
        return outcome

    def _decide(
        self, plan: DownstreamPlan, read: Any, current: Setting, metrics: PeriodMetrics | None, now: float,
        period_end: float, alarms: Sequence[AlarmSignal],
    ) -> Outcome:
        state, version = self._states.load(plan.name)
        policy = self.policy
        if plan.p99_latency_threshold_ms is not None:
            policy = _with_p99(policy, plan.p99_latency_threshold_ms)
        decision: Decision = decide(metrics, current, plan.bounds, state, policy, now=now, period_end=period_end,
                                    alarms=alarms)
        outcome = Outcome(plan.name, decision.action, decision.reason, mode="auto", previous=current,
                          setting=decision.setting)
        if decision.changed:
            changes: dict[str, Any] = {"max_concurrency": decision.setting.max_concurrency,
                                       "rate_per_sec": decision.setting.rate_per_sec}
            burst = plan.bounds.burst_for(decision.setting.rate_per_sec)
            if burst is not None and decision.setting.rate_per_sec != current.rate_per_sec:
                changes["burst"] = burst
            if not self._tunables.write(read, changes):
                # Someone wrote the document while we decided: theirs wins, we decide again next period.
                return Outcome(plan.name, "hold", "hold: the document changed while deciding; it is adopted next run",
                               mode="auto", previous=current, setting=current)
            outcome.written = True
        if not self._states.save(plan.name, decision.state, version, now):
            logger.warning("controller state of %s changed meanwhile; this run's state is dropped", plan.name)
        return outcome


def _with_p99(policy: ControllerPolicy, threshold_ms: float) -> ControllerPolicy:
    return dataclasses.replace(policy, p99_latency_threshold_ms=threshold_ms)


def _utc(epoch_sec: float) -> datetime:
    return datetime.fromtimestamp(epoch_sec, tz=timezone.utc)


def _number(value: float | int) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"cannot store {value!r} as a DynamoDB number")
    return str(value) if isinstance(value, int) else format(Decimal(repr(value)), "f")

"""The controller: every minute, and on each slow-down alarm, retune the downstreams' limits in SSM.

Events:
- the schedule's `Scheduled Event` (every minute): every downstream, on the period its metrics are
  complete for;
- a `CloudWatch Alarm State Change` (`detail.alarmName`, `detail.state.value`) of an alarm a plan
  routes to its downstream: that downstream only. In ALARM it slows down at once (cooldown
  permitting); a sustained error-rate alarm ("breaker") also opens the downstream's circuit
  breaker. Back to OK, the downstream is simply re-evaluated.

The plans (one SSM parameter per downstream under `CONTROLLER_PLANS_PATH`, written by the stack)
are read with a short cache; a plan document that does not parse is refused and reported, and
its downstream keeps its last good plan.

One run at a time decides: each run holds a lease (the `throttling-controller` semaphore of the
shared semaphores table, for at most its remaining time) while it reads and writes. A run that
cannot get it within `CONTROLLER_LEASE_WAIT_SEC`: a schedule's skips (the next minute judges), an
alarm's fails, so Lambda delivers the alarm again. Reserved concurrency 1 does the same where the
account has concurrency to reserve; the lease holds without it.

The event's `time` is the time the controller judges at (a late or retried delivery judges the
period it was meant for, and a period is never counted twice); a `time` more than
`MAX_EVENT_AGE_SEC` from the clock is not believed. Answer: one summary per downstream. Every
change is logged with its reason and emitted as metrics (`ControllerIncreases`,
`ControllerDecreases`, with the reason as metadata; `MappingConcurrencyReconciled` and
`MapRunConcurrencyRetuned` for SQS mappings and running Map Runs set to the document's
`max_concurrency`), with the setting in force
(`ControllerMaxConcurrency`, `ControllerRatePerSec`) and each breaker's state (`BreakerOpen`).
A downstream the run could not handle fails the invocation at the end (after the others ran),
so the function's Errors metric tells an operator.

The clients, adapters and settings are built by `build_dependencies(environ, ...)` on the first
invocation (and once per environment), never at import; tests build them with their own clients
and call `handle`.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parameters import SSMProvider
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from throttling.adapters.cloudwatch_period_reader import CloudWatchPeriodReader
from throttling.adapters.dynamodb_circuit_breaker import DynamoDbCircuitBreaker
from throttling.adapters.dynamodb_controller_state import ControllerStateStore
from throttling.adapters.dynamodb_semaphore import DynamoDbSemaphore
from throttling.adapters.lambda_event_source_mappings import EventSourceMappingReconciler
from throttling.adapters.ssm_controller_parameters import PlanReader, TunablesDocumentStore
from throttling.adapters.stepfunctions_map_runs import MapRunReconciler
from throttling.core import names, planning
from throttling.core.circuit_breaker import BreakerPolicy, BreakerStatus
from throttling.core.clock import Clock, SystemClock
from throttling.core.controller import AlarmSignal, ControllerPolicy
from throttling.core.controller.plan import Plans
from throttling.core.tunables import InvalidTunables, parse_breaker_policy
from throttling.runtime.control_loop import ControlLoop, Outcome

if TYPE_CHECKING:
    from types_boto3_cloudwatch import CloudWatchClient
    from types_boto3_dynamodb import DynamoDBClient
    from types_boto3_lambda import LambdaClient
    from types_boto3_ssm import SSMClient
    from types_boto3_stepfunctions import SFNClient

ALARM_EVENT = "CloudWatch Alarm State Change"
LEASE_NAME = "throttling-controller"
LEASE_POLL_SEC = 0.5
# The environment variables the dependencies are built from (the stack sets them).
ENVIRONMENT_KEYS = (
    names.ENV_CONTROLLER_PLANS_PATH, names.ENV_CONTROLLER_PLANS_CACHE_SEC, names.ENV_CONTROLLER_POLICY,
    names.ENV_CONTROLLER_STATE_TABLE_NAME, names.ENV_BREAKER_TABLE_NAME, names.ENV_SEMAPHORE_TABLE_NAME,
    "CONTROLLER_LEASE_WAIT_SEC", names.ENV_PERIOD_SEC, names.ENV_METRICS_DELAY_SEC, "MAX_EVENT_AGE_SEC",
    names.ENV_POWERTOOLS_METRICS_NAMESPACE, names.ENV_POWERTOOLS_SERVICE_NAME,
)

logger = Logger()
# Patches boto3 and http.client, so every AWS call and every downstream call is a subsegment of the trace.
tracer = Tracer()


class ControlLoopFailed(Exception):
    """Some downstreams could not be handled this run (the others were); the message lists them."""


class ControllerBusy(Exception):
    """Another run held the controller's lease for longer than an alarm's run waits: deliver the alarm again."""


@dataclass(frozen=True)
class Dependencies:
    """What a controller run works with, built once per environment by `build_dependencies`."""

    plans: PlanReader
    policy: ControllerPolicy
    metrics_reader: CloudWatchPeriodReader
    tunables: TunablesDocumentStore
    states: ControllerStateStore
    mappings: EventSourceMappingReconciler
    map_runs: MapRunReconciler
    lease: DynamoDbSemaphore
    metrics: Metrics
    ssm: SSMClient
    dynamodb: DynamoDBClient
    clock: Clock
    breaker_table_name: str
    period_sec: float = 60.0
    metrics_delay_sec: float = 30.0
    lease_wait_sec: float = 10.0
    max_event_age_sec: float = 600.0

    def control_loop(self, in_force: Plans) -> ControlLoop:
        """This run's loop over the plans in force (cheap: the clients and readers are built once)."""
        return ControlLoop(plans=in_force.downstreams, policy=self.policy, metrics=self.metrics_reader,
                           tunables=self.tunables, states=self.states, mappings=self.mappings,
                           map_runs=self.map_runs, period_sec=self.period_sec, metrics_delay_sec=self.metrics_delay_sec)


def build_dependencies(
    environ: Mapping[str, str],
    *,
    ssm: SSMClient | None = None,
    dynamodb: DynamoDBClient | None = None,
    cloudwatch: CloudWatchClient | None = None,
    lambda_client: LambdaClient | None = None,
    stepfunctions: SFNClient | None = None,
    clock: Clock | None = None,
) -> Dependencies:
    """The controller's clients, adapters and settings from `environ` (the stack's environment variables).

    A client left out is built with boto3's defaults; `clock` defaults to the system clock.
    `KeyError` names a missing variable, `ValueError` a bad policy document.
    """
    ssm = ssm or boto3.client("ssm")
    dynamodb = dynamodb or boto3.client("dynamodb")
    clock = clock or SystemClock()
    namespace = environ.get(names.ENV_POWERTOOLS_METRICS_NAMESPACE, names.METRICS_NAMESPACE)
    fetch = functools.partial(SSMProvider(boto3_client=ssm).get_multiple,
                              max_age=int(environ.get(names.ENV_CONTROLLER_PLANS_CACHE_SEC, "60")))
    return Dependencies(
        plans=PlanReader(environ[names.ENV_CONTROLLER_PLANS_PATH], fetch=fetch),
        policy=ControllerPolicy.from_document(json.loads(environ.get(names.ENV_CONTROLLER_POLICY, "{}"))),
        metrics_reader=CloudWatchPeriodReader(cloudwatch or boto3.client("cloudwatch"), namespace=namespace),
        tunables=TunablesDocumentStore(ssm),
        states=ControllerStateStore(environ[names.ENV_CONTROLLER_STATE_TABLE_NAME], dynamodb),
        mappings=EventSourceMappingReconciler(lambda_client or boto3.client("lambda")),
        map_runs=MapRunReconciler(stepfunctions or boto3.client("stepfunctions")),
        lease=DynamoDbSemaphore(environ[names.ENV_SEMAPHORE_TABLE_NAME], client=dynamodb, clock=clock),
        metrics=Metrics(namespace=namespace, service=environ.get(names.ENV_POWERTOOLS_SERVICE_NAME)),
        ssm=ssm,
        dynamodb=dynamodb,
        clock=clock,
        breaker_table_name=environ[names.ENV_BREAKER_TABLE_NAME],
        period_sec=float(environ.get(names.ENV_PERIOD_SEC, planning.DEFAULT_PERIOD_SEC)),
        metrics_delay_sec=float(environ.get(names.ENV_METRICS_DELAY_SEC, planning.DEFAULT_METRICS_DELAY_SEC)),
        lease_wait_sec=float(environ.get("CONTROLLER_LEASE_WAIT_SEC", "10")),
        max_event_age_sec=float(environ.get("MAX_EVENT_AGE_SEC", "600")),
    )


@functools.cache
def _dependencies_for(environment: tuple[tuple[str, str], ...]) -> Dependencies:
    return build_dependencies(dict(environment))


def dependencies() -> Dependencies:
    """The dependencies of this execution environment, built on first use from its environment variables."""
    return _dependencies_for(tuple((key, os.environ[key]) for key in ENVIRONMENT_KEYS if key in os.environ))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, context, dependencies())


def handle(event: dict[str, Any], context: LambdaContext, deps: Dependencies) -> dict[str, Any]:
    """One invocation: take the one-writer lease, run, give the lease back."""
    owner = context.aws_request_id
    if not take_lease(deps, owner, context.get_remaining_time_in_millis() / 1000):
        if event.get("detail-type") == ALARM_EVENT:
            raise ControllerBusy(f"another controller run held the lease for {deps.lease_wait_sec:g} s")
        logger.info("skipped: another controller run holds the lease; the next minute judges")
        return {"skipped": "another controller run holds the lease"}
    try:
        return run(event, deps)
    finally:
        deps.lease.release(LEASE_NAME, owner)


def take_lease(deps: Dependencies, owner: str, remaining_sec: float) -> bool:
    """Hold the one-writer lease until this invocation would time out; wait up to the lease wait for it."""
    deadline = time.monotonic() + deps.lease_wait_sec
    while True:
        if deps.lease.acquire(LEASE_NAME, owner, limit=1, lease_sec=max(1.0, remaining_sec)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(LEASE_POLL_SEC)


def run(event: dict[str, Any], deps: Dependencies) -> dict[str, Any]:
    now = judged_at(event, deps.clock.now(), deps.max_event_age_sec)
    in_force = deps.plans.get()
    loop = deps.control_loop(in_force)
    breaker_opened = None
    if event.get("detail-type") == ALARM_EVENT:
        detail = event.get("detail") or {}
        name = str(detail.get("alarmName", ""))
        state = str((detail.get("state") or {}).get("value", ""))
        route = in_force.alarms.get(name)
        if route is None:
            logger.warning("ignored the state change of an alarm the controller does not route",
                           extra={"alarm": name, "state": state})
            return {"ignored_alarm": name}
        logger.info("alarm state change", extra={"alarm": name, "state": state, "downstream": route.downstream,
                                                 "kind": route.kind})
        signals = {}
        if state == "ALARM":
            signals = {route.downstream: [AlarmSignal(name, route.signal_kind)]}
            if route.kind == names.ALARM_BREAKER:
                reason = f"alarm {name}: {(detail.get('state') or {}).get('reason', 'in ALARM')}"[:500]
                breaker_opened = open_breaker(deps, in_force, route.downstream, reason)
        outcomes = loop.run(now, only=[route.downstream], alarms=signals)
    else:
        outcomes = loop.run(now)

    for outcome in outcomes:
        report(deps, outcome)
    failed = [o.summary() for o in outcomes if o.error]
    failed += [{"downstream": name, "action": "error", "error": f"refused its plan document: {why}"}
               for name, why in in_force.refused.items()]
    if failed:
        raise ControlLoopFailed(json.dumps(failed, default=str))
    return {"judged_at": now, "breaker_opened": breaker_opened, "decisions": [o.summary() for o in outcomes]}


def judged_at(event: dict[str, Any], now: float, max_event_age_sec: float = 600.0) -> float:
    """The event's `time` (what a schedule or an alarm meant), unless it is too far from the clock."""
    raw = event.get("time")
    if not isinstance(raw, str):
        return now
    try:
        meant = datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        logger.warning("event time is not ISO 8601; judging at the clock", extra={"time": raw})
        return now
    if abs(meant - now) > max_event_age_sec:
        logger.warning("event time too far from the clock; judging at the clock",
                       extra={"time": raw, "skew_sec": round(meant - now, 1)})
        return now
    return meant


def open_breaker(deps: Dependencies, in_force: Plans, downstream: str, reason: str) -> dict[str, Any]:
    """Force the downstream's breaker open for its policy's open duration (recovery: half-open probes)."""
    policy = breaker_policy(deps, in_force.downstreams[downstream].breaker_parameter_name)
    breaker = DynamoDbCircuitBreaker(deps.breaker_table_name, client=deps.dynamodb, policy=policy, clock=deps.clock)
    breaker.force_open(downstream, reason)
    state = breaker.state(downstream)
    logger.warning("opened the circuit breaker", extra={"downstream": downstream, "reason": reason,
                                                        "open_until": state.open_until})
    deps.metrics.add_dimension(name=names.DOWNSTREAM_DIMENSION, value=downstream)
    deps.metrics.add_metric(name="BreakerForcedOpen", unit=MetricUnit.Count, value=1)
    deps.metrics.add_metadata(key="reason", value=reason)
    deps.metrics.flush_metrics()
    return {"downstream": downstream, "status": state.status.value, "open_until": state.open_until, "reason": reason}


def breaker_policy(deps: Dependencies, name: str | None) -> BreakerPolicy:
    if not name:
        return BreakerPolicy()
    try:
        return parse_breaker_policy(deps.ssm.get_parameter(Name=name)["Parameter"]["Value"]).tunables
    except (InvalidTunables, ClientError, BotoCoreError) as error:  # an unreadable policy must not keep the breaker shut
        logger.error("could not read the breaker policy; opening with the defaults",
                     extra={"parameter": name, "error": repr(error)})
        return BreakerPolicy()


def report(deps: Dependencies, outcome: Outcome) -> None:
    """One log line and one EMF document per downstream (dimension Downstream, the reason as metadata)."""
    summary = outcome.summary()
    if outcome.error:
        logger.error("controller could not handle the downstream", extra=summary)
    elif outcome.written or outcome.mapping_changes or outcome.map_run_changes:
        logger.warning("controller changed the limits", extra=summary)
    else:
        logger.info("controller held the limits", extra=summary)

    deps.metrics.add_dimension(name=names.DOWNSTREAM_DIMENSION, value=outcome.downstream)
    if outcome.setting is not None:
        deps.metrics.add_metric(name=names.CONTROLLER_MAX_CONCURRENCY, unit=MetricUnit.Count,
                                value=outcome.setting.max_concurrency)
        deps.metrics.add_metric(name=names.CONTROLLER_RATE_PER_SEC, unit=MetricUnit.CountPerSecond,
                                value=outcome.setting.rate_per_sec)
    deps.metrics.add_metric(name=names.CONTROLLER_INCREASES, unit=MetricUnit.Count,
                            value=1 if outcome.written and outcome.action == "increase" else 0)
    deps.metrics.add_metric(name=names.CONTROLLER_DECREASES, unit=MetricUnit.Count,
                       value=1 if outcome.written and outcome.action in ("decrease", "clamp") else 0)
    if outcome.mapping_changes:
        deps.metrics.add_metric(name="MappingConcurrencyReconciled", unit=MetricUnit.Count,
                           value=len(outcome.mapping_changes))
    if outcome.map_run_changes:
        deps.metrics.add_metric(name="MapRunConcurrencyRetuned", unit=MetricUnit.Count,
                                value=len(outcome.map_run_changes))
    if outcome.error:
        deps.metrics.add_metric(name="ControllerErrors", unit=MetricUnit.Count, value=1)
    breaker_open = breaker_is_open(deps, outcome.downstream)
    if breaker_open is not None:
        deps.metrics.add_metric(name=names.BREAKER_OPEN, unit=MetricUnit.Count, value=1 if breaker_open else 0)
    deps.metrics.add_metadata(key="action", value=outcome.action)
    deps.metrics.add_metadata(key="reason", value=outcome.reason)
    deps.metrics.flush_metrics()


def breaker_is_open(deps: Dependencies, downstream: str) -> bool | None:
    """Whether the downstream's breaker refuses calls now (open or half-open); None if unreadable."""
    try:
        breaker = DynamoDbCircuitBreaker(deps.breaker_table_name, client=deps.dynamodb, policy=BreakerPolicy(),
                                         clock=deps.clock)
        state = breaker.state(downstream)
    except (ClientError, BotoCoreError):  # a gauge is not worth failing the run
        logger.warning("could not read the breaker state", extra={"downstream": downstream}, exc_info=True)
        return None
    if state.status is BreakerStatus.OPEN:
        # Past open_until the item still says open, but the next caller probes (half-open).
        return state.open_until is None or state.open_until > deps.clock.now()
    return state.status is BreakerStatus.HALF_OPEN

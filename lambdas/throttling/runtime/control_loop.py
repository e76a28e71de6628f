"""The control loop's one run: CloudWatch in, the pure controller, SSM tunables out, mappings reconciled.

Per downstream, a run reads the tunables document (SSM is the source of truth: read every run,
so a redeploy or an operator's edit is adopted, never fought), the controller's state (DynamoDB,
one item per downstream) and one period of the callers' metrics (`GetMetricData`, one request for
every downstream), asks the pure `decide`, and writes back only what changed: `max_concurrency`,
`rate_per_sec` and (with the rate) `burst`, keeping every other field of the document. A document
in `"mode": "manual"` is read and never written. Then the SQS event-source mappings of the
downstream's consumers get `MaximumConcurrency` from the document, since they cannot read SSM
themselves, and the running Distributed Map runs of its workflows get `maxConcurrency` from it
(`UpdateMapRun`), since a Map reads its concurrency only when its run starts. Both follow the
document every run (an operator's edit too), not only the controller's own changes.

The adapters are injected (`throttling.adapters`); time comes from the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from throttling.adapters.cloudwatch_period_reader import CloudWatchPeriodReader, MetricsUnavailable
from throttling.adapters.dynamodb_controller_state import ControllerStateStore
from throttling.adapters.lambda_event_source_mappings import EventSourceMappingReconciler
from throttling.adapters.ssm_controller_parameters import TunablesDocument, TunablesDocumentStore
from throttling.adapters.stepfunctions_map_runs import MapRunReconciler, MapRunsUnavailable
from throttling.core import names, planning
from throttling.core.controller import AlarmSignal, ControllerPolicy, PeriodMetrics, Setting, decide, evaluated_period
from throttling.core.controller.plan import DownstreamPlan
from throttling.core.tunables import InvalidTunables, parse_tunables

__all__ = ["ControlLoop", "Outcome"]

logger = logging.getLogger(__name__)


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
    map_run_changes: list[dict[str, Any]] = field(default_factory=list)
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
            "map_run_changes": self.map_run_changes,
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
        map_runs: MapRunReconciler | None = None,
        period_sec: float = float(planning.DEFAULT_PERIOD_SEC),
        metrics_delay_sec: float = float(planning.DEFAULT_METRICS_DELAY_SEC),
    ) -> None:
        self.plans = dict(plans)
        self.policy = policy
        self._metrics = metrics
        self._tunables = tunables
        self._states = states
        self._mappings = mappings
        self._map_runs = map_runs
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
        except MetricsUnavailable as error:  # without metrics the controller can still reconcile and hold
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
        if parsed.mode == names.TUNABLES_MODE_MANUAL:
            outcome = Outcome(plan.name, "hold", "hold: mode manual (pinned by an operator)", mode=parsed.mode,
                              previous=current, setting=current)
        else:
            outcome = self._decide(plan, read, current, metrics, now, period_end, alarms)
        if self._mappings is not None and outcome.setting is not None:
            for function_name in plan.consumer_functions:
                outcome.mapping_changes += self._mappings.reconcile(function_name, outcome.setting.max_concurrency)
        if self._map_runs is not None and outcome.setting is not None:
            for state_machine_arn in plan.map_run_workflows:
                try:
                    outcome.map_run_changes += self._map_runs.reconcile(state_machine_arn,
                                                                        outcome.setting.max_concurrency)
                except MapRunsUnavailable as error:
                    # The decision stands (SSM and the state are written): the next run retunes the Map Runs.
                    logger.exception("could not retune the running Map Runs of %s", state_machine_arn)
                    outcome.error = str(error)
        return outcome

    def _decide(
        self, plan: DownstreamPlan, read: TunablesDocument, current: Setting, metrics: PeriodMetrics | None,
        now: float, period_end: float, alarms: Sequence[AlarmSignal],
    ) -> Outcome:
        state, version = self._states.load(plan.name)
        policy = self.policy
        if plan.p99_latency_threshold_ms is not None:
            policy = policy.with_p99_latency_threshold(plan.p99_latency_threshold_ms)
        decision = decide(metrics, current, plan.bounds, state, policy, now=now, period_end=period_end, alarms=alarms,
                          period_sec=self.period_sec, metrics_delay_sec=self.metrics_delay_sec)
        outcome = Outcome(plan.name, decision.action, decision.reason, mode=names.TUNABLES_MODE_AUTO, previous=current,
                          setting=decision.setting)
        if decision.changed:
            changes: dict[str, Any] = {names.TUNABLE_MAX_CONCURRENCY: decision.setting.max_concurrency,
                                       names.TUNABLE_RATE_PER_SEC: decision.setting.rate_per_sec}
            burst = plan.bounds.burst_for(decision.setting.rate_per_sec)
            if burst is not None and decision.setting.rate_per_sec != current.rate_per_sec:
                changes[names.TUNABLE_BURST] = burst
            if not self._tunables.write(read, changes):
                # Someone wrote the document while we decided: theirs wins, we decide again next period.
                return Outcome(plan.name, "hold", "hold: the document changed while deciding; it is adopted next run",
                               mode=names.TUNABLES_MODE_AUTO, previous=current, setting=current)
            outcome.written = True
        if not self._states.save(plan.name, decision.state, version, now):
            logger.warning("controller state of %s changed meanwhile; this run's state is dropped", plan.name)
        return outcome

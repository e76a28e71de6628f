"""One strategy through one scenario, and the figures the benchmark reports for it.

Figures (`summarize`):
- `goodput_fraction_of_limit`: successful calls over what the downstream could have answered in the
  hour: the integral of its limit (its rate limit, or its concurrency over its service time when
  that is lower, zero during an outage). Demand below the limit caps it (`offered_fraction_of_limit`).
- `net_goodput_fraction_of_limit`: the same, less one for every 429 answered: a refused call spends
  the downstream's patience and our money as a successful one does, so a strategy cannot buy goodput
  with 429s. The benchmark calls one strategy better than another when this is higher.
- `throttled_share`: the share of calls answered by the downstream that were 429s.
- `latency_p50_sec`, `latency_p99_sec`: end to end, arrival to success, of the requests that succeeded.
- `reconverge_periods`: after each of the scenario's changes, controller periods until the first of
  three periods in a row (fewer if the next change or the end comes first) in which the strategy is
  settled: successes at least 85 % of what it could achieve (the downstream's limit over the
  period, or its own backlog plus arrivals when that is less), at most 1 % 429s and 5 % errors.
  The worst over the changes; None when the scenario has no change; `reconverged` False when some
  change never settled.
- `excess_throttled_share`: 429s answered between each change and the strategy settling again,
  over all the calls answered in the run.
- per change (`by_change`), the settling windows of issue 14's targets: `worst_10s_throttled_share`,
  the highest 429 share of any 10 s window (sliding by a second) from 10 s after the change until the
  next change or the end; `first_minute_throttled_share`, 429s over calls answered in the minute after
  the change; `recover_sec`, seconds from the change to the end of the first 10 s window whose
  successes reach 0.95 of the downstream's limit (None: never before the next change or the end).
- `reach_95_sec`: the same from the start of the run (how long an unknown limit takes to discover);
  `throttled_share_after_30s`: the 429 share of the calls answered after the first 30 s.
- `backlog_at_end`: requests neither succeeded nor failed when the hour ends (queued or running).
Every request ends in one of `succeeded`, `failed`, `queued_at_end`, `running_at_end`; they add up
to `arrived` (checked on every run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from throttling.core.controller import ALGORITHMS, Bounds, ControllerPolicy, Setting
from throttling.core.planning import (
    DEFAULT_PERIOD_SEC,
    DEFAULT_THROTTLE_RATE_THRESHOLD,
    INNER_LOOP_THROTTLE_ALARM_RATE,
    SUSTAINED_ALARM_DATAPOINTS,
    SUSTAINED_ALARM_PERIODS,
    CapacityPlan,
    tunables_document,
)
from throttling.core.adaptive_rate import AdaptiveRatePolicy, InMemoryAdaptiveRateLimiter
from throttling.core.rate_limiter import InMemoryRateLimiter, RatePolicy
from throttling.core.tunables import discovery_fields, parse_tunables

from lab.controllers import Adjustment, Controller, Gradient2, PlainAimd, ProjectController
from lab.downstream import Downstream
from lab.engine import Simulation
from lab.ledger import FAILED, QUEUED, RUNNING, SUCCEEDED, Ledger, percentile
from lab.mechanisms import (
    Caller,
    ConcurrentExecutions,
    ControlLoop,
    StepFunctionsTask,
    ThrottleAlarm,
    workflow_retry_policy,
)
from lab.scenarios import Scenario
from lab.strategies import (
    HEADROOM,
    Strategy,
    controller_bounds_for,
    p99_threshold_ms,
    plan_for,
)
from lab.workload import start_arrivals

__all__ = ["PERIOD_SEC", "Run", "run", "summarize"]

# The controller's period, as a stage runs it.
PERIOD_SEC = float(DEFAULT_PERIOD_SEC)
SETTLED_GOODPUT = 0.85
SETTLED_THROTTLED_SHARE = 0.01
SETTLED_ERROR_SHARE = 0.05
SETTLED_PERIODS_IN_A_ROW = 3
# Issue 14's settling targets: 10 s windows, judged from 10 s after a change, reaching 0.95 of the limit.
WINDOW_SEC = 10
RECOVERED_FRACTION = 0.95
DISCOVERY_GRACE_SEC = 30


@dataclass
class Run:
    strategy: Strategy
    scenario: Scenario
    seed: int
    ledger: Ledger
    decisions: list[tuple[float, Adjustment]]
    max_running_seen: int
    limiter_policy: RatePolicy | None
    # Published limits the inner loop wrote (news only: each one conditional write when deployed).
    limiter_publications: int = 0


def run(strategy: Strategy, scenario: Scenario, *, seed: int = 1, headroom: float = HEADROOM,
        period_sec: float = PERIOD_SEC, schedule_phase_sec: float | None = None) -> Run:
    """An hour (the scenario's duration) of `strategy`; `headroom` is what the plan keeps below the
    contract (the stage's default unless given; the benchmark's headroom sweep passes others);
    `schedule_phase_sec` the second of each period the controller runs at (None: as soon as the
    period's metrics are complete, the best phase)."""
    sim = Simulation(seed)
    ledger = Ledger(scenario.duration_sec, period_sec)
    downstream = Downstream(sim, scenario.downstream)
    plan = plan_for(scenario, headroom)

    limiter = None
    if strategy.limiter == "advertised":
        limiter = InMemoryRateLimiter(RatePolicy(scenario.advertised_limit_rps, scenario.advertised_burst), sim.clock)
    elif strategy.limiter == "planned":
        limiter = InMemoryRateLimiter(RatePolicy(plan.limiter_rate_per_sec, plan.limiter_burst), sim.clock)
    elif strategy.limiter == "adaptive":
        # The tunables' defaults; where the limit is unknown, the document a stage seeds under a ceiling, as parsed.
        adaptive = AdaptiveRatePolicy() if scenario.limit_known else parse_tunables({**tunables_document(
            plan.limiter_rate_per_sec, plan.limiter_burst, plan.map_concurrency), **discovery_fields()}).tunables.adaptive
        limiter = InMemoryAdaptiveRateLimiter(RatePolicy(plan.limiter_rate_per_sec, plan.limiter_burst), adaptive,
                                              sim.clock)
    caller = Caller(sim, downstream, ledger, limiter=limiter, timeout_sec=scenario.timeout_sec)
    task = StepFunctionsTask(sim, caller, ledger, workflow_retry_policy())
    intake = ConcurrentExecutions(sim, ledger, task, strategy.initial_map_concurrency(plan), scenario.executions)

    decisions: list[tuple[float, Adjustment]] = []
    controller = _controller(strategy, scenario, plan, intake.max_concurrency)
    if controller is not None:

        def apply(adjustment: Adjustment) -> None:
            intake.set_max_concurrency(adjustment.max_concurrency)
            # With the inner loop the controller is the slow outer loop of issue 14: concurrency only, and
            # the rate is the inner loop's, under the plan's ceiling. (A controller that also lowered the
            # ceiling on a minute's 429s would hold the bucket there long after capacity came back.)
            if limiter is not None and adjustment.rate_per_sec is not None and strategy.limiter != "adaptive":
                burst = adjustment.burst if adjustment.burst is not None else limiter.policy.burst
                limiter.policy = RatePolicy(adjustment.rate_per_sec, burst)

        loop = ControlLoop(sim, ledger, controller, apply, period_sec=period_sec, phase_sec=schedule_phase_sec,
                           throttle_alarm=throttle_alarm_for(strategy))
        decisions = loop.decisions

    def arrive() -> None:
        intake.submit(ledger.arrive(sim.now))

    start_arrivals(sim, scenario.arrivals, arrive, until=scenario.duration_sec)

    def sample() -> None:
        ledger.sample(
            running=intake.running,
            in_flight=downstream.in_flight,
            pending=intake.pending,
            concurrency_limit=intake.effective_limit,
            rate_limit=_rate_in_force(limiter),
            capacity_rps=scenario.downstream.capacity_rps_at(sim.now),
        )

    # Sampled at the start of each second, so second s describes [s, s + 1).
    sim.every(1.0, sample, first_at=0.0)
    sim.run(scenario.duration_sec - 1e-9)
    return Run(strategy, scenario, seed, ledger, decisions, intake.max_running_seen,
               limiter.policy if limiter is not None else None,
               limiter.publications if isinstance(limiter, InMemoryAdaptiveRateLimiter) else 0)


def _rate_in_force(limiter: InMemoryRateLimiter | InMemoryAdaptiveRateLimiter | None) -> float:
    """What the limiter admits now: its policy's rate, or the inner loop's current rate under it."""
    if limiter is None:
        return math.nan
    if isinstance(limiter, InMemoryAdaptiveRateLimiter):
        return limiter.rate_per_sec
    return limiter.policy.rate_per_sec


def throttle_alarm_for(strategy: Strategy) -> ThrottleAlarm | None:
    """The 429 alarm the control-loop stack gives our controller (`stacks.control_loop_stack`): one minute
    above the threshold, or 2 of 3 above the inner loop's allowance where the rate is the inner loop's;
    none for the baselines."""
    if not strategy.ours:
        return None
    if strategy.limiter == "adaptive":
        return ThrottleAlarm(max(DEFAULT_THROTTLE_RATE_THRESHOLD, INNER_LOOP_THROTTLE_ALARM_RATE), SUSTAINED_ALARM_PERIODS,
                             SUSTAINED_ALARM_DATAPOINTS)
    return ThrottleAlarm(DEFAULT_THROTTLE_RATE_THRESHOLD)


def _controller(strategy: Strategy, scenario: Scenario, plan: CapacityPlan,
                initial_concurrency: int) -> Controller | None:
    bounds = Bounds.from_document(controller_bounds_for(scenario, plan.headroom))
    if strategy.controller in ALGORITHMS:
        # As the control loop does: the plan's p99 bar for the algorithm that reads one, and the rate
        # left to the callers' inner loop where they run one (the stage's `adjust_rate` false).
        policy = ControllerPolicy(algorithm=ALGORITHMS[strategy.controller](),
                                  adjust_rate=strategy.limiter != "adaptive").with_p99_latency_threshold(
            p99_threshold_ms(scenario))
        return ProjectController(policy, bounds, Setting(plan.map_concurrency, plan.limiter_rate_per_sec))
    if strategy.controller == "plain_aimd":
        return PlainAimd(initial_concurrency, min_limit=bounds.min_concurrency, max_limit=bounds.max_concurrency)
    if strategy.controller == "gradient2":
        return Gradient2(initial_concurrency, min_limit=bounds.min_concurrency, max_limit=bounds.max_concurrency)
    return None


# -- the figures ---------------------------------------------------------------------------------


def summarize(result: Run) -> dict[str, Any]:
    ledger, scenario = result.ledger, result.scenario
    seconds = len(ledger.running)
    capacity = sum(ledger.capacity_rps[:seconds])
    arrived = len(ledger.requests)
    states = {state: ledger.count(state) for state in (SUCCEEDED, FAILED, QUEUED, RUNNING)}
    if sum(states.values()) != arrived:
        raise AssertionError(f"requests unaccounted for: {states} do not add up to {arrived} arrivals")
    answered = sum(ledger.answered)
    throttled = sum(ledger.throttled)
    end_to_end = sorted(ledger.end_to_end_sec)
    by_change = [_reconvergence(ledger, at_sec, what, scenario, result) for at_sec, what in scenario.changes]
    settled = [change["periods"] for change in by_change]
    failed_why: dict[str, int] = {}
    for request in ledger.requests:
        if request.state == FAILED:
            reason = (request.why_failed or "").split(" after")[0].split(" asked")[0]
            failed_why[reason] = failed_why.get(reason, 0) + 1
    return {
        "scenario": scenario.name,
        "strategy": result.strategy.name,
        "seed": result.seed,
        "goodput_fraction_of_limit": _round(states[SUCCEEDED] / capacity if capacity else 0.0),
        "net_goodput_fraction_of_limit": _round((states[SUCCEEDED] - throttled) / capacity if capacity else 0.0),
        "throttled_share": _round(throttled / answered if answered else 0.0, 5),
        "latency_p50_sec": _round(percentile(end_to_end, 50) if end_to_end else None, 2),
        "latency_p99_sec": _round(percentile(end_to_end, 99) if end_to_end else None, 2),
        "reconverge_periods": None if not settled or None in settled else max(settled),
        "reconverged": None if not settled else None not in settled,
        "excess_throttled_share": _round(sum(c["throttled"] for c in by_change) / answered if answered else 0.0, 5)
        if by_change else None,
        "reach_95_sec": seconds_to_reach(ledger, 0, seconds),
        "throttled_share_after_30s": _round(_share(ledger.throttled, ledger.answered, DISCOVERY_GRACE_SEC, seconds), 5),
        "backlog_at_end": states[QUEUED] + states[RUNNING],
        "offered_fraction_of_limit": _round(arrived / capacity if capacity else 0.0),
        "arrived": arrived,
        "succeeded": states[SUCCEEDED],
        "failed": states[FAILED],
        "failed_because": dict(sorted(failed_why.items())),
        "queued_at_end": states[QUEUED],
        "running_at_end": states[RUNNING],
        "calls": sum(ledger.calls),
        "calls_answered": answered,
        "throttled": throttled,
        "errors": sum(ledger.errors),
        "limiter_decisions": ledger.limiter_decisions,
        "limiter_refused": sum(ledger.limiter_refused),
        "limiter_publications": result.limiter_publications,
        "task_attempts": sum(r.task_attempts for r in ledger.requests),
        "waits": sum(r.waits for r in ledger.requests),
        "max_concurrency_seen": result.max_running_seen,
        "controller_changes": sum(1 for _, a in result.decisions if a.action != "hold"),
        "by_change": by_change,
    }


def _reconvergence(ledger: Ledger, at_sec: float, what: str, scenario: Scenario, result: Run) -> dict[str, Any]:
    period = int(ledger.period_sec)
    later_changes = [t for t, _ in scenario.changes if t > at_sec]
    horizon = int(min(later_changes)) if later_changes else len(ledger.running)
    first = math.ceil(at_sec / period) * period
    starts = list(range(first, horizon - period + 1, period))
    flags = [_settled(ledger, start, period) for start in starts]
    settled_at = None
    for index in range(len(flags)):
        window = flags[index:index + SETTLED_PERIODS_IN_A_ROW]
        if window and all(window):
            settled_at = starts[index]
            break
    until = settled_at if settled_at is not None else horizon
    return {
        "at_sec": at_sec,
        "what": what,
        "periods": None if settled_at is None else round((settled_at - at_sec) / period, 2),
        "throttled": sum(ledger.throttled[int(at_sec):until]),
        "worst_10s_throttled_share": worst_window_throttled_share(ledger, int(at_sec) + WINDOW_SEC, horizon),
        "first_minute_throttled_share": _round(_share(ledger.throttled, ledger.answered, int(at_sec),
                                                      min(int(at_sec) + 60, horizon)), 5),
        "recover_sec": seconds_to_reach(ledger, int(at_sec), horizon),
    }


def worst_window_throttled_share(ledger: Ledger, start: int, end: int) -> float | None:
    """The highest 429 share of any `WINDOW_SEC` window in [start, end), sliding by a second."""
    shares = [_share(ledger.throttled, ledger.answered, s, s + WINDOW_SEC) for s in range(start, end - WINDOW_SEC + 1)]
    return _round(max(shares), 5) if shares else None


def seconds_to_reach(ledger: Ledger, start: int, end: int, fraction: float = RECOVERED_FRACTION) -> int | None:
    """Seconds from `start` to the end of the first `WINDOW_SEC` window whose successes reach `fraction`
    of the downstream's limit over it; None when none does before `end`."""
    for s in range(start, end - WINDOW_SEC + 1):
        limit = sum(ledger.capacity_rps[s:s + WINDOW_SEC])
        if limit and sum(ledger.successes[s:s + WINDOW_SEC]) >= fraction * limit:
            return s + WINDOW_SEC - start
    return None


def _share(part: list[int], whole: list[int], start: int, end: int) -> float:
    total = sum(whole[start:end])
    return sum(part[start:end]) / total if total else 0.0


def _settled(ledger: Ledger, start: int, period: int) -> bool:
    end = start + period
    successes = sum(ledger.successes[start:end])
    capacity = sum(ledger.capacity_rps[start:end])
    backlog = ledger.pending[start] + ledger.running[start]
    achievable = min(capacity, backlog + sum(ledger.arrivals[start:end]))
    answered = sum(ledger.answered[start:end])
    if answered and (sum(ledger.throttled[start:end]) > SETTLED_THROTTLED_SHARE * answered
                     or sum(ledger.errors[start:end]) > SETTLED_ERROR_SHARE * answered):
        return False
    return successes >= SETTLED_GOODPUT * achievable


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)

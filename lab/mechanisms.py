"""The AWS mechanisms between a producer and the downstream, as models in virtual time.

Each class states what it simplifies; all of them use the project's pure cores unchanged: the GCRA
limiter (`throttling.core.rate_limiter`), the circuit breaker (`throttling.core.circuit_breaker`), Step
Functions' jittered backoff (`throttling.core.backoff.full_jitter_delay`), the controller
(`throttling.core.controller.decide`, through `lab.controllers`) and `evaluated_period`.

- `Caller`: the caller Lambda (`handlers/call_downstream.py`): breaker, one token of the shared
  limiter taken by the same `throttling.runtime.token_gate.TokenTake` with the same knobs (a
  refusal of at most `max_limiter_wait_sec` waited out in the function, as `LIMITER_MAX_WAIT_SEC`
  does; a longer one raises `RateLimited` with the wait), then the call.
  Simplified: the limiter is one in-memory GCRA whose write takes no time (the DynamoDB one takes
  milliseconds, so here no token comes back too late to spend), and the breaker is one shared state.
  With an adaptive limiter (`throttling.core.adaptive_rate.InMemoryAdaptiveRateLimiter`, the same
  core as the DynamoDB adapter's inner loop), a 429, or a 503 with a short Retry-After, is reported
  for the token that paid for the call, as the callers' `TokenGate.report` does, and so is a rate the
  downstream published in its answer; a report takes no time.
- `StepFunctionsTask`: a Task state around the caller with the workflow's `Retry` (jittered
  exponential backoff per error) and its `Catch` loop (wait the Retry-After asked for, rounded, plus
  1 s; a random 1-9 s without one; give up after `max_waits` waits or a wait above `max_wait_sec`),
  as `statemachines/crm_batch_email.asl.json` does for each user.
- `MapState`: an inline Map: at most `max_concurrency` items in their iteration at once (0: the
  inline Map's own ceiling of 40); an item waiting out a retry still holds its iteration.
  `ConcurrentExecutions`: several executions' Maps at once, sharing the setting and the downstream.
- `EventSourceMapping`: an SQS queue drained by a Lambda event-source mapping: batches of up to
  `batch_size` for at most `maximum_concurrency` invocations (never below 2, Lambda's minimum);
  each batch handled in order; a record the downstream or the limiter turns away is postponed with
  the rest of its batch by a visibility timeout (at least the wait asked for, doubling with each
  receive: the legacy consumer's `throttling.core.backoff.postpone_for_sec`, without the batching
  window, which the model has none of), and after `max_receive_count` receives it
  goes to the dead-letter queue.
- `ControlLoop`: the controller's schedule: every `period_sec`, at the second `phase_sec` of each
  period (by default `metrics_delay_sec` after each period ends), it judges the last period whose
  metrics are complete and the new setting reaches the callers after `tunables_cache_sec` (their
  SSM cache).
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from throttling.core import planning
from throttling.core.backoff import exponential_delay, full_jitter_delay, postpone_for_sec
from throttling.core.circuit_breaker import BreakerPolicy, BreakerState, allow, record
from throttling.core.controller import AlarmSignal, evaluated_period
from throttling.core.names import ALARM_THROTTLED, SQS_MAX_MAXIMUM_CONCURRENCY, SQS_MIN_MAXIMUM_CONCURRENCY
from throttling.core.adaptive_rate import InMemoryAdaptiveRateLimiter, is_throttling_signal
from throttling.core.rate_limiter import InMemoryRateLimiter
from throttling.runtime.token_gate import GateKnobs, Pause, TokenTake

from lab.controllers import Adjustment, Controller
from lab.downstream import OK, THROTTLED, Downstream
from lab.engine import Simulation
from lab.ledger import QUEUED, RUNNING, Ledger, Request

__all__ = [
    "INLINE_MAP_MAX_CONCURRENCY",
    "WORKFLOW_ASL",
    "Caller",
    "ConcurrentExecutions",
    "ControlLoop",
    "EventSourceMapping",
    "ThrottleAlarm",
    "ItemProcessor",
    "MapState",
    "Retrier",
    "RetryPolicy",
    "StepFunctionsTask",
    "workflow_retry_policy",
]

# "In Inline mode, the Map state supports up to 40 concurrent iterations" (Step Functions guide).
INLINE_MAP_MAX_CONCURRENCY = 40
WORKFLOW_ASL = Path(__file__).resolve().parents[1] / "statemachines" / "crm_batch_email.asl.json"

# Without MaxDelaySeconds the backoff is uncapped; an execution lasts at most a year anyway.
_NO_MAX_DELAY_SEC = 365 * 86400.0
RATE_LIMITED, THROTTLED_ERROR, UNAVAILABLE_ERROR = "RateLimited", "DownstreamThrottled", "DownstreamUnavailable"
CallResult = Callable[..., Any]


# -- the caller Lambda ---------------------------------------------------------------------------


class Caller:
    """One call of the caller Lambda: `call(request, on_result, *args)` ends in
    `on_result(request, error, retry_after_sec, *args)`, error None on a 2xx."""

    def __init__(
        self,
        sim: Simulation,
        downstream: Downstream,
        ledger: Ledger,
        *,
        limiter: InMemoryRateLimiter | InMemoryAdaptiveRateLimiter | None = None,
        breaker_policy: BreakerPolicy | None = None,
        timeout_sec: float = 5.0,
        max_limiter_wait_sec: float = 1.0,
    ) -> None:
        self.sim = sim
        self.downstream = downstream
        self.ledger = ledger
        self.limiter = limiter
        self.breaker_policy = breaker_policy
        self.breaker_state = BreakerState()
        self.timeout_sec = timeout_sec
        self.max_limiter_wait_sec = max_limiter_wait_sec
        # The take's wake-up jitter is 0 with these knobs; one stream for every take spares seeding a
        # fresh `random.Random` per call (a tenth of a run's CPU).
        self._wake_up_rng = sim.rng("limiter-wake-up")

    def call(self, request: Request, on_result: CallResult, *args: Any) -> None:
        if self.breaker_policy is not None:
            admission, self.breaker_state = allow(self.breaker_state, self.breaker_policy, self.sim.now,
                                                  self._caller_id(request))
            if not admission.allowed:
                on_result(request, UNAVAILABLE_ERROR, admission.retry_after_sec, *args)
                return
        if self.limiter is None:
            self._send(request, on_result, args, None)
        else:
            # The caller Lambda's knobs: one short refusal waited out; the in-memory limiter answers at
            # once, so no token is ever stale and the invocation's time left never binds.
            take = TokenTake(GateKnobs(max_wait_sec=self.max_limiter_wait_sec, max_waits=1), started_at=self.sim.now,
                             time_left_sec=math.inf, stale_after_sec=math.inf, rng=self._wake_up_rng)
            self._take_token(request, take, on_result, args)

    def _take_token(self, request: Request, take: TokenTake, on_result: CallResult, args: tuple[Any, ...]) -> None:
        decision = self.limiter.try_acquire()  # type: ignore[union-attr]
        self.ledger.limiter_decided(self.sim.now, decision.allowed)
        step = take.next(decision, self.sim.now, self.sim.now)
        if isinstance(step, Pause):
            self.sim.after(step.seconds, self._take_token, request, take, on_result, args)
        elif step.admitted:
            self._send(request, on_result, args, step.admitted_at)
        else:
            self.ledger.limiter_gave_up(self.sim.now)
            on_result(request, RATE_LIMITED, round(step.retry_after_sec, 3), *args)

    def _send(self, request: Request, on_result: CallResult, args: tuple[Any, ...], admitted_at: float | None) -> None:
        request.calls += 1
        self.ledger.call_sent(self.sim.now)
        self.downstream.send(self.timeout_sec, self._answered, request, on_result, args, admitted_at)

    def _answered(self, status: int, latency_sec: float, retry_after: int | None, published_per_sec: float | None,
                  request: Request, on_result: CallResult, args: tuple[Any, ...], admitted_at: float | None) -> None:
        self.ledger.call_answered(self.sim.now, status, latency_sec, retry_after)
        if admitted_at is not None and isinstance(self.limiter, InMemoryAdaptiveRateLimiter):
            # As `TokenGate.report` does: the published limit first (a 429 under a lowered limit then
            # cuts from the lowered rate), then the signal.
            self.limiter.report_published(admitted_at, published_per_sec)
            if is_throttling_signal(status, retry_after, self.limiter.adaptive):
                self.limiter.report_signal(admitted_at, retry_after)
        if self.breaker_policy is not None:
            self.breaker_state = record(self.breaker_state, self.breaker_policy, self.sim.now, status == OK,
                                        latency_sec, self._caller_id(request))
        if status == OK:
            on_result(request, None, None, *args)
        elif status == THROTTLED:
            on_result(request, THROTTLED_ERROR, retry_after, *args)
        else:
            on_result(request, UNAVAILABLE_ERROR, retry_after, *args)

    @staticmethod
    def _caller_id(request: Request) -> str:
        return f"request-{request.id}-call-{request.calls}"


# -- Step Functions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retrier:
    """One entry of a Task's `Retry`: what Step Functions does before it gives the error to `Catch`."""

    errors: tuple[str, ...]
    interval_sec: float = 1.0
    backoff_rate: float = 2.0
    max_attempts: int = 3
    max_delay_sec: float | None = None
    full_jitter: bool = True

    def delay_sec(self, attempt: int, rng: random.Random) -> float:
        """The wait before retry `attempt` (1-based): FULL jitter draws in [0, the exponential delay]."""
        cap = self.max_delay_sec if self.max_delay_sec is not None else _NO_MAX_DELAY_SEC
        if self.full_jitter:
            return full_jitter_delay(attempt, self.interval_sec, cap, self.backoff_rate, rng)
        return exponential_delay(attempt, self.interval_sec, cap, self.backoff_rate)

    @classmethod
    def from_asl(cls, raw: Mapping[str, Any]) -> Retrier:
        max_delay = raw.get("MaxDelaySeconds")
        return cls(
            errors=tuple(raw["ErrorEquals"]),
            interval_sec=float(raw.get("IntervalSeconds", 1)),
            backoff_rate=float(raw.get("BackoffRate", 2.0)),
            max_attempts=int(raw.get("MaxAttempts", 3)),
            max_delay_sec=None if max_delay is None else float(max_delay),
            full_jitter=raw.get("JitterStrategy") == "FULL",
        )


@dataclass(frozen=True)
class RetryPolicy:
    """A Task's `Retry` entries, then its `Catch` loop that waits as asked (None: no loop, give up)."""

    retriers: tuple[Retrier, ...]
    max_waits: int | None = 8
    max_wait_sec: float = 300.0
    unhinted_wait_sec: tuple[int, int] = (1, 9)


def workflow_retry_policy(asl_path: Path = WORKFLOW_ASL, task_state: str = "FetchUser") -> RetryPolicy:
    """The `Retry` of `task_state` in the deployed workflow, so the lab retries exactly as it does.

    The `Catch` loop's limits (8 waits, 300 s) are the workflow's `DecideRetry` choices.
    """
    definition = json.loads(asl_path.read_text())
    state = _find_state(definition, task_state)
    if state is None or "Retry" not in state:
        raise ValueError(f"{asl_path} has no Task state {task_state!r} with a Retry; the lab mirrors that state's retries")
    return RetryPolicy(retriers=tuple(Retrier.from_asl(entry) for entry in state["Retry"]))


def _find_state(node: Any, name: str) -> Mapping[str, Any] | None:
    if isinstance(node, Mapping):
        states = node.get("States")
        if isinstance(states, Mapping) and name in states:
            return states[name]
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _find_state(child, name)
        if found is not None:
            return found
    return None


class StepFunctionsTask:
    """One item through a Task state with Retry and Catch; `start(request, on_finished)`.

    Each attempt costs `transition_sec` (the state transition and the Lambda invoke) before the
    call. Simplified: one call per item (the CRM workflow makes two, each with these retries); a
    Wait re-enters the Task, whose retry counters start over, as in Step Functions.
    """

    def __init__(self, sim: Simulation, caller: Caller, ledger: Ledger, retry: RetryPolicy, *,
                 transition_sec: float = 0.03) -> None:
        self.sim = sim
        self.caller = caller
        self.ledger = ledger
        self.retry = retry
        self.transition_sec = transition_sec
        self._jitter = sim.rng("retry-jitter")
        self.delays_drawn: list[tuple[Retrier, int, float]] = []

    def start(self, request: Request, on_finished: Callable[[Request], Any]) -> None:
        request.retries = {}
        self.sim.after(self.transition_sec, self._attempt, request, on_finished)

    def _attempt(self, request: Request, on_finished: Callable[[Request], Any]) -> None:
        request.task_attempts += 1
        self.caller.call(request, self._result, on_finished)

    def _result(self, request: Request, error: str | None, retry_after: float | None,
                on_finished: Callable[[Request], Any]) -> None:
        now = self.sim.now
        if error is None:
            self.ledger.succeed(request, now)
            on_finished(request)
            return
        for index, retrier in enumerate(self.retry.retriers):
            if error not in retrier.errors:
                continue
            attempt = request.retries.get(index, 0) + 1
            if attempt <= retrier.max_attempts:
                request.retries[index] = attempt
                delay = retrier.delay_sec(attempt, self._jitter)
                self.delays_drawn.append((retrier, attempt, delay))
                self.sim.after(delay + self.transition_sec, self._attempt, request, on_finished)
                return
            break
        self._catch(request, error, retry_after, on_finished)

    def _catch(self, request: Request, error: str, retry_after: float | None,
               on_finished: Callable[[Request], Any]) -> None:
        if self.retry.max_waits is None:
            self._give_up(request, f"{error} after its retries", on_finished)
            return
        request.waits += 1
        if request.waits > self.retry.max_waits:
            self._give_up(request, f"{error} after {self.retry.max_waits} waits", on_finished)
            return
        if retry_after is None:
            low, high = self.retry.unhinted_wait_sec
            wait = self._jitter.randint(low, high)
        elif retry_after > self.retry.max_wait_sec:
            self._give_up(request, f"{error} asked for {retry_after:g} s > {self.retry.max_wait_sec:g} s", on_finished)
            return
        else:
            # States.MathAdd rounds to an integer; the extra second keeps the retry from being early.
            wait = math.floor(retry_after + 0.5) + 1
        self.sim.after(wait, self.start, request, on_finished)

    def _give_up(self, request: Request, why: str, on_finished: Callable[[Request], Any]) -> None:
        self.ledger.fail(request, self.sim.now, why)
        on_finished(request)


class ItemProcessor(Protocol):
    def start(self, request: Request, on_finished: Callable[[Request], Any]) -> None: ...


class MapState:
    """An inline Map over an ever-growing list of items: FIFO, at most `max_concurrency` running.

    Simplified: the workflows read `max_concurrency` from SSM when an execution starts; here a new
    value applies to the next iteration started (as if executions were short).
    """

    def __init__(self, sim: Simulation, ledger: Ledger, processor: ItemProcessor, max_concurrency: int) -> None:
        self.sim = sim
        self.ledger = ledger
        self.processor = processor
        self.backlog: deque[Request] = deque()
        self.running = 0
        self.max_running_seen = 0
        self.max_concurrency = 0
        self.set_max_concurrency(max_concurrency)

    @property
    def effective_limit(self) -> int:
        if self.max_concurrency == 0:
            return INLINE_MAP_MAX_CONCURRENCY
        return min(self.max_concurrency, INLINE_MAP_MAX_CONCURRENCY)

    @property
    def pending(self) -> int:
        return len(self.backlog)

    def set_max_concurrency(self, max_concurrency: int) -> None:
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 0:
            raise ValueError(f"MaxConcurrency must be an int >= 0 (0: as many as the Map allows), got {max_concurrency!r}")
        self.max_concurrency = max_concurrency
        self._dispatch()

    def submit(self, request: Request) -> None:
        self.backlog.append(request)
        self._dispatch()

    def _dispatch(self) -> None:
        limit = self.effective_limit
        while self.backlog and self.running < limit:
            request = self.backlog.popleft()
            self.running += 1
            self.max_running_seen = max(self.max_running_seen, self.running)
            self.ledger.move(request, RUNNING)
            self.processor.start(request, self._finished)

    def _finished(self, request: Request) -> None:
        self.running -= 1
        self._dispatch()


class ConcurrentExecutions:
    """Several executions of one workflow at once, each its own Map over its share of the items (dealt
    round-robin), every one at the same `max_concurrency`: the setting the controller writes is read by
    every execution (an inline Map when it starts, a Distributed Map run through `UpdateMapRun`), so
    N executions keep up to N times it in flight against the one downstream and its one shared limiter.
    With one execution it is a `MapState`.
    """

    def __init__(self, sim: Simulation, ledger: Ledger, processor: ItemProcessor, max_concurrency: int,
                 executions: int) -> None:
        if executions < 1:
            raise ValueError(f"executions must be >= 1, got {executions!r}")
        self.maps = [MapState(sim, ledger, processor, max_concurrency) for _ in range(executions)]
        self._next = 0

    @property
    def max_concurrency(self) -> int:
        return self.maps[0].max_concurrency

    @property
    def effective_limit(self) -> int:
        """What all of them may keep in flight together."""
        return sum(m.effective_limit for m in self.maps)

    @property
    def running(self) -> int:
        return sum(m.running for m in self.maps)

    @property
    def pending(self) -> int:
        return sum(m.pending for m in self.maps)

    @property
    def max_running_seen(self) -> int:
        """An upper bound: the sum of each execution's own peak."""
        return sum(m.max_running_seen for m in self.maps)

    def set_max_concurrency(self, max_concurrency: int) -> None:
        for map_state in self.maps:
            map_state.set_max_concurrency(max_concurrency)

    def submit(self, request: Request) -> None:
        self.maps[self._next].submit(request)
        self._next = (self._next + 1) % len(self.maps)


# -- SQS and Lambda ------------------------------------------------------------------------------

class EventSourceMapping:
    """An SQS queue and the event-source mapping that feeds a consumer Lambda in batches.

    Simplified: the mapping scales to `maximum_concurrency` at once (Lambda adds up to 300
    concurrent invocations a minute); a visible message is received `receive_delay_sec` after an
    invocation slot is free (long polling, no batching window); the consumer handles a batch
    within its timeout (no half-done batch returns to the queue by the visibility timeout).
    """

    def __init__(self, sim: Simulation, ledger: Ledger, caller: Caller, *, batch_size: int = 10,
                 maximum_concurrency: int = SQS_MIN_MAXIMUM_CONCURRENCY, max_receive_count: int = 20,
                 receive_delay_sec: float = 0.05, invoke_sec: float = 0.03) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 10_000:
            raise ValueError(f"batch_size must be an int in [1, 10000], got {batch_size!r}")
        if max_receive_count < 1:
            raise ValueError(f"max_receive_count must be >= 1, got {max_receive_count!r}")
        self.sim = sim
        self.ledger = ledger
        self.caller = caller
        self.batch_size = batch_size
        self.max_receive_count = max_receive_count
        self.receive_delay_sec = receive_delay_sec
        self.invoke_sec = invoke_sec
        self.visible: deque[Request] = deque()
        self.invisible = 0
        self.invocations = 0
        self.max_invocations_seen = 0
        self.batch_sizes_seen: list[int] = []
        self.maximum_concurrency = SQS_MIN_MAXIMUM_CONCURRENCY
        self._dispatch_due = False
        self.set_maximum_concurrency(maximum_concurrency)

    @property
    def pending(self) -> int:
        return len(self.visible) + self.invisible

    @property
    def running(self) -> int:
        return self.invocations

    @property
    def effective_limit(self) -> int:
        return self.maximum_concurrency

    def set_maximum_concurrency(self, maximum_concurrency: int) -> None:
        if isinstance(maximum_concurrency, bool) or not isinstance(maximum_concurrency, int) or not (
            SQS_MIN_MAXIMUM_CONCURRENCY <= maximum_concurrency <= SQS_MAX_MAXIMUM_CONCURRENCY
        ):
            raise ValueError(f"MaximumConcurrency must be an int in [{SQS_MIN_MAXIMUM_CONCURRENCY},"
                             f" {SQS_MAX_MAXIMUM_CONCURRENCY}], got {maximum_concurrency!r}")
        self.maximum_concurrency = maximum_concurrency
        self._dispatch_soon()

    def submit(self, request: Request) -> None:
        self.visible.append(request)
        self._dispatch_soon()

    def _dispatch_soon(self) -> None:
        # After everything else due now, so messages that become visible together are received together.
        if not self._dispatch_due:
            self._dispatch_due = True
            self.sim.after(0.0, self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_due = False
        while self.visible and self.invocations < self.maximum_concurrency:
            batch = [self.visible.popleft() for _ in range(min(self.batch_size, len(self.visible)))]
            self.invocations += 1
            self.max_invocations_seen = max(self.max_invocations_seen, self.invocations)
            self.batch_sizes_seen.append(len(batch))
            for request in batch:
                request.receives += 1
                self.ledger.move(request, RUNNING)
            self.sim.after(self.receive_delay_sec + self.invoke_sec, self._next_record, batch, 0)

    def _next_record(self, batch: list[Request], index: int) -> None:
        if index == len(batch):
            self.invocations -= 1
            self._dispatch()
            return
        self.caller.call(batch[index], self._record_result, batch, index)

    def _record_result(self, request: Request, error: str | None, retry_after: float | None,
                       batch: list[Request], index: int) -> None:
        if error is None:
            self.ledger.succeed(request, self.sim.now)
            self._next_record(batch, index + 1)
            return
        # The downstream (or the limiter) said wait: the rest of the batch would only hear the same.
        for postponed in batch[index:]:
            if postponed.receives >= self.max_receive_count:
                self.ledger.fail(postponed, self.sim.now, f"dead-letter queue after {postponed.receives} receives")
                continue
            self.ledger.move(postponed, QUEUED)
            self.invisible += 1
            self.sim.after(postpone_for_sec(retry_after, postponed.receives), self._visible_again, postponed)
        self._next_record(batch, len(batch))

    def _visible_again(self, request: Request) -> None:
        self.invisible -= 1
        self.visible.append(request)
        self._dispatch_soon()


# -- the control loop ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottleAlarm:
    """The downstream's 429-rate alarm as the control-loop stack creates it: in ALARM when the 429 share
    of calls is above `threshold` in `datapoints` of the last `evaluation_periods` complete periods."""

    threshold: float
    evaluation_periods: int = 1
    datapoints: int = 1
    name: str = "ThrottleRate"


class ControlLoop:
    """Runs `controller` on a schedule and applies what it decides after the callers' cache delay;
    with `throttle_alarm`, the controller also hears that alarm while it is in ALARM, as the deployed
    one does (the stack's other alarms are not modelled: the controller reads the same metrics)."""

    def __init__(self, sim: Simulation, ledger: Ledger, controller: Controller,
                 apply: Callable[[Adjustment], Any], *, period_sec: float = planning.DEFAULT_PERIOD_SEC,
                 metrics_delay_sec: float = planning.DEFAULT_METRICS_DELAY_SEC,
                 tunables_cache_sec: float = 5.0, phase_sec: float | None = None,
                 throttle_alarm: ThrottleAlarm | None = None) -> None:
        if phase_sec is not None and not 0 <= phase_sec < period_sec:
            raise ValueError(f"phase_sec must be in [0, {period_sec:g}) (a second of the period), got {phase_sec!r}")
        self.sim = sim
        self.ledger = ledger
        self.controller = controller
        self.apply = apply
        self.period_sec = period_sec
        self.metrics_delay_sec = metrics_delay_sec
        self.tunables_cache_sec = tunables_cache_sec
        self.decisions: list[tuple[float, Adjustment]] = []
        # `phase_sec`: the second of each period the schedule fires at (EventBridge's `rate(1 minute)`
        # fixes none); None: `metrics_delay_sec` past each period's end, when its metrics are complete.
        self.phase_sec = metrics_delay_sec % period_sec if phase_sec is None else phase_sec
        self.throttle_alarm = throttle_alarm
        self.alarm_minutes = 0  # controller runs that heard the 429 alarm in ALARM
        sim.every(period_sec, self._run, first_at=period_sec + self.phase_sec)

    def _run(self) -> None:
        now = self.sim.now
        start, end = evaluated_period(now, self.period_sec, self.metrics_delay_sec)
        alarms = self._alarms_in_alarm(end)
        self.alarm_minutes += bool(alarms)
        adjustment = self.controller.decide(self.ledger.period_metrics(start, end), now=now, period_end=end,
                                            alarms=alarms)
        self.decisions.append((now, adjustment))
        if adjustment.action != "hold":
            self.sim.after(self.tunables_cache_sec, self.apply, adjustment)

    def _alarms_in_alarm(self, last_complete_end: float) -> tuple[AlarmSignal, ...]:
        alarm = self.throttle_alarm
        if alarm is None:
            return ()
        breaching = 0
        for k in range(alarm.evaluation_periods):
            end = last_complete_end - k * self.period_sec
            metrics = self.ledger.period_metrics(end - self.period_sec, end) if end > 0 else None
            # CloudWatch's default for missing data: not breaching.
            breaching += metrics is not None and metrics.throttle_rate > alarm.threshold
        return (AlarmSignal(alarm.name, ALARM_THROTTLED),) if breaching >= alarm.datapoints else ()

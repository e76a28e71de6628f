"""Each modelled mechanism does what its docstring says: the Map's cap, the event-source mapping's
concurrency and batches, Step Functions' jittered retries, the downstream's 429s, 503s and timeouts,
the control loop's schedule, and the baselines' formulas."""

from __future__ import annotations

import dataclasses
import math

import pytest
from throttling.core.backoff import postpone_for_sec
from throttling.core.controller import PeriodMetrics
from throttling.core.rate_limiter import InMemoryRateLimiter, RatePolicy

from lab.controllers import Adjustment, Gradient2, PlainAimd
from lab.downstream import (
    OK,
    SERVER_ERROR,
    THROTTLED,
    TIMED_OUT,
    UNAVAILABLE,
    Downstream,
    DownstreamModel,
    Latency,
)
from lab.engine import Simulation
from lab.ledger import FAILED, SUCCEEDED, Ledger
from lab.mechanisms import (
    ThrottleAlarm,
    INLINE_MAP_MAX_CONCURRENCY,
    Caller,
    ControlLoop,
    EventSourceMapping,
    MapState,
    Retrier,
    StepFunctionsTask,
    workflow_retry_policy,
)

FIXED_200_MS = Latency("fixed", 200.0, 0.0)


class SlowItems:
    """An item processor whose every item takes `seconds`; records how many run at once."""

    def __init__(self, sim: Simulation, ledger: Ledger, seconds: float) -> None:
        self.sim, self.ledger, self.seconds = sim, ledger, seconds
        self.running = 0
        self.most_running = 0

    def start(self, request, on_finished) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.sim.after(self.seconds, self._finish, request, on_finished)

    def _finish(self, request, on_finished) -> None:
        self.running -= 1
        self.ledger.succeed(request, self.sim.now)
        on_finished(request)


def collect_answers(sim: Simulation, downstream: Downstream, at: list[float], timeout_sec: float = 5.0, *,
                    published: list[float | None] | None = None) -> list[tuple]:
    """(when, status, latency, Retry-After) of each answer; the rates they published go to `published`."""
    answers: list[tuple] = []

    def answered(status, latency_sec, retry_after, published_per_sec):
        answers.append((sim.now, status, latency_sec, retry_after))
        if published is not None:
            published.append(published_per_sec)

    for when in at:
        sim.at(when, downstream.send, timeout_sec, answered)
    sim.run(until=max(at) + 60)
    return answers


def test_a_downstream_that_publishes_its_limit_says_its_current_rate_in_every_answer_and_a_silent_one_nothing():
    # GIVEN two downstreams whose capacity halves at 10 s, one publishing its limit and one not
    model = DownstreamModel(rate_per_sec=10.0, burst=10, capacity_changes=((10.0, 0.5),))
    for publishes, expected in ((True, [10.0, 10.0, 5.0, 5.0]), (False, [None] * 4)):
        sim, published = Simulation(1), []
        downstream = Downstream(sim, dataclasses.replace(model, publishes_limit=publishes))
        # WHEN it answers two calls before the change and two after (a 429 among them or not)
        collect_answers(sim, downstream, [1.0, 2.0, 11.0, 11.0], published=published)
        # THEN each answer carries the rate its bucket had when the call reached it, or nothing
        assert published == expected


# -- Map -----------------------------------------------------------------------------------------


def test_the_map_never_runs_more_iterations_than_its_max_concurrency_even_when_it_is_lowered():
    # GIVEN a Map of MaxConcurrency 5 over 40 items of 1 s each
    sim, ledger = Simulation(), Ledger(100.0)
    items = SlowItems(sim, ledger, 1.0)
    map_state = MapState(sim, ledger, items, max_concurrency=5)
    for _ in range(40):
        map_state.submit(ledger.arrive(0.0))
    # WHEN the cap is lowered to 2 after 2.5 s
    sim.run(until=2.5)
    assert items.most_running == 5
    map_state.set_max_concurrency(2)
    items.most_running = items.running
    sim.run(until=3.5)
    # THEN the iterations running drain to 2 and no new one starts above it
    assert items.running <= 2 + 0
    sim.run(until=100.0)
    assert ledger.count(SUCCEEDED) == 40 and map_state.max_running_seen == 5


def test_map_concurrency_0_means_the_inline_maps_40():
    sim, ledger = Simulation(), Ledger(10.0)
    map_state = MapState(sim, ledger, SlowItems(sim, ledger, 5.0), max_concurrency=0)
    for _ in range(100):
        map_state.submit(ledger.arrive(0.0))
    assert map_state.running == INLINE_MAP_MAX_CONCURRENCY == 40
    with pytest.raises(ValueError, match="MaxConcurrency must be an int >= 0"):
        map_state.set_max_concurrency(-1)


# -- event-source mapping ------------------------------------------------------------------------


def test_the_event_source_mapping_keeps_to_its_maximum_concurrency_and_batch_size():
    # GIVEN 200 messages, batches of 10, MaximumConcurrency 3, a fast downstream
    sim, ledger = Simulation(), Ledger(600.0)
    downstream = Downstream(sim, DownstreamModel(rate_per_sec=1000, burst=1000, concurrency=100, latency=FIXED_200_MS))
    mapping = EventSourceMapping(sim, ledger, Caller(sim, downstream, ledger), batch_size=10, maximum_concurrency=3)
    for _ in range(200):
        mapping.submit(ledger.arrive(0.0))
    sim.run(until=600.0)
    # THEN every message is delivered, never more than 3 invocations at once, never more than 10 a batch
    assert ledger.count(SUCCEEDED) == 200
    assert mapping.max_invocations_seen == 3
    assert max(mapping.batch_sizes_seen) == 10
    # AND MaximumConcurrency below Lambda's minimum of 2 is refused with the value
    with pytest.raises(ValueError, match=r"MaximumConcurrency must be an int in \[2, 1000\], got 1"):
        mapping.set_maximum_concurrency(1)


def test_a_refused_record_postpones_the_rest_of_its_batch_and_reaches_the_dead_letter_queue():
    # GIVEN a downstream that answers every call 500, and a queue that allows 3 receives
    sim, ledger = Simulation(), Ledger(3600.0)
    downstream = Downstream(sim, DownstreamModel(server_error_rate=1.0, latency=FIXED_200_MS))
    mapping = EventSourceMapping(sim, ledger, Caller(sim, downstream, ledger), batch_size=5,
                                 maximum_concurrency=2, max_receive_count=3)
    for _ in range(5):
        mapping.submit(ledger.arrive(0.0))
    sim.run(until=3600.0)
    # THEN one call per receive was spent (the first record's), and all five went to the DLQ on their 3rd receive
    assert ledger.count(FAILED) == 5
    assert all(r.receives == 3 and r.why_failed == "dead-letter queue after 3 receives" for r in ledger.requests)
    assert sum(ledger.calls) == 3
    # AND a postponement (the rule the model shares) waits at least what was asked, and backs off with the receives
    assert postpone_for_sec(9_000.5, 1) == 9001
    assert [postpone_for_sec(None, n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]


# -- Step Functions retries ----------------------------------------------------------------------


def test_full_jitter_retry_delays_stay_between_0_and_the_capped_exponential_delay():
    retrier = Retrier(errors=("DownstreamUnavailable",), interval_sec=1, backoff_rate=2, max_attempts=6, max_delay_sec=8)
    sim = Simulation(seed=11)
    for attempt in range(1, 7):
        ceiling = min(8.0, 1.0 * 2 ** (attempt - 1))
        draws = [retrier.delay_sec(attempt, sim.rng("jitter")) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.9 * ceiling and min(draws) < 0.1 * ceiling  # spread over the whole range
    exact = Retrier(errors=("X",), interval_sec=1, backoff_rate=2, max_attempts=3, max_delay_sec=3, full_jitter=False)
    assert [exact.delay_sec(n, sim.rng("jitter")) for n in (1, 2, 3)] == [1, 2, 3]


def test_the_lab_retries_as_the_deployed_workflow_does():
    # GIVEN the CRM workflow's Task
    policy = workflow_retry_policy()
    by_error = {error: retrier for retrier in policy.retriers for error in retrier.errors}
    # THEN each error the caller raises has its jittered retrier, then the wait-as-asked loop
    for error in ("RateLimited", "DownstreamThrottled", "DownstreamUnavailable"):
        assert by_error[error].full_jitter and by_error[error].max_attempts >= 1
    assert (policy.max_waits, policy.max_wait_sec) == (8, 300.0)


def test_a_task_retries_with_jitter_then_waits_then_gives_up_after_eight_waits():
    # GIVEN a downstream that answers every call 500 (no Retry-After)
    sim, ledger = Simulation(seed=2), Ledger(3600.0)
    downstream = Downstream(sim, DownstreamModel(server_error_rate=1.0, latency=FIXED_200_MS))
    task = StepFunctionsTask(sim, Caller(sim, downstream, ledger), ledger, workflow_retry_policy())
    MapState(sim, ledger, task, max_concurrency=1).submit(ledger.arrive(0.0))
    sim.run(until=3600.0)
    (request,) = ledger.requests
    # THEN it made 9 rounds of (a call, 3 jittered retries), the Catch waiting 1-9 s between rounds, and failed
    assert request.state == FAILED and request.why_failed == "DownstreamUnavailable after 8 waits"
    assert (request.waits, request.calls) == (9, 9 * 4)
    for retrier, attempt, delay in task.delays_drawn:
        assert 0 <= delay <= min(retrier.max_delay_sec, retrier.interval_sec * retrier.backoff_rate ** (attempt - 1))


def test_a_task_gives_up_at_once_when_the_wait_asked_for_is_longer_than_a_workflow_holds_an_item():
    # GIVEN a downstream whose bucket refills once in 11 days, already spent by a first item
    sim, ledger = Simulation(seed=2), Ledger(3600.0)
    downstream = Downstream(sim, DownstreamModel(rate_per_sec=1e-6, burst=1, latency=FIXED_200_MS))
    task = StepFunctionsTask(sim, Caller(sim, downstream, ledger), ledger, workflow_retry_policy())
    map_state = MapState(sim, ledger, task, max_concurrency=1)
    map_state.submit(ledger.arrive(0.0))
    map_state.submit(ledger.arrive(0.0))
    sim.run(until=3600.0)
    first, second = ledger.requests
    # THEN the second is refused, retried once with jitter, refused again, and parked: 999999 s > 300 s
    assert (first.state, second.state) == (SUCCEEDED, FAILED)
    assert second.why_failed == "DownstreamThrottled asked for 999999 s > 300 s" and second.calls == 2


# -- the downstream ------------------------------------------------------------------------------


def test_an_outage_answers_503_with_a_retry_after_to_its_end_then_recovers():
    sim = Simulation()
    downstream = Downstream(sim, DownstreamModel(outages=((10.0, 70.0),), latency=FIXED_200_MS))
    answers = collect_answers(sim, downstream, [5.0, 12.0, 69.5, 75.0])
    statuses = [status for _, status, _, _ in answers]
    assert statuses == [OK, UNAVAILABLE, UNAVAILABLE, OK]
    retry_afters = [retry_after for _, status, _, retry_after in answers if status == UNAVAILABLE]
    # the network takes 10-30 ms each way: a call sent at 12 s arrives a little later
    assert retry_afters[0] == 58 and retry_afters[1] == 1


def test_a_429_carries_a_retry_after_in_whole_seconds_and_the_bucket_refills_at_the_rate():
    sim = Simulation()
    downstream = Downstream(sim, DownstreamModel(rate_per_sec=2, burst=2, latency=FIXED_200_MS, network_ms=(0.0, 0.0)))
    answers = collect_answers(sim, downstream, [0.0, 0.0, 0.0, 1.0])
    # the 429 is answered at once, the two admitted calls after their 200 ms, the one a second later too
    assert [(round(when, 3), status) for when, status, _, _ in answers] == [(0.0, THROTTLED), (0.2, OK), (0.2, OK),
                                                                          (1.2, OK)]
    (throttled,) = [a for a in answers if a[1] == THROTTLED]
    assert throttled[3] == 1 and isinstance(throttled[3], int)


def test_capacity_changes_halve_the_rate_and_the_burst_from_their_time():
    model = DownstreamModel(rate_per_sec=10, burst=10, capacity_changes=((100.0, 0.5), (200.0, 1.0)))
    assert [model.capacity_factor_at(t) for t in (99.9, 100.0, 199.0, 200.0)] == [1.0, 0.5, 0.5, 1.0]
    sim = Simulation()
    downstream = Downstream(sim, model)
    sim.run(until=150.0)
    assert (downstream.rate_per_sec, downstream.burst) == (5.0, 5)
    assert model.capacity_rps_at(150.0) == 5.0 and model.capacity_rps_at(250.0) == 10.0


def test_a_caller_that_waits_longer_than_its_timeout_hears_a_timeout_and_the_work_is_still_done():
    # GIVEN one server taking 3 s a call, and callers that wait 5 s
    sim = Simulation()
    downstream = Downstream(sim, DownstreamModel(concurrency=1, latency=Latency("fixed", 3000.0, 0.0),
                                                 network_ms=(0.0, 0.0)))
    answers = collect_answers(sim, downstream, [0.0, 0.0])
    # THEN the first answers after 3 s, the second (queued behind it, 6 s) times out at exactly 5 s
    assert [(when, status) for when, status, _, _ in answers] == [(3.0, OK), (5.0, TIMED_OUT)]
    assert downstream.admitted == 2 and downstream.in_flight == 0


def test_the_server_error_rate_applies_to_admitted_calls():
    sim = Simulation(seed=4)
    downstream = Downstream(sim, DownstreamModel(rate_per_sec=1e6, burst=10**6, concurrency=10**4,
                                                 server_error_rate=0.2, latency=FIXED_200_MS))
    answers = collect_answers(sim, downstream, [0.0] * 2000)
    errors = sum(1 for _, status, _, _ in answers if status == SERVER_ERROR)
    assert 300 < errors < 500


# -- the caller and the limiter ------------------------------------------------------------------


def test_with_the_shared_limiter_no_second_sends_more_than_the_rate_after_the_burst():
    # GIVEN 40 iterations hammering through a limiter of 5 req/s, burst 5
    sim, ledger = Simulation(), Ledger(120.0)
    downstream = Downstream(sim, DownstreamModel(rate_per_sec=100, burst=100, latency=FIXED_200_MS))
    limiter = InMemoryRateLimiter(RatePolicy(5, 5), sim.clock)
    task = StepFunctionsTask(sim, Caller(sim, downstream, ledger, limiter=limiter), ledger, workflow_retry_policy())
    map_state = MapState(sim, ledger, task, max_concurrency=40)
    for _ in range(400):
        map_state.submit(ledger.arrive(0.0))
    sim.run(until=120.0)
    # THEN calls leave at the limiter's pace: at most burst + rate x t in any window from the start
    sent = ledger.calls
    for second in range(1, 120):
        assert sum(sent[:second]) <= 5 + 5 * second
    assert sum(sent[10:60]) >= 5 * 50 * 0.95
    # AND refusals longer than the caller may wait became RateLimited errors for the workflow
    assert sum(ledger.limiter_refused) > 0


def test_a_caller_with_the_breaker_stops_calling_a_failing_downstream_until_its_probe():
    # GIVEN a downstream answering every call 500, and callers that check the fleet's breaker
    from throttling.core.circuit_breaker import BreakerPolicy, BreakerStatus

    sim, ledger = Simulation(), Ledger(100.0)
    downstream = Downstream(sim, DownstreamModel(server_error_rate=1.0, latency=FIXED_200_MS))
    caller = Caller(sim, downstream, ledger, breaker_policy=BreakerPolicy(minimum_calls=5, open_duration_sec=30))
    refused: list[float] = []
    for index in range(40):
        request = ledger.arrive(index * 0.5)
        sim.at(index * 0.5, caller.call, request,
               lambda r, error, retry_after: refused.append(retry_after) if retry_after else None)
    sim.run(until=25.0)
    # THEN after 5 failed calls it opens, and the rest are refused with the wait, without a call
    assert caller.breaker_state.status is BreakerStatus.OPEN
    assert sum(ledger.calls) == 5 and len(refused) == 40 - 5
    assert all(0 < wait <= 30 for wait in refused)


# -- the control loop ----------------------------------------------------------------------------


class RecordingController:
    def __init__(self) -> None:
        self.seen: list[tuple[float, float, PeriodMetrics | None]] = []
        self.alarms: list[tuple] = []

    def decide(self, metrics, *, now, period_end, alarms=()):
        self.seen.append((now, period_end, metrics))
        self.alarms.append(tuple(alarm.name for alarm in alarms))
        return Adjustment(max_concurrency=len(self.seen), action="increase")


def test_the_429_alarm_is_heard_while_2_of_its_last_3_minutes_breach_as_cloudwatch_would_judge_them():
    # GIVEN minutes of 100 calls with 3, 0, 2, 0, 0, 5 429s (1 % is the bar), and a sustained 429 alarm
    sim, ledger = Simulation(), Ledger(420.0)
    controller = RecordingController()
    ControlLoop(sim, ledger, controller, lambda a: None, period_sec=60, metrics_delay_sec=30,
                throttle_alarm=ThrottleAlarm(0.01, evaluation_periods=3, datapoints=2))
    for minute, throttled in enumerate((3, 0, 2, 0, 0, 5)):
        for k in range(100):
            at = minute * 60 + k * 0.5
            sim.at(at, ledger.call_sent, at)
            sim.at(at + 0.1, ledger.call_answered, at + 0.1, 429 if k < throttled else 200, 0.1, None)
    # WHEN the controller runs each minute
    sim.run(until=420.0)
    # THEN it hears the alarm once 2 of the last 3 complete minutes breached, and only then
    # (judged minutes: [0], [0-1], [0-2], [1-3], [2-4], [3-5])
    in_alarm = [bool(names) for names in controller.alarms]
    assert in_alarm == [False, False, True, False, False, False]


def test_the_control_loop_judges_each_period_after_its_metrics_delay_and_applies_after_the_cache():
    sim, ledger = Simulation(), Ledger(400.0)
    applied: list[tuple[float, int]] = []
    controller = RecordingController()
    ControlLoop(sim, ledger, controller, lambda a: applied.append((sim.now, a.max_concurrency)),
                period_sec=60, metrics_delay_sec=30, tunables_cache_sec=5)
    sim.at(10.0, ledger.call_sent, 10.0)
    sim.run(until=400.0)
    assert [(now, end) for now, end, _ in controller.seen] == [(90, 60), (150, 120), (210, 180), (270, 240),
                                                              (330, 300), (390, 360)]
    assert controller.seen[0][2] is not None and controller.seen[0][2].calls == 1
    assert controller.seen[1][2] is None  # nobody called in [60, 120): no data
    assert applied[:2] == [(95, 1), (155, 2)]


# -- the baselines -------------------------------------------------------------------------------


def test_plain_aimd_adds_one_per_clean_period_and_halves_on_any_429():
    aimd = PlainAimd(4, max_limit=8)
    clean, refused = PeriodMetrics(calls=100), PeriodMetrics(calls=100, throttled=1)
    assert [aimd.decide(m, now=0, period_end=0).max_concurrency for m in (clean, clean, refused, refused, clean)] == [
        5, 6, 3, 1, 2]


def test_gradient2_follows_its_published_formula():
    # GIVEN Gradient2 at 4 with a long RTT of 100 ms learnt, and 4 calls in flight
    gradient2 = Gradient2(4, max_limit=40)
    gradient2.decide(PeriodMetrics(calls=2400, latency_mean_ms=100), now=0, period_end=0)
    estimated = gradient2.estimated_limit
    long_rtt = gradient2.long_rtt_ms
    # WHEN a period's RTT doubles to 200 ms (2400 calls in 60 s at 200 ms: 8 in flight)
    gradient2.decide(PeriodMetrics(calls=2400, latency_mean_ms=200), now=60, period_end=60)
    # THEN long = long + (200 - long) x 2/11; gradient = max(0.5, min(1, 1.5 x long / 200));
    # new = limit x gradient + 4, smoothed 0.2
    long_rtt += (200 - long_rtt) * 2 / 11
    gradient = max(0.5, min(1.0, 1.5 * long_rtt / 200))
    expected = estimated * 0.8 + (estimated * gradient + 4) * 0.2
    assert gradient2.estimated_limit == pytest.approx(expected)
    assert gradient2.limit == math.floor(expected)
    # AND with less than half its limit in flight it does not move (app-limited)
    before = gradient2.estimated_limit
    gradient2.decide(PeriodMetrics(calls=60, latency_mean_ms=200), now=120, period_end=120)
    assert gradient2.estimated_limit == before

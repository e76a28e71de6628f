"""Property-based tests of the pure throttling cores: the guarantees hold for any input, not just examples."""

from __future__ import annotations

import math
import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from throttling.core.backoff import decorrelated_jitter_delay, exponential_delay, full_jitter_delay
from throttling.core.circuit_breaker import BreakerPolicy, BreakerState, BreakerStatus, allow, force_open, record
from throttling.core.clock import FakeClock
from throttling.core.rate_limit_headers import parse_rate_limit_headers
from throttling.core.rate_limiter import InMemoryRateLimiter, RatePolicy, decide, on_grid, stale_token_after_sec
from throttling.core.semaphore import SemaphoreState, in_use, release, try_acquire

MODEST = settings(max_examples=200, deadline=None)

# Float rounding in the accumulated TAT may admit a request a few ulps early; a micro-unit of
# slack keeps the bound about the algorithm rather than about IEEE 754.
COST_SLACK = 1e-6

policies = st.builds(
    RatePolicy,
    rate_per_sec=st.floats(min_value=0.1, max_value=200.0),
    burst=st.integers(min_value=1, max_value=20),
)
gaps_sec = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=3.0))


@MODEST
@given(
    policy=policies,
    start_sec=st.floats(min_value=0.0, max_value=1e6),
    arrivals=st.lists(st.tuples(gaps_sec, st.integers(min_value=1, max_value=20)), max_size=80),
)
def test_limiter_never_admits_more_than_burst_plus_rate_times_interval(policy, start_sec, arrivals):
    # GIVEN a limiter on a fake clock
    clock = FakeClock(start_sec)
    limiter = InMemoryRateLimiter(policy, clock)

    # WHEN arbitrary requests arrive with arbitrary costs
    admitted: list[tuple[float, int]] = []
    for gap_sec, raw_cost in arrivals:
        clock.advance(gap_sec)
        cost = min(raw_cost, policy.burst)
        if limiter.try_acquire(cost).allowed:
            admitted.append((clock.now(), cost))

    # THEN every interval between two admissions holds at most burst + rate * length of cost
    for i, (first_sec, _) in enumerate(admitted):
        for last_sec, _ in admitted[i:]:
            cost_in_interval = sum(cost for at_sec, cost in admitted if first_sec <= at_sec <= last_sec)
            assert cost_in_interval <= policy.burst + policy.rate_per_sec * (last_sec - first_sec) + COST_SLACK


@MODEST
@given(
    policy=policies,
    now=st.floats(min_value=0.0, max_value=1e6),
    ahead_sec=st.floats(min_value=0.0, max_value=100.0),
    raw_cost=st.integers(min_value=1, max_value=20),
)
def test_retry_after_is_exact(policy, now, ahead_sec, raw_cost):
    # GIVEN any stored TAT at or ahead of now, and any affordable cost
    cost = min(raw_cost, policy.burst)
    tat = now + ahead_sec

    # WHEN the request is denied
    denied = decide(tat, now, policy, cost)
    if denied.allowed:
        return

    # THEN retrying at now + retry_after is admitted, and a microsecond earlier is not
    assert denied.retry_after_sec > 0
    assert decide(tat, now + denied.retry_after_sec, policy, cost).allowed
    assert not decide(tat, now + denied.retry_after_sec - 1e-6, policy, cost).allowed


# The whole range the tunables allow, and instants like today's epoch, where a float's ulp is 2.4e-7 s.
any_policy = st.builds(
    RatePolicy,
    rate_per_sec=st.one_of(st.floats(min_value=0.01, max_value=10_000.0), st.sampled_from([9.9, 1.98, 4.95, 0.8, 10 / 3])),
    burst=st.integers(min_value=1, max_value=5_000),
)
epoch_instants = st.one_of(st.floats(min_value=0.0, max_value=4e9), st.floats(min_value=1.6e9, max_value=1.9e9))


@MODEST
@given(policy=any_policy, now=epoch_instants, raw_costs=st.lists(st.integers(min_value=1, max_value=5_000), max_size=40))
def test_a_lone_caller_that_waits_exactly_its_retry_after_is_admitted(policy, now, raw_costs):
    # GIVEN a lone caller on a fresh limiter, at any instant, asking for any affordable costs
    clock = FakeClock(now)
    limiter = InMemoryRateLimiter(policy, clock)
    for raw_cost in raw_costs or [1]:
        cost = min(raw_cost, policy.burst)
        decision = limiter.try_acquire(cost)
        if decision.allowed:
            continue
        # WHEN it is refused and waits exactly what it was told (the clock's own float sum)
        assert decision.retry_after_sec > 0
        clock.advance(decision.retry_after_sec)
        # THEN it is admitted: never "retry after 0"
        assert limiter.try_acquire(cost).allowed


@MODEST
@given(rate_per_sec=st.floats(min_value=0.01, max_value=10_000.0), burst=st.integers(min_value=1, max_value=200),
       now=epoch_instants)
# Found on the seed's core: float rounding in the accumulated TAT refused the last token of the burst.
@example(rate_per_sec=76.09863486680844, burst=13, now=1757744670.2271028)
@example(rate_per_sec=6.450775192832652, burst=14, now=1709853986.278504)
def test_a_burst_of_burst_requests_at_one_instant_is_all_admitted(rate_per_sec, burst, now):
    # GIVEN a fresh limiter / WHEN `burst` requests arrive at one instant THEN all are admitted, and no more
    limiter = InMemoryRateLimiter(RatePolicy(rate_per_sec, burst), FakeClock(now))
    assert all(limiter.try_acquire().allowed for _ in range(burst))
    assert not limiter.try_acquire().allowed


@MODEST
@given(policy=any_policy, now=epoch_instants, idle_sec=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e6)),
       costs=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=60))
def test_requests_costing_a_burst_in_all_at_one_instant_are_all_admitted(policy, now, idle_sec, costs):
    # GIVEN a limiter that is full (never used, or idle since a TAT it stored, on its grid, at or before now)
    state_tat = None if idle_sec is None else on_grid(now - idle_sec)
    # WHEN requests whose costs add up to at most the burst arrive at one instant
    admitted_cost = 0
    for cost in costs:
        if admitted_cost + cost > policy.burst:
            break
        decision = decide(state_tat, now, policy, cost)
        # THEN every one is admitted
        assert decision.allowed, (admitted_cost, cost, policy)
        state_tat, admitted_cost = decision.new_tat, admitted_cost + cost
    # AND past the burst, the next unit is refused
    if admitted_cost == policy.burst:
        assert not decide(state_tat, now, policy).allowed


semaphore_steps = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.integers(0, 6), st.floats(min_value=0.01, max_value=10.0)),
        st.tuples(st.just("release"), st.integers(0, 6), st.just(0.0)),
        st.tuples(st.just("advance"), st.just(0), st.floats(min_value=0.0, max_value=5.0)),
        # Backwards jumps stand for another host's clock running behind.
        st.tuples(st.just("rewind"), st.just(0), st.floats(min_value=0.0, max_value=2.0)),
    ),
    max_size=100,
)


@MODEST
def refused_by_bucket(arrivals_sec: list[float], policy: RatePolicy) -> int:
    """How many of these arrivals a token bucket of `policy` (full at first) refuses: the downstream's view."""
    tokens, last, refused = float(policy.burst), None, 0
    for at in sorted(arrivals_sec):
        if last is not None:
            tokens = min(float(policy.burst), tokens + (at - last) * policy.rate_per_sec)
        last = at
        if tokens + 1e-9 >= 1:
            tokens = max(0.0, tokens - 1)
        else:
            refused += 1
    return refused


@settings(max_examples=300, deadline=None)
@given(
    downstream_rate=st.floats(min_value=0.5, max_value=50),
    downstream_burst=st.integers(min_value=1, max_value=10),
    rate_fraction=st.floats(min_value=0.5, max_value=1.0),
    burst_cut=st.integers(min_value=0, max_value=4),
    idle_then_late=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60),
)
def test_calls_sent_within_twice_the_stale_age_of_their_token_are_never_refused_downstream(
    downstream_rate, downstream_burst, rate_fraction, burst_cut, idle_then_late
):
    # GIVEN a limiter no looser than the downstream, asked as often as it admits (or after a pause that refills it)
    downstream = RatePolicy(downstream_rate, downstream_burst)
    limiter_policy = RatePolicy(downstream_rate * rate_fraction, max(1, downstream_burst - burst_cut))
    stale_sec = stale_token_after_sec(limiter_policy, downstream)
    spread_sec = 0.0 if stale_sec == float("inf") else 2 * stale_sec
    clock = FakeClock(1000.0)
    limiter = InMemoryRateLimiter(limiter_policy, clock)
    arrivals = []
    for idle, late in idle_then_late:
        clock.advance(limiter_policy.burst / limiter_policy.rate_per_sec if idle else 0.0)
        while not limiter.try_acquire().allowed:
            clock.advance(0.01 / limiter_policy.rate_per_sec)
        # WHEN each call reaches the downstream at once or the whole spread after its decision (the extremes:
        # arrivals bunch most when earlier decisions are late and later ones are not)
        arrivals.append(clock.now() + (spread_sec if late else 0.0))
    # THEN the downstream refuses none: half the spread for the limiter's round trip, half for the way there
    assert refused_by_bucket(arrivals, downstream) == 0


def test_a_call_lagging_its_token_by_more_than_the_spread_can_be_refused():
    # GIVEN a model's 5 at 5/s and a limiter of 4 at 4.5/s: a spread of 2/4.5 - 1/5 s
    downstream, limiter_policy = RatePolicy(5.0, 5), RatePolicy(4.5, 4)
    spread_sec = 2 * stale_token_after_sec(limiter_policy, downstream)
    clock = FakeClock(1000.0)
    limiter = InMemoryRateLimiter(limiter_policy, clock)
    decided = []
    for _ in range(6):  # a burst of 4 at once, then one each 1/4.5 s
        while not limiter.try_acquire().allowed:
            clock.advance(0.001)
        decided.append(clock.now())
    # WHEN the burst's calls are late by a little more than the spread, the fifth joins them, the sixth is on time
    late = decided[0] + spread_sec + 0.01
    arrivals = [late] * 5 + [decided[5]]
    # THEN six arrive within less than one token's time of the downstream's burst, and one is refused
    assert decided[4] <= late and decided[5] - late < 1 / downstream.rate_per_sec
    assert refused_by_bucket(arrivals, downstream) == 1


@given(limit=st.integers(min_value=0, max_value=4), steps=semaphore_steps)
def test_semaphore_never_holds_more_than_limit_live_leases(limit, steps):
    # GIVEN an empty semaphore
    state, now = SemaphoreState(limit=limit), 0.0

    # WHEN owners acquire, release and time moves, in any interleaving
    for action, owner, seconds in steps:
        if action == "acquire":
            _, state = try_acquire(state, f"owner-{owner}", now, lease_sec=seconds)
        elif action == "release":
            state = release(state, f"owner-{owner}")
        elif action == "advance":
            now += seconds
        else:
            now -= seconds

        # THEN no more than `limit` leases are ever live (nor even held)
        assert in_use(state, now) <= limit
        assert state.lease_count <= limit


BREAKER_POLICY = BreakerPolicy(
    failure_rate_threshold=0.5,
    slow_call_rate_threshold=0.5,
    slow_call_duration_sec=2.0,
    minimum_calls=3,
    window_sec=10.0,
    window_buckets=5,
    open_duration_sec=5.0,
    probe_lease_sec=3.0,
)
breaker_steps = st.lists(
    st.one_of(
        st.tuples(st.just("allow"), st.integers(0, 4), st.booleans(), st.just(0.0)),
        st.tuples(st.just("record"), st.integers(0, 4), st.booleans(), st.floats(min_value=0.0, max_value=4.0)),
        st.tuples(st.just("advance"), st.just(0), st.booleans(), st.floats(min_value=0.0, max_value=4.0)),
        st.tuples(st.just("force_open"), st.just(0), st.booleans(), st.just(0.0)),
    ),
    max_size=120,
)


@MODEST
@given(start_sec=st.floats(min_value=0.0, max_value=2e9), steps=breaker_steps)
def test_breaker_admits_one_probe_at_a_time_and_never_sticks_half_open(start_sec, steps):
    # GIVEN a closed breaker
    state, now = BreakerState(), start_sec
    live_probe: tuple[str, float] | None = None  # (caller, lease end) of the probe of this half-open spell
    last_grant_sec = now

    # WHEN callers ask, report, time passes and alarms force it open, in any order
    for action, caller_index, success, seconds in steps:
        caller = f"caller-{caller_index}"
        if action == "allow":
            was_half_open = state.status is BreakerStatus.HALF_OPEN
            admission, state = allow(state, BREAKER_POLICY, now, caller)
            if admission.is_probe:
                # THEN a second caller is never admitted as a probe while another probe's lease is live
                if was_half_open and live_probe is not None and live_probe[0] != caller:
                    assert live_probe[1] <= now
                if live_probe is None or live_probe[0] != caller:
                    live_probe, last_grant_sec = (caller, now + BREAKER_POLICY.probe_lease_sec), now
        elif action == "record":
            state = record(state, BREAKER_POLICY, now, success=success, duration_sec=seconds, caller_id=caller)
        elif action == "advance":
            now += seconds
        else:
            state = force_open(state, BREAKER_POLICY, now, reason="alarm")
        if state.status is not BreakerStatus.HALF_OPEN:
            live_probe = None

        # THEN a half-open breaker's lease never outlives probe_lease_sec, and once it ran out the
        # next caller becomes the probe
        if state.status is BreakerStatus.HALF_OPEN:
            assert state.probe_expires_at is not None
            assert state.probe_expires_at <= last_grant_sec + BREAKER_POLICY.probe_lease_sec
            later = max(now, state.probe_expires_at)
            admission, _ = allow(state, BREAKER_POLICY, later, "someone-new")
            assert admission.allowed and admission.is_probe
        # AND every reachable state survives a round trip through its DynamoDB item
        assert BreakerState.from_item(state.to_item()) == state


rate_limit_header_names = st.sampled_from(
    [
        "Retry-After",
        "retry-after",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "RateLimit",
        "RateLimit-Policy",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
    ]
)
header_like_values = st.one_of(
    st.text(),
    st.text(alphabet='0123456789.,;="-rtqwlimeaingsdfu ', max_size=40),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
)


@MODEST
@given(
    arbitrary=st.dictionaries(st.text(), st.text(), max_size=5),
    known=st.lists(st.tuples(rate_limit_header_names, header_like_values), max_size=8),
    now=st.floats(min_value=0.0, max_value=4e9),
)
def test_header_parsing_never_raises_and_never_returns_a_negative_wait(arbitrary, known, now):
    # GIVEN / WHEN arbitrary text in arbitrary and in known rate-limit headers
    for headers in (arbitrary, known, list(arbitrary.items()) + known):
        info = parse_rate_limit_headers(headers, now=now)

        # THEN the parser answers, with non-negative numbers
        assert info.wait_sec is None or info.wait_sec >= 0
        assert info.remaining is None or info.remaining >= 0
        assert info.limit is None or info.limit >= 0
        # AND a published rate only with its window, both positive and finite (what the inner loop may believe)
        assert (info.published_per_sec is None) == (info.window_sec is None)
        if info.published_per_sec is not None:
            assert 0 < info.published_per_sec < math.inf and 0 < info.window_sec < math.inf


@MODEST
@given(
    attempt=st.integers(min_value=1, max_value=5_000),
    base_sec=st.floats(min_value=0.0, max_value=100.0),
    cap_sec=st.floats(min_value=0.0, max_value=1_000.0),
    backoff_rate=st.floats(min_value=1.0, max_value=10.0),
    seed=st.integers(),
)
def test_full_jitter_delay_is_within_zero_and_the_capped_backoff(attempt, base_sec, cap_sec, backoff_rate, seed):
    # GIVEN / WHEN a full-jitter delay is drawn
    delay = full_jitter_delay(attempt, base_sec, cap_sec, backoff_rate, rng=random.Random(seed))

    # THEN it lies in [0, min(cap, base * rate ** (attempt - 1))]
    assert 0.0 <= delay <= exponential_delay(attempt, base_sec, cap_sec, backoff_rate) <= cap_sec


@MODEST
@given(
    previous_sec=st.floats(min_value=0.0, max_value=1e6),
    base_sec=st.floats(min_value=0.0, max_value=100.0),
    cap_sec=st.floats(min_value=0.0, max_value=1_000.0),
    seed=st.integers(),
)
def test_decorrelated_jitter_delay_is_within_zero_and_cap(previous_sec, base_sec, cap_sec, seed):
    # GIVEN / WHEN a decorrelated-jitter delay is drawn
    delay = decorrelated_jitter_delay(previous_sec, base_sec, cap_sec, rng=random.Random(seed))

    # THEN it lies in [0, cap]
    assert 0.0 <= delay <= cap_sec

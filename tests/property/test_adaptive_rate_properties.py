"""Property-based tests of the limiter's inner loop on a fake clock: whatever the calls, signals and gaps,
the rate stays within [floor, contract], only a signal lowers it, a Retry-After is honoured by every
caller, an overload's burst of 429s cuts once, and admissions never exceed what the contract allows."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from throttling.core.adaptive_rate import PUBLISHED_TTL_SEC, AdaptiveRatePolicy, InMemoryAdaptiveRateLimiter
from throttling.core.clock import FakeClock
from throttling.core.rate_limiter import RatePolicy

MODEST = settings(max_examples=200, deadline=None)
# Float rounding of accumulated TATs and grid roundings: a micro-unit of slack keeps the bounds about the algorithm.
SLACK = 1e-6

contracts = st.builds(RatePolicy, rate_per_sec=st.floats(min_value=0.5, max_value=100.0), burst=st.integers(1, 20))
loops = st.builds(
    AdaptiveRatePolicy,
    decrease_factor=st.floats(min_value=0.1, max_value=0.95),
    increase_fraction_per_sec=st.floats(min_value=0.001, max_value=0.5),
    floor_fraction=st.floats(min_value=0.01, max_value=0.2),
    seed_fraction=st.floats(min_value=0.2, max_value=1.0),
    max_block_sec=st.floats(min_value=0.0, max_value=30.0),
)
# (gap before, what happens): take a token, or report a signal for one of the calls admitted so far
steps = st.lists(
    st.tuples(
        st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=2.0)),
        st.one_of(
            st.just(("take",)),
            st.tuples(st.just("signal"), st.integers(0, 1_000), st.one_of(st.none(), st.floats(0.0, 60.0))),
        ),
    ),
    max_size=120,
)


@MODEST
@given(contract=contracts, loop=loops, steps=steps)
def test_the_inner_loop_keeps_its_invariants(contract, loop, steps):
    # GIVEN an adaptive bucket on a fake clock
    clock = FakeClock(1_000.0)
    limiter = InMemoryAdaptiveRateLimiter(contract, loop, clock)
    floor, ceiling = loop.floor_fraction * contract.rate_per_sec, contract.rate_per_sec
    admitted: list[float] = []
    blocks: list[tuple[int, float, float]] = []  # (admissions before the signal, from, until)
    last_cut_effective_at = None

    # WHEN calls and signals arrive in any order, with any gaps
    for gap, step in steps:
        before_gap = limiter.rate_per_sec
        clock.advance(gap)
        # THEN time alone never lowers the rate
        assert limiter.rate_per_sec >= before_gap - SLACK
        rate_before = limiter.rate_per_sec
        if step[0] == "take":
            decision = limiter.try_acquire()
            if decision.allowed:
                admitted.append(clock.now())
            assert limiter.rate_per_sec == rate_before
        elif admitted:
            admitted_at = admitted[step[1] % len(admitted)]
            outcome = limiter.report_signal(admitted_at, step[2])
            if step[2] is not None and step[2] > 0:
                blocks.append((len(admitted), clock.now(), clock.now() + min(step[2], loop.max_block_sec)))
            if outcome.cut:
                # THEN a cut comes only from a call admitted at or after the last cut took effect
                assert last_cut_effective_at is None or admitted_at >= last_cut_effective_at - SLACK
                last_cut_effective_at = limiter.state.rate_base_at
                assert limiter.rate_per_sec <= rate_before + SLACK
            else:
                # THEN a signal that did not count changed no rate
                assert limiter.rate_per_sec == rate_before
        # THEN the rate stays within [floor, contract]
        assert floor - SLACK <= limiter.rate_per_sec <= ceiling + SLACK

    # THEN no call was admitted inside a Retry-After reported before it
    for index, at in enumerate(admitted):
        assert not any(index >= later and start <= at < end - SLACK for later, start, end in blocks), (at, blocks)
    # THEN over any interval, admissions never exceed the contract's burst plus its rate times the interval
    for i, first in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= contract.burst + contract.rate_per_sec * (admitted[j] - first) + SLACK


@MODEST
@given(contract=contracts, loop=loops, callers=st.integers(2, 50), retry_after=st.one_of(st.none(), st.floats(0.0, 10.0)),
       delay=st.floats(0.0, 5.0))
def test_many_callers_answering_one_overload_cut_once(contract, loop, callers, retry_after, delay):
    # GIVEN calls admitted at one instant by many callers
    clock = FakeClock(1_000.0)
    limiter = InMemoryAdaptiveRateLimiter(contract, loop, clock)
    decisions = [limiter.try_acquire() for _ in range(callers)]
    admitted = [d.decided_at for d in decisions if d.allowed]
    # WHEN every one of them meets a 429 some time later
    clock.advance(delay)
    outcomes = [limiter.report_signal(at, retry_after) for at in admitted if at is not None]
    # THEN the rate was cut exactly once, by exactly the decrease factor (or to the floor)
    assert sum(o.cut for o in outcomes) == 1
    cut = next(o for o in outcomes if o.cut)
    expected = max(loop.floor_fraction * contract.rate_per_sec, cut.rate_before_per_sec * loop.decrease_factor)
    assert abs(cut.rate_after_per_sec - expected) <= SLACK


publishing_steps = st.lists(
    st.tuples(
        st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=200.0)),
        st.one_of(
            st.just(("take",)),
            st.tuples(st.just("signal"), st.integers(0, 1_000), st.one_of(st.none(), st.floats(0.0, 5.0))),
            st.tuples(st.just("publish"), st.integers(0, 1_000), st.floats(min_value=0.1, max_value=200.0)),
        ),
    ),
    max_size=80,
)


@MODEST
@given(contract=contracts, loop=loops, steps=publishing_steps)
def test_a_published_limit_caps_the_rate_while_it_is_believed_and_never_lifts_it_past_the_contract(contract, loop, steps):
    # GIVEN an adaptive bucket on a fake clock, whose downstream publishes limits in some of its answers
    clock = FakeClock(1_000.0)
    limiter = InMemoryAdaptiveRateLimiter(contract, loop, clock)
    floor, ceiling = loop.floor_fraction * contract.rate_per_sec, contract.rate_per_sec
    admitted: list[float] = []
    believed: tuple[float, float] | None = None  # (published rate, admission of the call that carried it)

    # WHEN calls, signals and publications arrive in any order, with any gaps
    for gap, step in steps:
        before_gap = limiter.rate_per_sec
        clock.advance(gap)
        if believed is not None and clock.now() >= believed[1] + PUBLISHED_TTL_SEC:
            believed = None
        # THEN time alone never lowers the rate (an expired publication can only lift it)
        assert limiter.rate_per_sec >= before_gap - SLACK
        rate_before = limiter.rate_per_sec
        if step[0] == "take":
            decision = limiter.try_acquire()
            if decision.allowed:
                admitted.append(clock.now())
        elif step[0] == "signal" and admitted:
            limiter.report_signal(admitted[step[1] % len(admitted)], step[2])
        elif step[0] == "publish" and admitted:
            admitted_at = admitted[step[1] % len(admitted)]
            recorded = limiter.report_published(admitted_at, step[2])
            # THEN an answer to a call older than the one believed is never news
            if believed is not None and admitted_at < believed[1] - SLACK:
                assert not recorded
            if recorded:
                believed = (step[2], admitted_at)
            elif believed is None or admitted_at < believed[1] - SLACK:
                assert limiter.rate_per_sec == rate_before
        # THEN while a published rate is believed, the bucket admits no faster than it less its headroom
        if believed is not None:
            assert limiter.rate_per_sec <= believed[0] * (1 - loop.published_headroom) + SLACK
        # AND never faster than the contract, nor slower than the floor unless the downstream asked for less
        cap = ceiling if believed is None else min(ceiling, believed[0] * (1 - loop.published_headroom))
        assert min(floor, cap) - SLACK <= limiter.rate_per_sec <= ceiling + SLACK

    # THEN over any interval, admissions never exceed the contract's burst plus its rate times the interval
    for i, first in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= contract.burst + contract.rate_per_sec * (admitted[j] - first) + SLACK

"""Property-based tests of the pure controller: for any sequence of periods, it stays in bounds,
never rises under overload, moves in bounded steps, and cuts at most once per cooldown."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from throttling.core.controller import (
    AlarmSignal,
    Bounds,
    ControllerPolicy,
    ControllerState,
    Gradient,
    PeriodMetrics,
    Setting,
    decide,
)

BOUNDS = Bounds(min_concurrency=1, max_concurrency=8, min_rate_per_sec=0.9, max_rate_per_sec=9.0, max_burst=9,
                expected_latency_ms=1000)
AIMD = ControllerPolicy()
GRADIENT = ControllerPolicy(algorithm=Gradient())

metric_periods = st.one_of(
    st.none(),
    st.builds(
        PeriodMetrics,
        calls=st.one_of(st.none(), st.floats(0, 5000)),
        throttled=st.floats(0, 1000),
        server_errors=st.floats(0, 500),
        timeouts=st.floats(0, 100),
        limiter_refused=st.floats(0, 100),
        latency_p50_ms=st.one_of(st.none(), st.floats(1, 10_000)),
        latency_p99_ms=st.one_of(st.none(), st.floats(1, 20_000)),
        latency_mean_ms=st.one_of(st.none(), st.floats(1, 10_000)),
    ),
)
steps = st.lists(
    st.tuples(metric_periods, st.booleans(), st.sampled_from([0.0, 30.0, 60.0, 60.0, 120.0])),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    steps=steps,
    start=st.builds(Setting, st.integers(1, 8), st.sampled_from([0.9, 2.0, 4.5, 9.0])),
    policy=st.sampled_from([AIMD, GRADIENT, AIMD.with_p99_latency_threshold(2000)]),
)
def test_any_sequence_stays_in_bounds_never_rises_under_overload_and_moves_in_bounded_steps(steps, start, policy):
    setting, state, now, period_end = start, ControllerState(), 1_000_000.0, 1_000_000.0
    last_decrease = None
    for metrics, alarmed, gap_sec in steps:
        now += gap_sec
        period_end = max(period_end, math.floor((now - 30) / 60) * 60)
        alarms = [AlarmSignal("a", "throttled")] if alarmed else []
        decision = decide(metrics, setting, BOUNDS, state, policy, now=now, period_end=period_end, alarms=alarms)
        after = decision.setting
        # always within bounds
        assert BOUNDS.contains(after)
        # a hold changes nothing; any change says why
        if decision.action == "hold":
            assert after == setting
        assert decision.reason
        overloaded = alarmed or (
            metrics is not None and metrics.calls is not None and metrics.calls >= policy.min_calls
            and (metrics.throttle_rate > policy.throttle_rate_threshold
                 or metrics.error_rate > policy.error_rate_threshold)
        )
        if overloaded:
            assert after.max_concurrency <= setting.max_concurrency
            assert after.rate_per_sec <= setting.rate_per_sec
        # bounded growth per period
        assert after.max_concurrency - setting.max_concurrency <= policy.concurrency_step
        assert after.rate_per_sec - setting.rate_per_sec <= policy.rate_step_fraction * BOUNDS.max_rate_per_sec + 1e-9
        # decreases at least one cooldown apart
        if decision.action == "decrease":
            if last_decrease is not None:
                assert now - last_decrease >= policy.cooldown_sec
            last_decrease = now
        setting, state = after, decision.state


@settings(max_examples=300, deadline=None)
@given(
    phase_sec=st.integers(0, 59),
    periods=st.lists(st.builds(PeriodMetrics, calls=st.floats(10, 5000), throttled=st.floats(0, 1000),
                               latency_p50_ms=st.floats(1, 2000), latency_mean_ms=st.floats(1, 2000)),
                     min_size=1, max_size=30),
    policy=st.sampled_from([AIMD, GRADIENT, ControllerPolicy(cooldown_sec=0)]),
)
def test_at_any_phase_every_change_is_judged_on_a_period_that_began_after_the_previous_one_took_effect(
    phase_sec, periods, policy
):
    # GIVEN the schedule firing at any second of the minute, each run reading the last complete period
    setting, state = Setting(8, 9.0), ControllerState()
    changed_at: float | None = None
    for index, metrics in enumerate(periods):
        now = 1_000_000.0 + 60 * index + phase_sec
        period_end = math.floor((now - 30) / 60) * 60
        # WHEN the controller judges it (no alarm: the metrics alone)
        decision = decide(metrics, setting, BOUNDS, state, policy, now=now, period_end=period_end)
        # THEN any change it makes rests on a period whose every second ran at the setting in force
        if decision.changed:
            if changed_at is not None:
                assert period_end - 60 >= changed_at + policy.setting_propagation_sec, (changed_at, now, period_end)
            changed_at = now
        setting, state = decision.setting, decision.state

"""Unit tests of the circuit breaker state machine."""

from __future__ import annotations

from decimal import Decimal

import pytest

from throttling.core.circuit_breaker import (
    BreakerPolicy,
    BreakerState,
    BreakerStatus,
    allow,
    force_close,
    force_open,
    record,
    window_totals,
)

POLICY = BreakerPolicy(
    failure_rate_threshold=0.5,
    slow_call_rate_threshold=0.5,
    slow_call_duration_sec=2.0,
    minimum_calls=4,
    window_sec=10.0,
    window_buckets=5,
    open_duration_sec=30.0,
    probe_lease_sec=5.0,
)


def _record_many(state, now, outcomes, duration_sec=0.1):
    for index, success in enumerate(outcomes):
        state = record(state, POLICY, now, success=success, duration_sec=duration_sec, caller_id=f"c{index}")
    return state


def _open_breaker(now=0.0):
    return force_open(BreakerState(), POLICY, now, reason="test")


def test_closed_breaker_admits_everyone_without_a_write():
    # GIVEN a fresh breaker
    state = BreakerState()

    # WHEN a caller asks
    admission, new_state = allow(state, POLICY, 0.0, "caller")

    # THEN it is admitted and the state is unchanged (nothing to write)
    assert admission.allowed and not admission.is_probe
    assert new_state is state


def test_opens_when_failure_rate_reaches_threshold_after_minimum_calls():
    # GIVEN three calls, two failed (below minimum_calls, so still closed)
    state = _record_many(BreakerState(), 1.0, [True, False, False])
    assert state.status is BreakerStatus.CLOSED

    # WHEN a fourth call fails (3 of 4 failed)
    state = record(state, POLICY, 1.0, success=False, duration_sec=0.1, caller_id="c4")

    # THEN the breaker opens for open_duration_sec and says why
    assert state.status is BreakerStatus.OPEN
    assert state.open_until == 31.0
    assert state.reason.startswith("failure rate 0.75 >= 0.5 over 4 calls")


def test_stays_closed_below_the_failure_rate():
    # GIVEN / WHEN one failure in four calls
    state = _record_many(BreakerState(), 1.0, [True, True, True, False])

    # THEN the breaker stays closed and counts all of them
    assert state.status is BreakerStatus.CLOSED
    totals = window_totals(state, POLICY, 1.0)
    assert (totals.calls, totals.failures) == (4, 1)


def test_opens_on_slow_call_rate_even_when_calls_succeed():
    # GIVEN / WHEN four successful calls, two of them as slow as slow_call_duration_sec
    state = BreakerState()
    for index, duration in enumerate([0.1, 2.0, 0.1, 3.0]):
        state = record(state, POLICY, 1.0, success=True, duration_sec=duration, caller_id=f"c{index}")

    # THEN the breaker opens on the slow-call rate
    assert state.status is BreakerStatus.OPEN
    assert state.reason.startswith("slow-call rate 0.50 >= 0.5")


def test_old_failures_slide_out_of_the_window():
    # GIVEN three failures at t=0
    state = _record_many(BreakerState(), 0.0, [False, False, False])

    # WHEN a success comes in after the window (10 s) has passed
    state = record(state, POLICY, 10.0, success=True, duration_sec=0.1, caller_id="late")

    # THEN only the late call counts and the breaker stays closed
    assert state.status is BreakerStatus.CLOSED
    assert window_totals(state, POLICY, 10.0).calls == 1


def test_open_breaker_refuses_with_retry_after_until_open_until():
    # GIVEN a breaker opened at t=0 for 30 s
    state = _open_breaker()

    # WHEN a caller asks at t=12
    admission, new_state = allow(state, POLICY, 12.0, "caller")

    # THEN it is refused, told to come back in 18 s, and nothing changes
    assert not admission.allowed
    assert admission.retry_after_sec == pytest.approx(18.0)
    assert new_state is state


def test_after_open_duration_exactly_one_caller_probes():
    # GIVEN a breaker whose opening has just run out
    state = _open_breaker()

    # WHEN two callers ask at t=30
    first, state = allow(state, POLICY, 30.0, "prober")
    second, state = allow(state, POLICY, 30.0, "other")

    # THEN the first becomes the single probe and the second waits for the probe lease
    assert first.allowed and first.is_probe
    assert state.status is BreakerStatus.HALF_OPEN
    assert state.probe_owner == "prober" and state.probe_expires_at == 35.0
    assert not second.allowed
    assert second.retry_after_sec == pytest.approx(5.0)


def test_prober_asking_again_is_still_the_probe_and_the_lease_is_not_extended():
    # GIVEN a half-open breaker probed by "prober" since t=30
    _, state = allow(_open_breaker(), POLICY, 30.0, "prober")

    # WHEN the prober asks again at t=33
    again, new_state = allow(state, POLICY, 33.0, "prober")

    # THEN it is admitted as the same probe without a new lease
    assert again.allowed and again.is_probe
    assert new_state is state


def test_probe_success_closes_with_a_fresh_window():
    # GIVEN a half-open breaker
    _, state = allow(_open_breaker(), POLICY, 30.0, "prober")

    # WHEN the probe succeeds quickly
    state = record(state, POLICY, 31.0, success=True, duration_sec=0.5, caller_id="prober")

    # THEN the breaker is closed with nothing counted
    assert state.status is BreakerStatus.CLOSED
    assert state.probe_owner is None
    assert window_totals(state, POLICY, 31.0).calls == 0


@pytest.mark.parametrize(
    ("success", "duration_sec", "reason"),
    [(False, 0.5, "probe failed"), (True, 2.5, "probe was slow (2.5s >= 2s)")],
)
def test_failed_or_slow_probe_opens_again(success, duration_sec, reason):
    # GIVEN a half-open breaker
    _, state = allow(_open_breaker(), POLICY, 30.0, "prober")

    # WHEN the probe fails or is slow
    state = record(state, POLICY, 32.0, success=success, duration_sec=duration_sec, caller_id="prober")

    # THEN the breaker opens again for a full open duration
    assert state.status is BreakerStatus.OPEN
    assert state.open_until == 62.0
    assert state.reason == reason


def test_dead_prober_does_not_keep_the_breaker_half_open():
    # GIVEN a probe taken at t=30 whose Lambda died
    _, state = allow(_open_breaker(), POLICY, 30.0, "dead")

    # WHEN another caller asks once the probe lease (5 s) ran out
    admission, state = allow(state, POLICY, 35.0, "next")

    # THEN it becomes the new probe
    assert admission.allowed and admission.is_probe
    assert state.probe_owner == "next"


def test_stragglers_do_not_decide_a_half_open_breaker():
    # GIVEN a half-open breaker probed by "prober"
    _, state = allow(_open_breaker(), POLICY, 30.0, "prober")

    # WHEN a call admitted before the breaker opened reports a success
    after = record(state, POLICY, 31.0, success=True, duration_sec=0.1, caller_id="straggler")

    # THEN nothing changes
    assert after is state


def test_force_open_never_shortens_an_opening():
    # GIVEN a breaker opened at t=0 for 30 s
    state = _open_breaker()

    # WHEN an alarm forces it open for 5 s at t=10, then for 60 s
    shorter = force_open(state, POLICY, 10.0, reason="alarm", duration_sec=5.0)
    longer = force_open(state, POLICY, 10.0, reason="alarm", duration_sec=60.0)

    # THEN the short forcing keeps the original end and the long one extends it
    assert shorter.open_until == 30.0
    assert longer.open_until == 70.0
    assert longer.reason == "forced: alarm"
    assert longer.opened_at == 0.0


def test_force_close_resets_an_open_breaker():
    # GIVEN / WHEN an open breaker is closed by an operator
    state = force_close(_open_breaker())

    # THEN it is closed and its version moved on
    assert state.status is BreakerStatus.CLOSED
    assert state.version == 2


def test_every_transition_bumps_the_version():
    # GIVEN a fresh breaker
    state = BreakerState()

    # WHEN it opens, goes half-open and closes
    opened = _open_breaker()
    _, half_open = allow(opened, POLICY, 30.0, "prober")
    closed = record(half_open, POLICY, 31.0, success=True, duration_sec=0.1, caller_id="prober")

    # THEN each step has a higher version (what the adapter's conditional write compares)
    assert [s.version for s in (state, opened, half_open, closed)] == [0, 1, 2, 3]


def test_item_round_trip_is_flat_and_readable_by_step_functions():
    # GIVEN a half-open breaker with a counted window behind it
    state = _record_many(BreakerState(), 1_700_000_000.0, [True, False])
    state = force_open(state, POLICY, 1_700_000_000.0, reason="alarm")
    _, state = allow(state, POLICY, 1_700_000_030.0, "prober")

    # WHEN it is written as an item and read back (numbers as DynamoDB's Decimal)
    item = state.to_item()
    as_read = {key: Decimal(str(value)) if isinstance(value, (int, float)) else value for key, value in item.items()}
    restored = BreakerState.from_item({**as_read, "pk": "breaker#payments"})

    # THEN the item holds only strings and numbers, with the status and RFC 3339 end, and round-trips
    assert all(isinstance(value, (str, int, float)) for value in item.values())
    assert item["status"] == "half_open"
    assert item["open_until_utc"] == "2023-11-14T22:13:50.000Z"
    assert restored == state


def test_closed_state_with_window_round_trips():
    # GIVEN a closed breaker with some calls counted
    state = _record_many(BreakerState(), 3.0, [True, False, True])

    # WHEN / THEN it round-trips through an item
    assert BreakerState.from_item(state.to_item()) == state
    assert state.to_item()["w1_calls"] == 3


def test_from_item_rejects_an_unknown_status():
    # GIVEN / WHEN / THEN
    with pytest.raises(ValueError, match="unknown status 'ajar'; expected one of closed, open, half_open"):
        BreakerState.from_item({"status": "ajar"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_rate_threshold": 0.0}, "failure_rate_threshold must be a rate in \\(0, 1\\], got 0.0"),
        ({"probe_lease_sec": -1.0}, "probe_lease_sec must be a number of seconds in \\[0.01, 86400\\], got -1.0"),
        ({"window_buckets": 0}, "window_buckets must be an int in \\[1, 60\\], got 0"),
        ({"minimum_calls": 0}, "minimum_calls must be an int in \\[1, 1000000\\], got 0"),
        # Beyond a day, or so large that float() overflows: refused by comparison, never an OverflowError
        ({"open_duration_sec": 86_401}, "open_duration_sec must be a number of seconds in \\[0.01, 86400\\], got 86401"),
        ({"window_sec": 10**400}, "window_sec must be a number of seconds in .*, got an integer of about 401 digits"),
        ({"window_sec": float("nan")}, "window_sec must be a number of seconds in .*, got nan"),
        ({"slow_call_duration_sec": 1e-300}, "slow_call_duration_sec must be a number of seconds in"),
        ({"minimum_calls": 10**400}, "minimum_calls must be an int in .*, got an integer of about 401 digits"),
    ],
)
def test_policy_rejects_bad_values(kwargs, message):
    # GIVEN / WHEN / THEN
    with pytest.raises(ValueError, match=message):
        BreakerPolicy(**kwargs)


def test_retuned_bucket_count_starts_a_fresh_window():
    # GIVEN a window counted with 5 buckets
    state = _record_many(BreakerState(), 1.0, [False, False, False])

    # WHEN the policy is retuned to 10 buckets
    retuned = BreakerPolicy(minimum_calls=4, window_sec=10.0, window_buckets=10)

    # THEN the old counts are dropped rather than misread
    assert window_totals(state, retuned, 1.0).calls == 0

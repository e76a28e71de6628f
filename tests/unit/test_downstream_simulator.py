"""Unit tests for the downstream simulator: decisions on a fake clock, then the HTTP plumbing and the CLI."""

from __future__ import annotations

import dataclasses
import email.utils
import json
import math
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localcloud.referee import downstream_simulator
from localcloud.referee.downstream_simulator import (
    PROFILES,
    DownstreamProfile,
    DownstreamSimulator,
    LatencyDistribution,
    SimulatedResponse,
    max_requests_in_window,
)

WALL_EPOCH_SEC = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_simulator(clock: FakeClock, seed: int = 0, **profile_fields: Any) -> DownstreamSimulator:
    fields = {"name": "test", "rate_per_sec": 2, "burst": 2, **profile_fields}
    start = clock.now
    return DownstreamSimulator(
        DownstreamProfile(**fields),
        clock=clock,
        sleep=FakeSleep(),
        # The wall clock moves with the monotonic one so epoch headers are predictable.
        wall_clock=lambda: WALL_EPOCH_SEC + (clock.now - start),
        seed=seed,
    )


def statuses_of(responses: list[SimulatedResponse]) -> list[int]:
    return [response.status for response in responses]


# ----- profile validation -----


@pytest.mark.parametrize(
    ("bad_fields", "expected_message"),
    [
        ({"name": ""}, "name must be a non-empty string, got ''"),
        ({"rate_per_sec": -1}, "rate_per_sec must be a finite number > 0, got -1"),
        ({"rate_per_sec": 0}, "rate_per_sec must be a finite number > 0, got 0"),
        ({"rate_per_sec": math.inf}, "rate_per_sec must be a finite number > 0, got inf"),
        ({"burst": 0}, "burst must be an integer >= 1, got 0"),
        ({"burst": 2.5}, "burst must be an integer >= 1, got 2.5"),
        ({"error_rate_5xx": 1.5}, "error_rate_5xx must be between 0 and 1, got 1.5"),
        ({"timeout_rate": -0.1}, "timeout_rate must be between 0 and 1, got -0.1"),
        ({"error_rate_5xx": 0.6, "timeout_rate": 0.6}, "error_rate_5xx + timeout_rate must be <= 1"),
        ({"timeout_hold_sec": -1}, "timeout_hold_sec must be a number >= 0, got -1"),
        ({"outage_windows_sec": ((5, 2),)}, "with 0 <= start_sec < end_sec, got (5, 2)"),
        ({"outage_windows_sec": ((-1, 2),)}, "with 0 <= start_sec < end_sec, got (-1, 2)"),
        ({"outage_windows_sec": ((1, 2, 3),)}, "with 0 <= start_sec < end_sec, got (1, 2, 3)"),
        ({"retry_after_style": "date"}, "retry_after_style must be 'seconds' or 'http-date', got 'date'"),
        ({"max_concurrency": 0}, "max_concurrency must be None (no cap) or an integer >= 1, got 0"),
        ({"max_batch_size": 0}, "max_batch_size must be None (no batch endpoint) or an integer >= 1, got 0"),
        ({"throttled_recipients": [1]}, "throttled_recipients must be a sequence of user ids"),
    ],
)
def test_profile_rejects_invalid_field_with_its_value(bad_fields: dict[str, Any], expected_message: str):
    # GIVEN a valid profile
    profile = DownstreamProfile(name="test", rate_per_sec=2)

    # WHEN one field is made invalid
    # THEN construction fails naming the field and the bad value
    with pytest.raises(ValueError, match=re.escape(expected_message)):
        dataclasses.replace(profile, **bad_fields)


@pytest.mark.parametrize(
    ("bad_fields", "expected_message"),
    [
        ({"kind": "normal"}, "latency kind must be one of fixed, uniform, lognormal, got 'normal'"),
        ({"median_ms": -5}, "latency median_ms must be a number >= 0, got -5"),
        ({"median_ms": 200, "jitter_ms": 300}, "got 300 with median_ms 200"),
        ({"sigma": -1}, "latency sigma must be a number >= 0, got -1"),
        ({"median_ms": 200, "max_ms": 100}, "latency max_ms must be None (no cap) or >= median_ms, got 100 < 200"),
    ],
)
def test_latency_rejects_invalid_field_with_its_value(bad_fields: dict[str, Any], expected_message: str):
    # GIVEN / WHEN a latency distribution with one invalid field
    # THEN construction fails naming the field and the bad value
    with pytest.raises(ValueError, match=re.escape(expected_message)):
        LatencyDistribution(**bad_fields)


def test_named_profiles_let_a_compliant_client_through_and_match_their_contract(dev_config):
    # GIVEN the named profiles, one per downstream the dev stage declares
    assert set(PROFILES) == {d.name for d in dev_config.downstreams}
    # WHEN their numbers are read
    # THEN each holds its downstream's contract, and every bucket exactly one second of its rate
    for downstream in dev_config.downstreams:
        profile = PROFILES[downstream.name]
        assert (profile.rate_per_sec, profile.burst) == (downstream.rate_limit_per_sec, downstream.burst), downstream.name
        assert profile.burst == profile.rate_per_sec, downstream.name
    # AND the mainframe takes one caller at a time, the AI model three (its `max_in_flight` in cdk.json), and the
    # CRM's batch endpoint as many recipients as configured
    assert PROFILES["legacy_mainframe"].max_concurrency == 1
    assert PROFILES["ai_model"].max_concurrency == dev_config.downstream("ai_model").max_in_flight == 3
    assert PROFILES["crm"].max_batch_size == dev_config.downstream("crm").max_batch_size
    assert all(p.error_rate_5xx == 0 and p.timeout_rate == 0 for p in PROFILES.values())


def test_merged_with_applies_json_shaped_partial_update():
    # GIVEN the AI model profile
    profile = PROFILES["ai_model"]

    # WHEN a JSON-shaped update halves capacity, adds an outage and speeds up the model
    updated = profile.merged_with(
        {"rate_per_sec": 2.5, "outage_windows_sec": [[10, 20]], "latency": {"median_ms": 100}}
    )

    # THEN only those fields change, and JSON lists become tuples
    assert updated.rate_per_sec == 2.5
    assert updated.outage_windows_sec == ((10, 20),)
    assert updated.latency == dataclasses.replace(profile.latency, median_ms=100)
    assert updated.burst == profile.burst


def test_merged_with_rejects_unknown_field():
    # GIVEN / WHEN an update with a misspelt field
    # THEN it fails naming the field and the valid ones
    with pytest.raises(ValueError, match=r"unknown profile field\(s\) \['rate'\]; expected some of"):
        PROFILES["crm"].merged_with({"rate": 5})


# ----- the token bucket -----


def test_bucket_admits_burst_then_denies_with_retry_after_from_the_clock():
    # GIVEN a 2 rps downstream with a burst of 2
    clock = FakeClock()
    simulator = make_simulator(clock, rate_per_sec=2, burst=2)

    # WHEN three requests arrive at the same instant, and a fourth 0.3 s later
    first_three = [simulator.decide("GET", "/users/42") for _ in range(3)]
    clock.advance(0.3)
    fourth = simulator.decide("GET", "/users/42")

    # THEN the burst is admitted and the rest are told when the next token arrives
    assert statuses_of(first_three) == [200, 200, 429]
    refused = first_three[2]
    assert refused.body == {"error": "rate_limited", "retry_after_sec": 0.5}
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert fourth.status == 429
    assert fourth.body["retry_after_sec"] == pytest.approx(0.2)


def test_retry_after_seconds_rounds_up():
    # GIVEN a downstream that refills one token every 2 s, already drained
    clock = FakeClock()
    simulator = make_simulator(clock, rate_per_sec=0.5, burst=1)
    simulator.decide("POST", "/records")

    # WHEN a request arrives 0.5 s later, 1.5 s before the next token
    clock.advance(0.5)
    refused = simulator.decide("POST", "/records")

    # THEN Retry-After is rounded up so a client honouring it is never early
    assert refused.headers["Retry-After"] == "2"
    assert refused.body["retry_after_sec"] == 1.5


def test_bucket_refills_at_rate_and_never_beyond_burst():
    # GIVEN a drained 2 rps downstream
    clock = FakeClock()
    simulator = make_simulator(clock, rate_per_sec=2, burst=2)
    simulator.decide("GET", "/a")
    simulator.decide("GET", "/a")

    # WHEN exactly one refill interval passes, and later a long idle period
    clock.advance(0.5)
    after_one_interval = [simulator.decide("GET", "/a") for _ in range(2)]
    clock.advance(100)
    after_idle = [simulator.decide("GET", "/a") for _ in range(3)]

    # THEN one token came back, and idling does not bank more than the burst
    assert statuses_of(after_one_interval) == [200, 429]
    assert statuses_of(after_idle) == [200, 200, 429]


def test_bursting_client_reaches_exactly_the_bucket_maximum_in_a_window():
    # GIVEN the CRM profile (10 rps, burst 10) and a client sending every millisecond for 2 s
    clock = FakeClock()
    simulator = DownstreamSimulator(PROFILES["crm"], clock=clock, sleep=FakeSleep())
    for _ in range(2000):
        simulator.decide("GET", "/users/42")
        clock.advance(0.001)

    # WHEN the busiest 1 s window of admitted requests is measured
    admitted_max = simulator.max_requests_in_window(1.0, statuses=[200])

    # THEN it is the burst plus the refills inside the window, which is why tests assert on the window
    assert admitted_max == PROFILES["crm"].max_admitted_in_window(1.0) == 19


@settings(max_examples=60, deadline=None)
@given(
    rate_per_sec=st.sampled_from([1, 2, 5, 10]),
    arrivals_ms=st.lists(st.integers(min_value=0, max_value=4000), max_size=60),
)
def test_client_within_rate_in_every_window_is_never_refused(rate_per_sec: int, arrivals_ms: list[int]):
    # GIVEN arrivals thinned so no half-open 1 s window holds more than rate_per_sec
    compliant_ms: list[int] = []
    for arrival in sorted(arrivals_ms):
        if sum(1 for kept in compliant_ms if kept > arrival - 1000) < rate_per_sec:
            compliant_ms.append(arrival)
    clock = FakeClock(0.0)
    simulator = make_simulator(clock, rate_per_sec=rate_per_sec, burst=rate_per_sec)

    # WHEN they arrive on the fake clock
    responses = []
    for arrival in compliant_ms:
        clock.now = arrival / 1000
        responses.append(simulator.decide("GET", "/a"))

    # THEN burst == rate refuses none of them, and the referee agrees they were compliant
    assert set(statuses_of(responses)) <= {200}
    assert simulator.max_requests_in_window(1.0) <= rate_per_sec


def test_rate_limit_headers_on_success():
    # GIVEN a 2 rps downstream that publishes its limit
    clock = FakeClock()
    simulator = make_simulator(clock, rate_per_sec=2, burst=2, publishes_limit=True)

    # WHEN one request is admitted
    response = simulator.decide("GET", "/users/42")

    # THEN the headers advertise the policy, what is left and when the bucket is full again
    assert response.headers["X-RateLimit-Limit"] == "2"
    assert response.headers["X-RateLimit-Remaining"] == "1"
    assert response.headers["X-RateLimit-Reset"] == str(int(WALL_EPOCH_SEC) + 1)
    assert response.headers["RateLimit-Policy"] == "2;w=1"
    assert response.headers["RateLimit"] == "limit=2, remaining=1, reset=1"
    assert "Retry-After" not in response.headers


def test_fractional_rate_is_advertised_over_a_longer_window():
    # GIVEN / WHEN a 2.5 rps downstream answers
    response = make_simulator(FakeClock(), rate_per_sec=2.5, burst=2, publishes_limit=True).decide("GET", "/a")

    # THEN the integer-only policy header spreads the quota over 2 s
    assert response.headers["RateLimit-Policy"] == "5;w=2"


@pytest.mark.parametrize("retry_after_style", ["seconds", "http-date"])
def test_both_retry_after_styles_parse_back_to_no_earlier_than_the_next_token(retry_after_style: str):
    # GIVEN a drained downstream whose next token is 0.25 s away
    clock = FakeClock()
    simulator = make_simulator(clock, rate_per_sec=2, burst=1, retry_after_style=retry_after_style)
    simulator.decide("GET", "/a")
    clock.advance(0.25)

    # WHEN it refuses a request
    header = simulator.decide("GET", "/a").headers["Retry-After"]

    # THEN the header parses back with the standard library to a moment at or after the token, within 1 s
    wall_now = WALL_EPOCH_SEC + 0.25
    if retry_after_style == "seconds":
        retry_at = wall_now + int(header)
    else:
        retry_at = email.utils.parsedate_to_datetime(header).timestamp()
        assert header.endswith(" GMT")
    assert wall_now + 0.25 <= retry_at <= wall_now + 0.25 + 1


# ----- outages, faults, latency, concurrency -----


def test_outage_window_answers_503_until_its_half_open_end():
    # GIVEN a downstream with an outage from 10 s to 20 s after start
    clock = FakeClock()
    simulator = make_simulator(clock, rate_per_sec=100, burst=100, outage_windows_sec=((10, 20),))

    # WHEN requests arrive before, inside and exactly at the end of the window
    statuses = {}
    for offset_sec in (9.9, 10.0, 19.5, 20.0):
        clock.now = 1000.0 + offset_sec
        statuses[offset_sec] = simulator.decide("POST", "/moderate")

    # THEN only the inside ones get 503, told to come back when the window ends
    assert {offset: response.status for offset, response in statuses.items()} == {
        9.9: 200,
        10.0: 503,
        19.5: 503,
        20.0: 200,
    }
    assert statuses[10.0].headers["Retry-After"] == "10"
    assert statuses[19.5].headers["Retry-After"] == "1"
    assert statuses[10.0].body == {"error": "service_unavailable", "retry_after_sec": 10.0}


def test_back_to_back_outage_windows_report_the_end_of_the_whole_outage():
    # GIVEN two adjoining outage windows
    clock = FakeClock()
    simulator = make_simulator(clock, outage_windows_sec=((10, 20), (20, 30)))

    # WHEN a request arrives in the first
    clock.advance(15)
    response = simulator.decide("GET", "/a")

    # THEN Retry-After points past both
    assert response.headers["Retry-After"] == "15"


def test_outage_spends_no_tokens():
    # GIVEN a 1-token downstream that was down for its first 10 s
    clock = FakeClock()
    simulator = make_simulator(clock, rate_per_sec=0.01, burst=1, outage_windows_sec=((0, 10),))
    during = [simulator.decide("GET", "/a") for _ in range(5)]

    # WHEN the outage ends
    clock.advance(10)
    after = simulator.decide("GET", "/a")

    # THEN the bucket is still full
    assert set(statuses_of(during)) == {503}
    assert after.status == 200


def test_error_injection_is_reproducible_for_a_seed():
    # GIVEN two simulators with the same seed and one with another seed, failing 30 % of requests
    def run(seed: int) -> list[int]:
        clock = FakeClock()
        simulator = make_simulator(clock, seed=seed, rate_per_sec=1000, burst=1000, error_rate_5xx=0.3)
        return [simulator.decide("POST", "/emails").status for _ in range(200)]

    # WHEN each answers 200 requests
    first, again, other_seed = run(7), run(7), run(8)

    # THEN the same seed fails the same requests, at roughly the configured rate
    assert first == again
    assert first != other_seed
    assert set(first) == {200, 500}
    assert 30 <= first.count(500) <= 90


def test_timeout_holds_the_request_then_answers_504():
    # GIVEN a downstream that times out every request after 7 s
    sleep = FakeSleep()
    simulator = DownstreamSimulator(
        DownstreamProfile(name="test", rate_per_sec=1, timeout_rate=1.0, timeout_hold_sec=7),
        clock=FakeClock(),
        sleep=sleep,
    )

    # WHEN a request is handled
    response = simulator.handle("POST", "/authorize")

    # THEN it was held for the hold time and answered 504
    assert response.status == 504
    assert response.body == {"error": "gateway_timeout"}
    assert sleep.calls == [7]


@pytest.mark.parametrize(
    ("latency", "low_sec", "high_sec"),
    [
        (LatencyDistribution(kind="fixed", median_ms=300), 0.3, 0.3),
        (LatencyDistribution(kind="uniform", median_ms=200, jitter_ms=50), 0.15, 0.25),
        (LatencyDistribution(kind="lognormal", median_ms=400, sigma=2, max_ms=900), 0.0, 0.9),
    ],
)
def test_latency_is_slept_within_its_distribution(latency: LatencyDistribution, low_sec: float, high_sec: float):
    # GIVEN a downstream with the latency distribution
    sleep = FakeSleep()
    simulator = DownstreamSimulator(
        DownstreamProfile(name="test", rate_per_sec=1000, burst=1000, latency=latency),
        clock=FakeClock(),
        sleep=sleep,
    )

    # WHEN it handles requests
    for _ in range(50):
        simulator.handle("GET", "/a")

    # THEN every wait was drawn inside the distribution's range
    assert len(sleep.calls) == 50
    assert all(low_sec - 1e-9 <= seconds <= high_sec + 1e-9 for seconds in sleep.calls)


def test_concurrency_cap_answers_429_without_spending_a_token():
    # GIVEN a one-session downstream with two tokens
    simulator = make_simulator(FakeClock(), rate_per_sec=0.01, burst=2, max_concurrency=1)

    # WHEN a second request arrives while the first is in flight, and a third after the first finished
    first = simulator.decide("GET", "/records/1")
    concurrent = simulator.decide("GET", "/records/2")
    simulator.release(first)
    third = simulator.decide("GET", "/records/3")

    # THEN the concurrent one is refused for concurrency and the third still finds a token
    assert concurrent.status == 429
    assert concurrent.body == {"error": "concurrency_limited", "max_concurrency": 1, "retry_after_sec": 1.0}
    assert third.status == 200
    assert simulator.stats()["max_in_flight"] == 1


def test_the_count_in_flight_is_recorded_at_every_instant():
    # GIVEN a downstream that takes two requests at once, on a clock the test moves
    clock = FakeClock()
    simulator = make_simulator(clock, rate_per_sec=100, burst=10, max_concurrency=2)
    # WHEN two requests overlap, a third is refused, one answer comes back, and another request arrives
    first = simulator.decide("GET", "/a")
    clock.advance(0.1)
    second = simulator.decide("GET", "/b")
    refused = simulator.decide("GET", "/c")
    clock.advance(0.1)
    simulator.release(first)
    simulator.release(first)  # a second release changes nothing
    clock.advance(0.1)
    fourth = simulator.decide("GET", "/d")
    # THEN the timeline holds every change (a refused request is never in flight), and never more than 2
    start = simulator.in_flight_timeline()[0][0]
    assert [(round(at - start, 6), count) for at, count in simulator.in_flight_timeline()] == [
        (0.0, 0), (0.0, 1), (0.1, 2), (0.2, 1), (0.3, 2)]
    assert refused.status == 429 and {second.status, fourth.status} == {200}
    assert max(count for _, count in simulator.in_flight_timeline()) == simulator.stats()["max_in_flight"] == 2


def test_a_path_it_does_not_hold_is_answered_404_and_spends_a_token():
    # GIVEN a downstream with one token that holds no /users/ghost
    simulator = make_simulator(FakeClock(), rate_per_sec=0.01, burst=1, not_found_paths=["/users/ghost"])

    # WHEN the missing path is asked for, then another
    missing = simulator.decide("GET", "/users/ghost")
    after = simulator.decide("GET", "/users/42")

    # THEN the first is a 404 naming the path, and it spent the only token, as a lookup does
    assert (missing.status, missing.body) == (404, {"error": "not_found", "path": "/users/ghost"})
    assert after.status == 429
    assert simulator.profile.not_found_paths == ("/users/ghost",)


def test_profile_change_clamps_tokens_and_changes_the_rate():
    # GIVEN a full 10 rps downstream with a burst of 10
    clock = FakeClock()
    simulator = make_simulator(clock, rate_per_sec=10, burst=10)

    # WHEN its capacity is cut to 1 rps with a burst of 2
    simulator.set_profile(simulator.profile.merged_with({"rate_per_sec": 1, "burst": 2}))
    right_after = [simulator.decide("GET", "/a") for _ in range(3)]
    clock.advance(0.5)
    half_a_second_later = simulator.decide("GET", "/a")

    # THEN the cut takes effect at once: no leftover burst and the slower refill
    assert statuses_of(right_after) == [200, 200, 429]
    assert half_a_second_later.status == 429
    assert right_after[2].headers["X-RateLimit-Limit"] == "1"


def test_a_published_limit_follows_a_capacity_change_from_the_next_answer():
    # GIVEN a 10 rps downstream that publishes its limit
    clock = FakeClock()
    simulator = make_simulator(clock, rate_per_sec=10, burst=10, publishes_limit=True)
    before = simulator.decide("GET", "/a")

    # WHEN its capacity is halved (as its control API does, mid-run)
    simulator.set_profile(simulator.profile.merged_with({"rate_per_sec": 5, "burst": 5}))
    after = simulator.decide("GET", "/a")

    # THEN the very next answer publishes the halved rate
    assert (before.headers["RateLimit-Policy"], after.headers["RateLimit-Policy"]) == ("10;w=1", "5;w=1")


def test_a_downstream_that_does_not_publish_sends_no_window_to_read_a_rate_from():
    # GIVEN / WHEN a downstream with the default profile answers
    response = make_simulator(FakeClock(), rate_per_sec=10, burst=10).decide("GET", "/a")

    # THEN it says what is left but not per what: no RateLimit-Policy
    assert "RateLimit-Policy" not in response.headers
    assert response.headers["X-RateLimit-Limit"] == "10"


# ----- recording and the referee -----


def test_decide_records_and_echoes_the_request():
    # GIVEN a downstream
    clock = FakeClock()
    simulator = make_simulator(clock)

    # WHEN a JSON POST with correlation and idempotency headers arrives
    response = simulator.decide(
        "POST",
        "/emails",
        {"x-correlation-id": "corr-1", "Idempotency-Key": "idem-1", "Authorization": "secret"},
        b'{"to": "a@example.com"}',
    )

    # THEN the answer echoes it and the record keeps the useful headers, not the secret
    assert response.body == {
        "method": "POST",
        "path": "/emails",
        "request_id": "req-000001",
        "body": {"to": "a@example.com"},
    }
    (record,) = simulator.requests
    assert record.headers == {"X-Correlation-Id": "corr-1", "Idempotency-Key": "idem-1"}
    assert (record.monotonic_sec, record.wall_time_epoch_sec) == (1000.0, WALL_EPOCH_SEC)
    assert (record.method, record.path, record.status) == ("POST", "/emails", 200)


def test_decide_refuses_control_paths():
    # GIVEN / WHEN a control path is sent to decide()
    # THEN it is refused rather than rate-limited and recorded
    with pytest.raises(ValueError, match="control API"):
        make_simulator(FakeClock()).decide("GET", "/__sim/stats")


@pytest.mark.parametrize(
    ("timestamps", "expected"),
    [
        ([0.0, 0.5, 0.99, 1.0, 1.98], 3),
        ([0.0, 1.0], 1),  # half-open: exactly one window apart is two windows
        ([0.0, 0.999], 2),
        ([1.98, 0.0, 1.0, 0.99, 0.5], 3),  # order does not matter
        ([], 0),
        ([5.0, 5.0, 5.0], 3),
    ],
)
def test_max_requests_in_window_is_exact_on_hand_made_timestamps(timestamps: list[float], expected: int):
    # GIVEN / WHEN hand-made arrival times
    # THEN the sliding half-open 1 s window maximum is exact
    assert max_requests_in_window(timestamps, 1.0) == expected


@settings(max_examples=100, deadline=None)
@given(
    timestamps_ms=st.lists(st.integers(min_value=0, max_value=3000), max_size=40),
    window_ms=st.integers(min_value=1, max_value=1500),
)
def test_max_requests_in_window_matches_brute_force(timestamps_ms: list[int], window_ms: int):
    # GIVEN integer milliseconds, so the brute force is free of float rounding
    # WHEN every window starting at an arrival is counted by brute force
    brute_force = max(
        (sum(1 for other in timestamps_ms if start <= other < start + window_ms) for start in timestamps_ms),
        default=0,
    )

    # THEN the sliding-window maximum agrees
    assert max_requests_in_window(timestamps_ms, window_ms) == brute_force


def test_max_requests_in_window_rejects_non_positive_window():
    with pytest.raises(ValueError, match="window_sec must be a number > 0, got 0"):
        max_requests_in_window([1.0], 0)


def test_stats_count_by_status_and_the_busiest_windows():
    # GIVEN a 2 rps downstream sent 3 requests at once and 1 more 0.5 s later
    clock = FakeClock()
    simulator = make_simulator(clock, rate_per_sec=2, burst=2)
    for _ in range(3):
        simulator.decide("GET", "/a")
    clock.advance(0.5)
    simulator.decide("GET", "/a")

    # WHEN stats are taken
    stats = simulator.stats()

    # THEN they count every arrival and separately the admitted ones
    assert stats["by_status"] == {200: 3, 429: 1}
    assert stats["total_requests"] == 4
    assert stats["max_in_1s_window_all"] == 4
    assert stats["max_in_1s_window_2xx"] == 3
    assert simulator.max_requests_in_window(1.0, statuses=[429]) == 1


def test_reset_restores_the_constructed_profile_and_clears_records():
    # GIVEN a drained downstream whose profile was changed
    clock = FakeClock()
    simulator = make_simulator(clock, rate_per_sec=1, burst=1)
    simulator.decide("GET", "/a")
    simulator.set_profile(simulator.profile.merged_with({"outage_windows_sec": [[0, 100]]}))

    # WHEN it is reset
    simulator.reset()

    # THEN it answers as on its first request
    assert simulator.requests == []
    assert simulator.profile.outage_windows_sec == ()
    assert simulator.decide("GET", "/a").status == 200


# ----- over real HTTP -----


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None):
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _NO_PROXY_OPENER.open(request, timeout=10) as answer:
            return answer.status, answer.headers, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


@pytest.fixture
def instant_downstream():
    # A token every ~17 minutes: the second request is refused however slow the machine is.
    profile = DownstreamProfile(name="instant", rate_per_sec=0.001, burst=2, publishes_limit=True)
    with DownstreamSimulator(profile) as simulator:
        yield simulator


def test_http_answers_with_echo_then_429_and_rate_limit_headers(instant_downstream: DownstreamSimulator):
    # GIVEN a listening downstream with a burst of 2
    base_url = instant_downstream.base_url

    # WHEN three requests are sent
    ok_status, ok_headers, ok_body = http("GET", f"{base_url}/users/42")
    http("POST", f"{base_url}/emails", {"to": "a@example.com"}, {"X-Correlation-Id": "corr-9"})
    limited_status, limited_headers, limited_body = http("POST", f"{base_url}/emails")

    # THEN the answers carry the decided status, headers and JSON body
    assert (ok_status, ok_body["method"], ok_body["path"]) == (200, "GET", "/users/42")
    assert ok_headers["RateLimit-Policy"] == "1;w=1000"
    assert limited_status == 429
    assert limited_body["error"] == "rate_limited"
    assert int(limited_headers["Retry-After"]) >= 999
    assert limited_headers["X-RateLimit-Remaining"] == "0"
    assert instant_downstream.requests[1].headers["X-Correlation-Id"] == "corr-9"
    assert instant_downstream.requests[1].body == {"to": "a@example.com"}


def test_http_control_api_reports_requests_and_stats_without_recording_itself(
    instant_downstream: DownstreamSimulator,
):
    # GIVEN three requests, one of them refused
    base_url = instant_downstream.base_url
    for _ in range(3):
        http("GET", f"{base_url}/users/42")

    # WHEN the control API is asked, twice
    _, _, recorded = http("GET", f"{base_url}/__sim/requests")
    _, _, stats = http("GET", f"{base_url}/__sim/stats")
    _, _, stats_again = http("GET", f"{base_url}/__sim/stats")

    # THEN it reports the three requests, and asking did not count or spend tokens
    assert [request["status"] for request in recorded["requests"]] == [200, 200, 429]
    assert stats["by_status"] == {"200": 2, "429": 1}
    assert stats["max_in_1s_window_all"] == 3
    assert stats["max_in_1s_window_2xx"] == 2
    assert stats_again["total_requests"] == 3
    # AND the count in flight at every instant: up to one at a time here, back to 0 after each answer
    _, _, in_flight = http("GET", f"{base_url}/__sim/in-flight")
    assert [count for _, count in in_flight["timeline"]] == [0, 1, 0, 1, 0]


def test_http_profile_change_takes_effect_and_reset_undoes_it(instant_downstream: DownstreamSimulator):
    # GIVEN a listening downstream
    base_url = instant_downstream.base_url

    # WHEN an outage covering the next 1000 s is posted, a request is sent, and then the simulator is reset
    status, _, changed = http("POST", f"{base_url}/__sim/profile", {"outage_windows_sec": [[0, 1000]]})
    during_outage, _, _ = http("POST", f"{base_url}/moderate")
    http("POST", f"{base_url}/__sim/reset")
    after_reset, _, _ = http("POST", f"{base_url}/moderate")

    # THEN the outage applied at once and the reset brought the original profile back
    assert status == 200
    assert changed["profile"]["outage_windows_sec"] == [[0, 1000]]
    assert during_outage == 503
    assert after_reset == 200
    assert [request.path for request in instant_downstream.requests] == ["/moderate"]


def test_http_control_api_explains_bad_requests(instant_downstream: DownstreamSimulator):
    # GIVEN a listening downstream
    base_url = instant_downstream.base_url

    # WHEN an invalid profile and an unknown endpoint are requested
    invalid_status, _, invalid = http("POST", f"{base_url}/__sim/profile", {"rate_per_sec": -1})
    unknown_status, _, unknown = http("GET", f"{base_url}/__sim/nope")

    # THEN both say what was wrong and the profile is unchanged
    assert (invalid_status, invalid["message"]) == (400, "rate_per_sec must be a finite number > 0, got -1")
    assert unknown_status == 404
    assert "use one of GET requests" in unknown["message"]
    assert instant_downstream.profile.rate_per_sec == 0.001


def test_http_burst_reaches_the_simulator_as_a_burst():
    # GIVEN a downstream that admits everything, and 40 clients released at once
    profile = DownstreamProfile(name="wide_open", rate_per_sec=0.001, burst=1000)
    start_together = threading.Barrier(40)

    def send(url: str) -> int:
        start_together.wait()
        return http("GET", url)[0]

    with DownstreamSimulator(profile) as simulator:
        # WHEN they all send one request
        with ThreadPoolExecutor(max_workers=40) as pool:
            statuses = list(pool.map(send, [f"{simulator.base_url}/users/{i}" for i in range(40)]))

        # THEN all are answered and recorded; and the listen backlog holds the whole burst (with the
        # stdlib's 5 the kernel drops connections and retries them a second later, smearing the burst
        # the referee must see); how close together they arrive depends on the machine, so it is not asserted
        assert statuses == [200] * 40
        assert len(simulator.requests) == 40
        assert type(simulator._server).request_queue_size >= 40


def test_base_url_before_start_says_what_to_do():
    with pytest.raises(RuntimeError, match="call start"):
        _ = DownstreamSimulator(PROFILES["crm"]).base_url


def test_cli_prints_its_url_and_serves():
    # GIVEN the CLI started on an ephemeral port
    project_root = Path(downstream_simulator.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(project_root), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "localcloud.referee.downstream_simulator", "--profile", "legacy_mainframe", "--port", "0"],
        cwd=project_root,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # WHEN its first line is read
        first_line = process.stdout.readline().strip()

        # THEN it names a loopback URL that answers the control API
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)", first_line)
        assert match, f"unexpected first line {first_line!r}"
        status, _, stats = http("GET", f"{match.group(1)}/__sim/stats")
        assert (status, stats["profile"]) == (200, "legacy_mainframe")
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert process.returncode == 0


@pytest.mark.parametrize(("amount", "status"), [("19.99", 200), ("0.07", 200), ("1000000.00", 200), (19.99, 400),
                                                 ("19.9", 400), ("19", 400), ("-1.00", 400), ("1e3", 400)])
def test_the_payment_gateway_takes_money_only_as_a_decimal_string_with_two_decimals(amount, status):
    # GIVEN the payment gateway's profile (its contract, as payment APIs state it)
    simulator = make_simulator(FakeClock(), money_fields=PROFILES["payment_gateway"].money_fields)
    # WHEN an authorization carries `amount`
    response = simulator.decide("POST", "/authorize", {}, json.dumps({"order_id": "o-1", "amount": amount}))
    # THEN only a decimal string with two decimals is taken; anything else is a 400 naming the field
    assert response.status == status
    if status == 400:
        assert response.body["fields"] == {"amount": amount}
    # AND a request without the field (a void) is not the gateway's business
    assert simulator.decide("POST", "/void", {}, json.dumps({"order_id": "o-1"})).status != 400


# ----- the CRM's batch endpoint -----


def batch_of(*user_ids: str, run: str = "run-1") -> bytes:
    return json.dumps({"segment_id": "segments/s.csv", "recipients": [
        {"user_id": user_id, "idempotency_key": f"{run}/{user_id}"} for user_id in user_ids]}).encode()


def test_a_batch_request_spends_one_token_and_answers_for_every_recipient_in_one_list():
    # GIVEN a CRM with one token, a batch endpoint of 5, a user it does not hold and one it defers once
    simulator = make_simulator(FakeClock(), rate_per_sec=0.01, burst=1, max_batch_size=5,
                               not_found_paths=["/users/gone"], throttled_recipients=["busy"])

    # WHEN a batch of four recipients is sent, then any other request
    answer = simulator.decide("POST", downstream_simulator.BATCH_EMAILS_PATH, body=batch_of("a", "gone", "busy", "b"))
    after = simulator.decide("GET", "/users/a")

    # THEN the batch was one request and spent the only token
    assert (answer.status, after.status) == (200, 429)
    # AND each recipient is in exactly one list: two sent, the unknown one rejected with its reason, the busy one
    # deferred with a whole-second wait
    body = answer.body
    assert [(s["user_id"], s["duplicate"]) for s in body["sent"]] == [("a", False), ("b", False)]
    assert body["rejected"] == [{"user_id": "gone", "idempotency_key": "run-1/gone", "reason": "unknown_recipient"}]
    assert [t["user_id"] for t in body["throttled"]] == ["busy"]
    assert body["retry_after_sec"] == downstream_simulator.RECIPIENT_RETRY_AFTER_SEC
    assert simulator.batch_deliveries == {"run-1/a": "a", "run-1/b": "b"}


def test_a_recipient_sent_again_under_its_idempotency_key_is_answered_sent_and_not_emailed_twice():
    # GIVEN a batch already delivered, one recipient of which was deferred
    simulator = make_simulator(FakeClock(), rate_per_sec=10, burst=10, max_batch_size=5, throttled_recipients=["busy"])
    first = simulator.decide("POST", downstream_simulator.BATCH_EMAILS_PATH, body=batch_of("a", "busy"))

    # WHEN the whole batch is sent again (a retry after a timeout), then under a new run's keys
    again = simulator.decide("POST", downstream_simulator.BATCH_EMAILS_PATH, body=batch_of("a", "busy"))
    other_run = simulator.decide("POST", downstream_simulator.BATCH_EMAILS_PATH, body=batch_of("a", run="run-2"))

    # THEN the repeat is answered sent with the first message id and counted, the deferred one goes through now,
    # and a new key is a new e-mail
    assert [t["user_id"] for t in first.body["throttled"]] == ["busy"]
    assert again.body["sent"][0] == {**first.body["sent"][0], "duplicate": True}
    assert (again.body["sent"][1]["user_id"], again.body["sent"][1]["duplicate"]) == ("busy", False)
    assert (again.body["throttled"], again.body["retry_after_sec"]) == ([], None)
    assert other_run.body["sent"][0]["duplicate"] is False
    assert simulator.batch_deliveries == {"run-1/a": "a", "run-1/busy": "busy", "run-2/a": "a"}
    assert simulator.batch_repeats == {"run-1/a": 1}


@pytest.mark.parametrize(("body", "error"), [
    (batch_of("a", "b", "c"), "batch_too_large"),
    (json.dumps({"recipients": []}).encode(), "invalid_batch"),
    (json.dumps({"recipients": [{"user_id": "a"}]}).encode(), "invalid_batch"),
    (b"not json", "invalid_batch"),
], ids=["over-the-limit", "empty", "no-idempotency-key", "not-json"])
def test_a_batch_the_contract_does_not_take_is_refused_whole_and_sends_nothing(body: bytes, error: str):
    # GIVEN a batch endpoint of 2
    simulator = make_simulator(FakeClock(), rate_per_sec=10, burst=10, max_batch_size=2)

    # WHEN a batch it cannot take arrives
    answer = simulator.decide("POST", downstream_simulator.BATCH_EMAILS_PATH, body=body)

    # THEN it is a 400 saying what is wrong, and nobody was e-mailed
    assert (answer.status, answer.body["error"]) == (400, error)
    assert simulator.batch_deliveries == {}


def test_the_batch_endpoint_is_closed_without_a_max_batch_size_and_reset_forgets_deliveries():
    # GIVEN a downstream without a batch endpoint, and the CRM with one
    closed = make_simulator(FakeClock(), rate_per_sec=10, burst=10)
    crm = make_simulator(FakeClock(), rate_per_sec=10, burst=10, max_batch_size=PROFILES["crm"].max_batch_size)

    # WHEN each is sent a batch, and the CRM is reset
    echoed = closed.decide("POST", downstream_simulator.BATCH_EMAILS_PATH, body=batch_of("a"))
    crm.decide("POST", downstream_simulator.BATCH_EMAILS_PATH, body=batch_of("a"))
    crm.reset()

    # THEN the first only echoes it (no deliveries), and the reset CRM holds none either
    assert "sent" not in echoed.body and closed.batch_deliveries == {}
    assert crm.batch_deliveries == {} and crm.batch_repeats == {}
    assert PROFILES["crm"].max_batch_size == 50


def test_a_batch_whose_answer_times_out_was_delivered_and_its_retry_sends_nobody_twice():
    # GIVEN a batch endpoint that times out every request (its backend still working on it)
    simulator = make_simulator(FakeClock(), rate_per_sec=10, burst=10, max_batch_size=5, timeout_rate=1.0,
                               timeout_hold_sec=6)

    # WHEN a batch is sent, times out, and is sent again once the timeouts stop
    lost = simulator.decide("POST", downstream_simulator.BATCH_EMAILS_PATH, body=batch_of("a", "b"))
    simulator.set_profile(dataclasses.replace(simulator.profile, timeout_rate=0.0))
    retried = simulator.decide("POST", downstream_simulator.BATCH_EMAILS_PATH, body=batch_of("a", "b"))

    # THEN the first was answered 504 after the hold, yet delivered; the retry is answered sent and e-mails nobody
    assert (lost.status, lost.delay_sec) == (504, 6)
    assert [(s["user_id"], s["duplicate"]) for s in retried.body["sent"]] == [("a", True), ("b", True)]
    assert simulator.batch_deliveries == {"run-1/a": "a", "run-1/b": "b"}
    assert simulator.batch_repeats == {"run-1/a": 1, "run-1/b": 1}


# -- credentials ------------------------------------------------------------------------------------------


def test_an_api_key_profile_refuses_a_request_without_its_key_before_spending_a_token():
    clock = FakeClock()
    simulator = DownstreamSimulator(PROFILES["ledger"], clock=clock, sleep=FakeSleep())
    key = {"x-api-key": PROFILES["ledger"].api_key}
    # WHEN requests come without the key, with a wrong one, then with the issued one
    statuses = [simulator.handle("POST", "/ledger/entries", headers).status
                for headers in ({}, {"x-api-key": "wrong"}, key)]
    # THEN the first two are 401 and spent nothing: the bucket still admits its whole burst after them
    assert statuses == [401, 401, 200]
    assert [simulator.handle("POST", "/ledger/entries", key).status
            for _ in range(PROFILES["ledger"].burst - 1)] == [200] * (PROFILES["ledger"].burst - 1)


def test_an_oauth2_profile_issues_tokens_to_its_client_and_refuses_them_once_expired():
    import base64

    clock = FakeClock()
    profile = dataclasses.replace(PROFILES["messaging"], token_ttl_sec=10)
    simulator = DownstreamSimulator(profile, clock=clock, sleep=FakeSleep())
    basic = base64.b64encode(f"{profile.oauth_client_id}:{profile.oauth_client_secret}".encode()).decode()
    # WHEN a wrong client asks for a token THEN it is refused and counted
    wrong = base64.b64encode(b"someone:else").decode()
    assert simulator.issue_token({"Authorization": f"Basic {wrong}"}, b"grant_type=client_credentials")[0] == 401
    # WHEN the client asks THEN it gets a bearer token that the API takes until its 10 s have passed
    status, answer = simulator.issue_token({"Authorization": f"Basic {basic}"}, b"grant_type=client_credentials")
    assert (status, answer["token_type"], answer["expires_in"]) == (200, "Bearer", 10)
    bearer = {"Authorization": f"Bearer {answer['access_token']}"}
    assert simulator.handle("POST", "/messages", bearer).status == 200
    assert simulator.handle("POST", "/messages", {}).status == 401
    clock.advance(10)
    assert simulator.handle("POST", "/messages", bearer).status == 401
    assert (simulator.stats()["tokens_issued"], simulator.stats()["token_refusals"]) == (1, 1)

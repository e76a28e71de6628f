"""Unit tests of the DynamoDB adapters' own logic: number encoding, expression placeholders, validation, fail-open."""

from __future__ import annotations

import math
import re
from decimal import Decimal

import pytest

from botocore.exceptions import ClientError

from throttling.adapters import _dynamodb
from throttling.adapters import dynamodb_circuit_breaker as breaker_adapter
from throttling.adapters import dynamodb_rate_limiter as limiter_adapter
from throttling.adapters import dynamodb_semaphore as semaphore_adapter
from throttling.core.adaptive_rate import AdaptiveRatePolicy
from throttling.core.circuit_breaker import BreakerPolicy, BreakerStatus
from throttling.core.clock import FakeClock
from throttling.core.rate_limiter import TIME_GRID_SEC, RatePolicy, on_grid


def store_down(operation: str) -> ClientError:
    """What botocore raises for a throttled or failing request: a ClientError with a code other than a failed condition."""
    return ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, operation)


class DownClient:
    def __getattr__(self, operation):
        def fail(**kwargs):
            raise store_down(operation)

        return fail


class NoCallsClient:
    def __getattr__(self, operation):
        raise AssertionError(f"unexpected DynamoDB call {operation}")


@pytest.mark.parametrize("value", [0.1, 1 / 3, 1e20, 1e-7, 1_700_000_000.125, 1_700_000_000.1, 3, 0.0])
def test_numbers_round_trip_exactly_and_never_use_exponent_notation(value):
    encoded = _dynamodb.number(value)["N"]
    assert "e" not in encoded.lower()
    assert float(Decimal(encoded)) == value


@pytest.mark.parametrize("bad", [math.inf, math.nan, True, "1"])
def test_numbers_refuse_what_dynamodb_cannot_store(bad):
    with pytest.raises(ValueError, match="cannot store"):
        _dynamodb.number(bad)


def test_a_tat_on_the_time_grid_round_trips_exactly_through_its_decimal():
    # GIVEN grid instants and sums of grid intervals, as the limiter writes and DynamoDB adds them
    interval = RatePolicy(9.9, 5).emission_interval_sec
    for tat in (1_700_000_000.0 + k * interval for k in (0, 1, 7, 1_000_003)):
        stored = limiter_adapter._grid_number(tat)["N"]
        # THEN the decimal is the float's exact value, short enough for DynamoDB (and moto's 28 digits)
        assert Decimal(stored) == Decimal(tat) and len(stored.replace(".", "")) <= 28
        assert limiter_adapter._stored_tat({"tat": {"N": stored}}) == tat
    # AND the sum DynamoDB computes in decimal is the float sum
    assert Decimal(limiter_adapter._grid_number(1_700_000_000.0)["N"]) + 3 * Decimal(limiter_adapter._grid_number(interval)["N"]) == \
        Decimal(1_700_000_000.0 + 3 * interval)


def test_a_tat_written_off_the_grid_reads_rounded_up_so_conditions_from_it_hold():
    # GIVEN a TAT an older version left with more digits than a float holds
    stored = "1700000000.10000000000000000001"
    # THEN it reads as the next grid instant at or above it: `tat <= :based_on_tat` holds for a decision on it
    tat = limiter_adapter._stored_tat({"tat": {"N": stored}})
    assert Decimal(tat) >= Decimal(stored) and Decimal(tat) - Decimal(stored) < Decimal(TIME_GRID_SEC)
    assert on_grid(tat) == tat
    assert limiter_adapter._stored_tat(None) is None and limiter_adapter._stored_tat({}) is None


def test_only_grid_values_are_written_as_limiter_numbers():
    with pytest.raises(ValueError, match="is not on the limiter's time grid"):
        limiter_adapter._grid_number(0.1)


@pytest.mark.parametrize(
    ("expressions", "names", "values"),
    [
        ((limiter_adapter.RATE_LIMITER_UPDATE, limiter_adapter.RATE_LIMITER_CONDITION), set(), {":new_tat", ":expires_at", ":based_on_tat"}),
        (
            (limiter_adapter.RATE_LIMITER_BACKLOG_UPDATE, limiter_adapter.RATE_LIMITER_BACKLOG_CONDITION),
            set(),
            {":cost_interval", ":expires_at", ":now", ":latest_tat"},
        ),
        ((limiter_adapter.ADAPTIVE_UPDATE, limiter_adapter.ADAPTIVE_CONDITION), set(),
         {":new_tat", ":expires_at", ":based_on_tat", ":rate_base", ":rate_base_at", ":signals_seen"}),
        ((limiter_adapter.RATE_LIMITER_BACKLOG_UPDATE, limiter_adapter.ADAPTIVE_BACKLOG_CONDITION), set(),
         {":cost_interval", ":expires_at", ":now", ":latest_tat", ":signals_seen"}),
        ((limiter_adapter.ADAPTIVE_SIGNAL_UPDATE, limiter_adapter.ADAPTIVE_SIGNAL_CONDITION), set(),
         {":rate_base", ":rate_base_at", ":rate_peak", ":blocked_until", ":expires_at", ":one", ":signals_seen"}),
        ((limiter_adapter.ADAPTIVE_PUBLISHED_UPDATE, limiter_adapter.ADAPTIVE_PUBLISHED_CONDITION), set(),
         {":published_rate", ":published_at", ":expires_at"}),
        ((semaphore_adapter.SEMAPHORE_ACQUIRE_UPDATE, semaphore_adapter.SEMAPHORE_ACQUIRE_CONDITION), {"#owner"}, {":expiry", ":one", ":limit"}),
        ((semaphore_adapter.SEMAPHORE_RENEW_UPDATE, semaphore_adapter.SEMAPHORE_RENEW_CONDITION), {"#owner"}, {":expiry"}),
        ((semaphore_adapter.SEMAPHORE_RELEASE_UPDATE, semaphore_adapter.SEMAPHORE_RELEASE_CONDITION), {"#owner"}, {":minus_one"}),
        ((semaphore_adapter.SEMAPHORE_RECLAIM_UPDATE, semaphore_adapter.SEMAPHORE_RECLAIM_CONDITION), {"#owner"}, {":minus_one", ":seen_expiry"}),
        ((breaker_adapter.BREAKER_WRITE_CONDITION,), {"#version"}, {":read_version"}),
    ],
)
def test_each_expression_pair_uses_exactly_the_documented_placeholders(expressions, names, values):
    # DynamoDB rejects unused ExpressionAttributeValues, so an ASL task copying these must pass exactly these
    text = " ".join(expressions)
    assert set(re.findall(r"#\w+", text)) == names
    assert set(re.findall(r":\w+", text)) == values


def test_bad_arguments_fail_before_any_dynamodb_call():
    semaphore = semaphore_adapter.DynamoDbSemaphore("t", client=NoCallsClient(), clock=FakeClock())
    with pytest.raises(ValueError, match="limit must be an int >= 0, got -1"):
        semaphore.acquire("crm", "me", limit=-1, lease_sec=10)
    with pytest.raises(ValueError, match="lease_sec must be a finite number > 0, got 0"):
        semaphore.acquire("crm", "me", limit=1, lease_sec=0)
    with pytest.raises(ValueError, match="owner_id must be a non-empty string"):
        semaphore.release("crm", "")
    with pytest.raises(ValueError, match="max_attempts_per_shard must be an int >= 1, got 0"):
        limiter_adapter.DynamoDbRateLimiter("t", client=NoCallsClient(), max_attempts_per_shard=0)
    with pytest.raises(ValueError, match="headroom"):
        limiter_adapter.DynamoDbRateLimiter("t", client=NoCallsClient(), headroom=2)
    with pytest.raises(ValueError, match="bucket must be a non-empty string, got ''"):
        limiter_adapter.DynamoDbRateLimiter("t", client=NoCallsClient()).report_published(
            "", RatePolicy(1, 1), AdaptiveRatePolicy(), admitted_at=0.0, published_per_sec=1.0)


@pytest.mark.parametrize("published", [None, 0.0, -1.0, float("nan"), float("inf")])
def test_a_publication_with_no_usable_rate_makes_no_dynamodb_call(published):
    # GIVEN an adapter whose client fails the test if called
    limiter = limiter_adapter.DynamoDbRateLimiter("t", client=NoCallsClient(), clock=FakeClock(1_000.0))
    # WHEN an answer "published" garbage THEN nothing is written, on any shard
    assert limiter.report_published("crm", RatePolicy(10, 10), AdaptiveRatePolicy(), admitted_at=1_000.0,
                                    published_per_sec=published) == [False]


def test_a_breaker_whose_store_is_down_admits_and_drops_outcomes_but_a_forced_open_raises():
    # GIVEN every DynamoDB request fails (throttled, unreachable)
    breaker = breaker_adapter.DynamoDbCircuitBreaker("t", client=DownClient(), policy=BreakerPolicy(), clock=FakeClock())

    # THEN calls go ahead (the breaker must not become the outage) and outcomes are dropped, not raised
    admission = breaker.allow("crm", "caller")
    assert admission.allowed and admission.status is BreakerStatus.CLOSED
    breaker.record("crm", "caller", success=False, duration_sec=0.1)
    # AND an operator's force_open says it did not happen
    with pytest.raises(ClientError, match="ProvisionedThroughputExceededException"):
        breaker.force_open("crm", "alarm")


def test_a_breaker_can_be_told_to_fail_closed_instead():
    breaker = breaker_adapter.DynamoDbCircuitBreaker("t", client=DownClient(), policy=BreakerPolicy(), fail_open=False)
    with pytest.raises(ClientError, match="ProvisionedThroughputExceededException"):
        breaker.allow("crm", "caller")

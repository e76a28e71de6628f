"""The DynamoDB adapters of the throttling cores against the emulator, under real concurrency.

Time is a FakeClock shared by every thread, so the rate arithmetic is exact however long the
emulator takes: nothing here depends on machine speed. Each thread gets its own adapter and client,
as each Lambda execution environment would.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from throttling.adapters.dynamodb_circuit_breaker import DynamoDbCircuitBreaker
from throttling.adapters.dynamodb_rate_limiter import DynamoDbRateLimiter, rate_limiter_key
from throttling.adapters.dynamodb_semaphore import DynamoDbSemaphore
from throttling.core.circuit_breaker import BreakerPolicy, BreakerStatus
from throttling.core.clock import FakeClock
from throttling.core.rate_limiter import RatePolicy
from throttling.core.semaphore import (
    SEMAPHORE_ACQUIRE_CONDITION,
    SEMAPHORE_ACQUIRE_UPDATE,
    SEMAPHORE_CREATE_CONDITION,
    SEMAPHORE_RELEASE_CONDITION,
    SEMAPHORE_RELEASE_UPDATE,
)

pytestmark = pytest.mark.emulator

THREADS = 16
# Whole seconds and binary fractions (1/8 s) are exact in a float, so TATs compare exactly.
T0 = 1_700_000_000.0
BREAKER_POLICY = BreakerPolicy(
    failure_rate_threshold=0.5,
    slow_call_rate_threshold=0.5,
    slow_call_duration_sec=2.0,
    minimum_calls=4,
    window_sec=10.0,
    window_buckets=5,
    open_duration_sec=30.0,
    probe_lease_sec=5.0,
)


class CountingClient:
    """A DynamoDB client that counts every call (failed ones too) per operation and partition key."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str, str | None]] = Counter()
        self.succeeded: Counter[tuple[str, str | None]] = Counter()

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        method = getattr(self._client, operation)

        def counted(**kwargs: Any) -> Any:
            key = kwargs.get("Key", kwargs.get("Item", {})).get("pk", {}).get("S")
            try:
                result = method(**kwargs)
            except Exception:
                with self._lock:
                    self.calls[(operation, key)] += 1
                raise
            with self._lock:
                self.calls[(operation, key)] += 1
                self.succeeded[(operation, key)] += 1
            return result

        return counted

    def total(self, operation: str, *, succeeded: bool = False) -> int:
        counts = self.succeeded if succeeded else self.calls
        return sum(n for (op, _), n in counts.items() if op == operation)


@pytest.fixture
def table(cloud, request) -> str:
    """A fresh table with the adapters' key schema (string `pk`, no sort key), like the CDK tables."""
    name = re.sub(r"[^a-zA-Z0-9_.-]", "-", request.node.name)[:200] + "-" + uuid.uuid4().hex[:6]
    cloud.client("dynamodb").create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )
    return name


def in_threads(work: Callable[[int], Any], threads: int = THREADS) -> list[Any]:
    """Run work(0..threads-1) in as many threads, released together."""
    start = threading.Barrier(threads)

    def run(index: int) -> Any:
        start.wait()
        return work(index)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(run, range(threads)))


def drain(limiter: DynamoDbRateLimiter, bucket: str, policy: RatePolicy) -> int:
    """Acquire until the limiter really denies (a wait > 0), not merely lost a race; the number admitted."""
    admitted = 0
    for _ in range(10_000):
        decision = limiter.try_acquire(bucket, policy)
        if decision.allowed:
            admitted += 1
        elif decision.retry_after_sec > 0:
            return admitted
    raise AssertionError("the limiter never denied")


def stored_tat(cloud, table: str, key: str) -> float | None:
    item = cloud.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": key}}, ConsistentRead=True).get("Item")
    return None if item is None else float(item["tat"]["N"])


def fleet(cloud, threads: int, build: Callable[[CountingClient], Any]) -> tuple[list[Any], list[CountingClient]]:
    # boto3's default session is not thread-safe: clients are made here, before the threads start.
    clients = [CountingClient(cloud.client("dynamodb")) for _ in range(threads)]
    return [build(client) for client in clients], clients


# -- rate limiter --------------------------------------------------------------------------------


def test_sixteen_threads_on_one_bucket_admit_exactly_burst_then_exactly_rate_times_t(cloud, table):
    # GIVEN 8/s with a burst of 32 on one item, and 16 callers frozen at T0
    policy = RatePolicy(rate_per_sec=8, burst=32)
    clock = FakeClock(T0)
    limiters, clients = fleet(cloud, THREADS, lambda c: DynamoDbRateLimiter(table, client=c, clock=clock))
    assert limiters[0].shards_for(policy) == 1

    # WHEN they all acquire until denied
    admitted = sum(in_threads(lambda i: drain(limiters[i], "crm", policy)))

    # THEN exactly the burst was admitted, the TAT accounts for each one, and every admission was one successful write
    assert admitted == 32
    assert stored_tat(cloud, table, rate_limiter_key("crm", 0)) == T0 + 32 / 8
    assert sum(c.total("update_item", succeeded=True) for c in clients) == 32

    # WHEN the clock moves 2 s and they go again
    clock.advance(2.0)
    admitted_after = sum(in_threads(lambda i: drain(limiters[i], "crm", policy)))

    # THEN exactly rate x T more, and no caller ever read the item
    assert admitted_after == 8 * 2
    assert stored_tat(cloud, table, rate_limiter_key("crm", 0)) == T0 + 48 / 8
    assert all(c.total("get_item") == 0 and c.total("scan") == 0 for c in clients)


def test_a_sharded_bucket_never_admits_more_than_burst_plus_rate_times_t_and_each_shard_is_exact(cloud, table):
    # GIVEN 32/s, burst 32, with partitions said to absorb 16 writes/s: 4 shards of 8/s, burst 8
    policy = RatePolicy(rate_per_sec=32, burst=32)
    clock = FakeClock(T0)
    limiters, clients = fleet(
        cloud, THREADS, lambda c: DynamoDbRateLimiter(table, client=c, clock=clock, per_partition_writes_per_sec=16)
    )
    shards = limiters[0].shards_for(policy)
    assert shards == 4
    shard_interval = 1 / 8

    def per_shard_admissions() -> dict[int, int]:
        keys = {rate_limiter_key("ai", s): s for s in range(shards)}
        counts = Counter()
        for client in clients:
            for (op, key), n in client.succeeded.items():
                if op == "update_item":
                    counts[keys[key]] += n
        return {s: counts[s] for s in range(shards)}

    # WHEN 16 frozen callers acquire until denied by two shards
    admitted = sum(in_threads(lambda i: drain(limiters[i], "ai", policy)))
    first = per_shard_admissions()

    # THEN no shard went over its burst, the total is within the burst, each stored TAT matches its
    # count exactly, and since a real denial proves two shards full, at least two are full
    assert admitted == sum(first.values()) <= 32
    assert all(n <= 8 for n in first.values())
    assert sum(1 for n in first.values() if n == 8) >= 2
    for shard, n in first.items():
        expected = None if n == 0 else T0 + n * shard_interval
        assert stored_tat(cloud, table, rate_limiter_key("ai", shard)) == expected

    # WHEN the clock moves 0.5 s (16 more units fleet-wide, 4 per shard) and they go again
    t1 = clock.advance(0.5)
    admitted_after = sum(in_threads(lambda i: drain(limiters[i], "ai", policy)))
    total = per_shard_admissions()

    # THEN at most burst + rate x T in all, and each shard's TAT is exactly its two phases' admissions
    assert admitted + admitted_after == sum(total.values()) <= 32 + 32 * 0.5
    for shard, n in total.items():
        n_first, n_second = first[shard], n - first[shard]
        assert n_second <= 8
        if n == 0:
            continue
        expected = max(T0 + n_first * shard_interval, t1) + n_second * shard_interval
        assert stored_tat(cloud, table, rate_limiter_key("ai", shard)) == expected


def test_the_limiter_writes_once_per_admission_and_not_at_all_for_a_denial_it_can_prove(cloud, table):
    # GIVEN one caller on a fresh bucket
    policy = RatePolicy(rate_per_sec=1, burst=2)
    client = CountingClient(cloud.client("dynamodb"))
    limiter = DynamoDbRateLimiter(table, client=client, clock=FakeClock(T0))

    # WHEN it is admitted twice and then denied twice
    decisions = [limiter.try_acquire("mainframe", policy) for _ in range(4)]

    # THEN two writes in all, no read, and an exact wait
    assert [d.allowed for d in decisions] == [True, True, False, False]
    assert client.calls == Counter({("update_item", "mainframe#0"): 2})
    assert decisions[2].retry_after_sec == 1.0

    # WHEN another caller, which has seen nothing, asks: one failed write teaches it the TAT
    other = CountingClient(cloud.client("dynamodb"))
    denied = DynamoDbRateLimiter(table, client=other, clock=FakeClock(T0)).try_acquire("mainframe", policy)
    assert not denied.allowed and denied.retry_after_sec == 1.0
    assert other.calls == Counter({("update_item", "mainframe#0"): 1}) and not other.succeeded

    # THEN the item carries a TTL: back to full at TAT, plus the margin
    item = cloud.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": "mainframe#0"}})["Item"]
    assert int(item["expires_at"]["N"]) == int(T0 + 2 + 60)


# Off every grid: at today's epoch a float's ulp is 2.4e-7 s, and 1.7e9 + k/9.9 has more decimal
# digits than a float holds, which is where the stored decimal and the float decision used to part.
AWKWARD_T0 = 1_700_000_000.123456789
# The CRM's, the gateway's and the AI model's limiter settings, and a rate the seed's core refused at.
AWKWARD_POLICIES = [RatePolicy(9.9, 5), RatePolicy(1.98, 1), RatePolicy(4.95, 2), RatePolicy(76.09863486680844, 13)]


def limiter_with_shards(table: str, client: Any, clock: FakeClock, policy: RatePolicy, shards: int) -> DynamoDbRateLimiter:
    """A limiter that spreads `policy` over exactly `shards` items (partitions said to absorb 2 x rate / shards writes/s)."""
    limiter = DynamoDbRateLimiter(table, client=client, clock=clock,
                                  per_partition_writes_per_sec=2 * policy.rate_per_sec / shards)
    assert limiter.shards_for(policy) == shards
    return limiter


@pytest.mark.parametrize("shards", [1, 2, 3], ids=lambda n: f"{n}-shards")
@pytest.mark.parametrize("policy", AWKWARD_POLICIES, ids=lambda p: f"{p.rate_per_sec:g}-per-sec-burst-{p.burst}")
def test_a_lone_caller_that_waits_exactly_its_retry_after_is_admitted_through_dynamodb(cloud, table, policy, shards):
    # GIVEN one caller on a fresh bucket at an awkward instant
    clock = FakeClock(AWKWARD_T0)
    client = CountingClient(cloud.client("dynamodb"))
    limiter = limiter_with_shards(table, client, clock, policy, shards)
    refusals = 0
    fleet_burst = shards * max(1, math.ceil(policy.burst / shards))  # what the shards admit at once together
    for _ in range(2 * fleet_burst + 12):
        decision = limiter.try_acquire("crm", policy)
        if decision.allowed:
            continue
        # WHEN it is refused and waits exactly the time it was given
        refusals += 1
        assert decision.retry_after_sec > 0, decision
        clock.advance(decision.retry_after_sec)
        # THEN DynamoDB's condition admits it: the stored decimal and the float decision agree
        retried = limiter.try_acquire("crm", policy)
        assert retried.allowed, (refusals, retried)
    assert refusals >= 3
    # AND no write ever failed: every conditional write matched the state the caller computed
    assert client.total("update_item") == client.total("update_item", succeeded=True)


@pytest.mark.parametrize("shards", [1, 2, 3], ids=lambda n: f"{n}-shards")
@pytest.mark.parametrize("policy", AWKWARD_POLICIES, ids=lambda p: f"{p.rate_per_sec:g}-per-sec-burst-{p.burst}")
def test_a_burst_at_one_instant_is_all_admitted_through_dynamodb(cloud, table, policy, shards):
    # GIVEN a fresh bucket, and a second caller that has seen nothing
    clock = FakeClock(AWKWARD_T0)
    first = limiter_with_shards(table, cloud.client("dynamodb"), clock, policy, shards)
    second = limiter_with_shards(table, cloud.client("dynamodb"), clock, policy, shards)
    # WHEN `burst` requests arrive at one instant, alternating between the two callers
    decisions = [(first if i % 2 else second).try_acquire("ai", policy) for i in range(policy.burst)]
    # THEN every one is admitted, whichever shards they landed on
    assert [d.allowed for d in decisions] == [True] * policy.burst
    # AND once every shard is empty a request is refused with a real wait, not a lost race
    while (decision := first.try_acquire("ai", policy)).allowed:
        pass
    assert decision.retry_after_sec > 0


# -- semaphore -----------------------------------------------------------------------------------


def test_sixteen_threads_never_hold_more_than_three_leases(cloud, table):
    # GIVEN a semaphore of 3 and 16 workers that each take, check and give back a lease in a loop
    clock = FakeClock(T0)
    semaphores, clients = fleet(cloud, THREADS, lambda c: DynamoDbSemaphore(table, client=c, clock=clock))
    rounds = 10

    def work(index: int) -> list[tuple[int, int]]:
        semaphore, client, owner = semaphores[index], clients[index], f"worker-{index}"
        observed = []
        for _ in range(rounds):
            if not semaphore.acquire("crm", owner, limit=3, lease_sec=60):
                continue
            item = client.get_item(TableName=table, Key={"pk": {"S": "crm"}}, ConsistentRead=True)["Item"]
            assert owner in item["leases"]["M"]
            observed.append((int(item["lease_count"]["N"]), len(item["leases"]["M"])))
            assert semaphore.release("crm", owner)
        return observed

    # WHEN they run together
    observed = [seen for per_worker in in_threads(work) for seen in per_worker]

    # THEN every holder saw at most 3 leases (by count and by map), some were turned away, and all came back
    assert observed, "nobody ever acquired"
    assert max(count for count, _ in observed) <= 3
    assert max(held for _, held in observed) <= 3
    assert len(observed) < THREADS * rounds
    item = cloud.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": "crm"}}, ConsistentRead=True)["Item"]
    assert int(item["lease_count"]["N"]) == len(item["leases"]["M"]) == 0


def test_expired_leases_are_reclaimed_lazily_by_an_acquire_and_in_bulk_by_the_cleanup(cloud, table):
    clock = FakeClock(T0)
    semaphore = DynamoDbSemaphore(table, client=cloud.client("dynamodb"), clock=clock)
    # GIVEN a semaphore of 2 held by a crashed owner (10 s lease) and a live one (100 s)
    assert semaphore.acquire("crm", "crashed", limit=2, lease_sec=10)
    assert semaphore.acquire("crm", "live", limit=2, lease_sec=100)
    # AND acquiring again renews without taking a second slot
    assert semaphore.acquire("crm", "live", limit=2, lease_sec=100)
    assert not semaphore.acquire("crm", "newcomer", limit=2, lease_sec=10)

    # WHEN the crashed owner's lease expires and the newcomer tries again
    clock.advance(10)  # expiry <= now is expired
    assert semaphore.acquire("crm", "newcomer", limit=2, lease_sec=10)

    # THEN the crashed lease was reclaimed on the way, and releasing it now is a harmless no-op
    leases = semaphore_item(cloud, table, "crm")
    assert set(leases["leases"]["M"]) == {"live", "newcomer"} and leases["lease_count"]["N"] == "2"
    assert semaphore.release("crm", "crashed") is False

    # GIVEN a second semaphore whose only owner also never releases
    assert semaphore.acquire("ai", "stuck", limit=1, lease_sec=5)

    # WHEN the cleanup runs after every lease but "live" expired
    clock.advance(50)
    assert semaphore.reclaim_expired("ai") == ["stuck"]
    assert semaphore.acquire("ai", "stuck-again", limit=1, lease_sec=5)
    clock.advance(20)
    reclaimed = semaphore.reclaim_all_expired()

    # THEN it removed exactly the expired leases, and counts still match the maps
    assert reclaimed == {"crm": ["newcomer"], "ai": ["stuck-again"]}
    crm, ai = semaphore_item(cloud, table, "crm"), semaphore_item(cloud, table, "ai")
    assert set(crm["leases"]["M"]) == {"live"} and crm["lease_count"]["N"] == "1"
    assert ai["leases"]["M"] == {} and ai["lease_count"]["N"] == "0"
    assert semaphore.reclaim_all_expired() == {}


def semaphore_item(cloud, table: str, name: str) -> dict[str, Any]:
    return cloud.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": name}}, ConsistentRead=True)["Item"]


# -- circuit breaker -----------------------------------------------------------------------------


def breaker_item(cloud, table: str, name: str) -> dict[str, Any]:
    return cloud.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": name}}, ConsistentRead=True)["Item"]


def race_for_the_probe(cloud, table: str, clock: FakeClock, name: str, round_name: str) -> list[Any]:
    breakers, _ = fleet(cloud, THREADS, lambda c: DynamoDbCircuitBreaker(table, client=c, policy=BREAKER_POLICY, clock=clock))
    return in_threads(lambda i: (f"{round_name}-{i}", breakers[i].allow(name, f"{round_name}-{i}")))


def test_the_breaker_opens_admits_exactly_one_probe_of_sixteen_and_recovers(cloud, table):
    clock = FakeClock(T0)
    client = CountingClient(cloud.client("dynamodb"))
    breaker = DynamoDbCircuitBreaker(table, client=client, policy=BREAKER_POLICY, clock=clock)

    # GIVEN a closed breaker: calls cost one read each and no write
    assert breaker.allow("payments", "a").allowed
    assert client.calls == Counter({("get_item", "payments"): 1})

    # WHEN 3 calls fail it stays closed (3 < minimum_calls); the 4th opens it
    for index in range(3):
        breaker.record("payments", f"c{index}", success=False, duration_sec=0.1)
    assert breaker_item(cloud, table, "payments")["status"]["S"] == "closed"
    breaker.record("payments", "c3", success=False, duration_sec=0.1)

    # THEN a Step Functions getItem would see it open, until when, and why
    item = breaker_item(cloud, table, "payments")
    assert item["status"]["S"] == "open"
    assert float(item["open_until"]["N"]) == T0 + 30
    assert item["open_until_utc"]["S"] == "2023-11-14T22:13:50.000Z"
    assert "failure rate" in item["reason"]["S"]
    # AND callers are refused for the rest of the opening, at no cost to this instance
    reads_before = client.total("get_item")
    refused = breaker.allow("payments", "d")
    assert not refused.allowed and refused.status is BreakerStatus.OPEN and refused.retry_after_sec == 30
    assert client.total("get_item") == reads_before

    # WHEN the opening ends and 16 callers arrive together
    clock.advance(30)
    answers = race_for_the_probe(cloud, table, clock, "payments", "first")

    # THEN exactly one gets the probe; the rest wait for it
    probers = [caller for caller, admission in answers if admission.allowed]
    assert len(probers) == 1 and all(a.is_probe for _, a in answers if a.allowed)
    assert all(a.status is BreakerStatus.HALF_OPEN for _, a in answers if not a.allowed)
    assert breaker_item(cloud, table, "payments")["probe_owner"]["S"] == probers[0]

    # WHEN the probe fails THEN the breaker opens again
    breaker.record("payments", probers[0], success=False, duration_sec=0.1)
    assert breaker.state("payments").status is BreakerStatus.OPEN
    assert breaker_item(cloud, table, "payments")["reason"]["S"] == "probe failed"

    # WHEN the next opening ends, one of 16 probes again and then dies without reporting
    clock.advance(30)
    (dead,) = [caller for caller, admission in race_for_the_probe(cloud, table, clock, "payments", "second") if admission.allowed]
    still_leased = breaker.allow("payments", "impatient")
    assert not still_leased.allowed and still_leased.retry_after_sec == 5

    # THEN once its lease expires another caller gets the probe, and the dead one's late report is ignored
    clock.advance(5)
    rescue = breaker.allow("payments", "rescuer")
    assert rescue.allowed and rescue.is_probe
    breaker.record("payments", dead, success=True, duration_sec=0.1)
    assert breaker.state("payments").probe_owner == "rescuer"

    # WHEN the rescuer's probe succeeds THEN the breaker closes with a fresh window
    breaker.record("payments", "rescuer", success=True, duration_sec=0.1)
    closed = breaker_item(cloud, table, "payments")
    assert closed["status"]["S"] == "closed" and "probe_owner" not in closed and "w0_calls" not in closed
    assert breaker.allow("payments", "anyone").allowed


def test_an_alarm_forces_the_breaker_open_and_call_raises_powertools_open_error(cloud, table):
    from aws_lambda_powertools.utilities.circuit_breaker import CircuitBreakerOpenError, CircuitState

    clock = FakeClock(T0)
    breaker = DynamoDbCircuitBreaker(table, client=cloud.client("dynamodb"), policy=BREAKER_POLICY, clock=clock)
    # GIVEN a closed breaker through which a call runs and is recorded
    assert breaker.call("crm", "caller", lambda x: x * 2, 21) == 42
    assert breaker_item(cloud, table, "crm")["status"]["S"] == "closed"
    assert sum(bucket.calls for bucket in breaker.state("crm").window) == 1

    # WHEN an alarm forces it open for 120 s (from another instance, as the alarm's function would)
    alarm = DynamoDbCircuitBreaker(table, client=cloud.client("dynamodb"), policy=BREAKER_POLICY, clock=clock)
    alarm.force_open("crm", "alarm: p99 latency above 3 s", duration_sec=120)

    # THEN the item says so and a call is refused with Powertools' error, without running
    item = breaker_item(cloud, table, "crm")
    assert item["status"]["S"] == "open" and item["reason"]["S"] == "forced: alarm: p99 latency above 3 s"
    assert float(item["open_until"]["N"]) == T0 + 120
    ran = []
    with pytest.raises(CircuitBreakerOpenError) as refused:
        breaker.call("crm", "caller", ran.append, 1)
    assert ran == [] and refused.value.circuit.state is CircuitState.OPEN
    assert refused.value.circuit.opened_at == int(T0)


def test_concurrent_failures_open_the_breaker_despite_lost_write_races(cloud, table):
    # GIVEN 8 instances recording failures of the same downstream at once
    clock = FakeClock(T0)
    breakers, clients = fleet(cloud, 8, lambda c: DynamoDbCircuitBreaker(table, client=c, policy=BREAKER_POLICY, clock=clock))

    def fail_twice(index: int) -> None:
        for attempt in range(2):
            breakers[index].record("ai", f"w{index}-{attempt}", success=False, duration_sec=0.1)

    in_threads(fail_twice, threads=8)

    # THEN the breaker is open, and races were lost but resolved on the item each failed write
    # returned: at most one read per record call (none once an instance has seen it open)
    assert breaker_item(cloud, table, "ai")["status"]["S"] == "open"
    assert sum(c.total("put_item") - c.total("put_item", succeeded=True) for c in clients) > 0
    assert sum(c.total("get_item") for c in clients) <= 8 * 2


# -- Step Functions ------------------------------------------------------------------------------


def semaphore_workflow(table: str, limit: int) -> dict[str, Any]:
    """A Map of callers that each hold a lease of the semaphore for 1 s, taken with the adapter's own expressions."""
    transient_errors = [
        "DynamoDB.ProvisionedThroughputExceededException",
        "DynamoDB.RequestLimitExceeded",
        "DynamoDB.InternalServerErrorException",
        "DynamoDB.ThrottlingException",
    ]
    transient_retry = {
        "ErrorEquals": transient_errors, "IntervalSeconds": 1, "BackoffRate": 2, "MaxAttempts": 3, "JitterStrategy": "FULL",
    }
    key = {"pk": {"S.$": "$.semaphore"}}
    return {
        "Comment": "Run every item through a DynamoDB semaphore: at most `limit` hold a lease at once.",
        "StartAt": "EnsureSemaphoreItem",
        "States": {
            "EnsureSemaphoreItem": {
                "Type": "Task",
                "Comment": "SET leases.#owner needs the leases map to exist: create the item once, if absent.",
                "Resource": "arn:aws:states:::dynamodb:putItem",
                "Parameters": {
                    "TableName": table,
                    "Item": {"pk": {"S.$": "$.semaphore"}, "leases": {"M": {}}, "lease_count": {"N": "0"}},
                    "ConditionExpression": SEMAPHORE_CREATE_CONDITION,
                },
                "ResultPath": None,
                "Retry": [transient_retry],
                "Catch": [{"ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"], "ResultPath": None,
                           "Comment": "Already there: nothing to do.", "Next": "CallEach"}],
                "Next": "CallEach",
            },
            "CallEach": {
                "Type": "Map",
                "Comment": "More iterations in flight than the semaphore admits, so the lease really gates them.",
                "ItemsPath": "$.items",
                "MaxConcurrency": 6,
                "ItemSelector": {
                    "item.$": "$$.Map.Item.Value",
                    "semaphore.$": "$.semaphore",
                    "lease_expires_at.$": "$.lease_expires_at",
                    "owner.$": "States.Format('{}#{}', $$.Execution.Name, $$.Map.Item.Index)",
                },
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "AcquireLease",
                    "States": {
                        "AcquireLease": {
                            "Type": "Task",
                            "Comment": "Take a slot; a full semaphore fails the condition and we retry with jitter.",
                            "Resource": "arn:aws:states:::dynamodb:updateItem",
                            "Parameters": {
                                "TableName": table,
                                "Key": key,
                                "UpdateExpression": SEMAPHORE_ACQUIRE_UPDATE,
                                "ConditionExpression": SEMAPHORE_ACQUIRE_CONDITION,
                                "ExpressionAttributeNames": {"#owner.$": "$.owner"},
                                "ExpressionAttributeValues": {
                                    ":expiry": {"N.$": "$.lease_expires_at"},
                                    ":one": {"N": "1"},
                                    ":limit": {"N": str(limit)},
                                },
                                "ReturnValues": "UPDATED_NEW",
                            },
                            "ResultPath": "$.acquired",
                            "Retry": [
                                {"ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"], "IntervalSeconds": 1,
                                 "BackoffRate": 1.5, "MaxAttempts": 20, "MaxDelaySeconds": 4, "JitterStrategy": "FULL"},
                                transient_retry,
                            ],
                            "Next": "HoldLease",
                        },
                        "HoldLease": {
                            "Type": "Wait",
                            "Comment": "Stands in for the downstream call the lease guards.",
                            "Seconds": 1,
                            "Next": "ReleaseLease",
                        },
                        "ReleaseLease": {
                            "Type": "Task",
                            "Comment": "Give the slot back; already gone (reclaimed after expiry) is fine.",
                            "Resource": "arn:aws:states:::dynamodb:updateItem",
                            "Parameters": {
                                "TableName": table,
                                "Key": key,
                                "UpdateExpression": SEMAPHORE_RELEASE_UPDATE,
                                "ConditionExpression": SEMAPHORE_RELEASE_CONDITION,
                                "ExpressionAttributeNames": {"#owner.$": "$.owner"},
                                "ExpressionAttributeValues": {":minus_one": {"N": "-1"}},
                            },
                            "ResultPath": None,
                            "Retry": [transient_retry],
                            "Catch": [{"ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"], "ResultPath": None,
                                       "Comment": "The lease was reclaimed: nothing to give back.", "Next": "Report"}],
                            "Next": "Report",
                        },
                        "Report": {
                            "Type": "Pass",
                            "Comment": "What the test checks: the lease count this iteration saw right after acquiring.",
                            "Parameters": {
                                "item.$": "$.item",
                                "owner.$": "$.owner",
                                "lease_count.$": "$.acquired.Attributes.lease_count.N",
                            },
                            "End": True,
                        },
                    },
                },
                "ResultPath": "$.results",
                "End": True,
            },
        },
    }


def test_a_step_functions_map_of_twelve_never_holds_more_than_two_leases(cloud, table):
    # GIVEN the workflow over 12 items, 6 in flight, against a semaphore of 2
    sfn = cloud.client("stepfunctions")
    arn = sfn.create_state_machine(
        name=f"semaphore-{uuid.uuid4().hex[:8]}",
        definition=json.dumps(semaphore_workflow(table, limit=2)),
        roleArn="arn:aws:iam::123456789012:role/x",
    )["stateMachineArn"]
    # JSONPath has no way to turn $$.State.EnteredTime into epoch seconds: the starter provides the expiry.
    payload = {"semaphore": "crm", "lease_expires_at": str(int(time.time()) + 300), "items": list(range(12))}

    # WHEN it runs
    execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps(payload))["executionArn"]
    deadline = time.monotonic() + 60
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "execution still RUNNING after 60 s"
        time.sleep(0.1)

    # THEN all 12 got through, none saw more than 2 leases, some had to retry, and every lease came back
    assert described["status"] == "SUCCEEDED", described
    results = json.loads(described["output"])["results"]
    assert sorted(r["item"] for r in results) == list(range(12))
    assert len({r["owner"] for r in results}) == 12
    assert max(int(r["lease_count"]) for r in results) <= 2
    history = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
    failed = [e for e in history if e["type"] == "TaskFailed"]
    assert any(e["taskFailedEventDetails"]["error"] == "DynamoDB.ConditionalCheckFailedException" for e in failed)
    item = semaphore_item(cloud, table, "crm")
    assert item["lease_count"]["N"] == "0" and item["leases"]["M"] == {}

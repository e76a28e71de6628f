"""The limiter's inner loop over DynamoDB on the emulator: a signal reaches every caller, cuts once, and
each decision stays one conditional write.

Time is a FakeClock shared by every thread (as in test_dynamodb_limits), so counts are exact whatever
the machine's speed. Each thread has its own adapter and client, as each execution environment would.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.test_dynamodb_limits import T0, THREADS, CountingClient, fleet, in_threads, table  # noqa: F401 - the fixture
from throttling.adapters.dynamodb_rate_limiter import DynamoDbRateLimiter, rate_limiter_key
from throttling.core.adaptive_rate import AdaptiveRatePolicy
from throttling.core.clock import FakeClock
from throttling.core.rate_limiter import RatePolicy

pytestmark = pytest.mark.emulator

POLICY = RatePolicy(rate_per_sec=8, burst=8)
LOOP = AdaptiveRatePolicy(decrease_factor=0.5, increase_fraction_per_sec=0.01, floor_fraction=0.1)


def drain(limiter: DynamoDbRateLimiter, bucket: str, policy: RatePolicy, adaptive: AdaptiveRatePolicy) -> int:
    """Acquire until really denied (a wait > 0, not a lost race); the number admitted."""
    admitted = 0
    for _ in range(1_000):
        decision = limiter.try_acquire(bucket, policy, adaptive=adaptive)
        if decision.allowed:
            admitted += 1
        elif decision.retry_after_sec > 0:
            return admitted
    raise AssertionError("the limiter never denied")


def stored(cloud, table_name: str, key: str) -> dict:
    return cloud.client("dynamodb").get_item(TableName=table_name, Key={"pk": {"S": key}}, ConsistentRead=True)["Item"]


def test_one_callers_429_blocks_every_caller_and_halves_what_the_fleet_admits(cloud, table):
    # GIVEN 16 callers of one 8 req/s bucket, each having taken a token at T0 (so each has seen the item)
    clock = FakeClock(T0)
    limiters, clients = fleet(cloud, THREADS, lambda c: DynamoDbRateLimiter(table, client=c, clock=clock))
    first = in_threads(lambda i: limiters[i].try_acquire("crm", POLICY, adaptive=LOOP))
    admitted_at = [d.decided_at for d in first if d.allowed]
    assert len(admitted_at) == 8

    # WHEN one of them meets a 429 with Retry-After: 2 and reports it
    clock.advance(0.25)
    (outcome,) = limiters[0].report_signal("crm", POLICY, LOOP, admitted_at=admitted_at[0], retry_after_sec=2.0)
    assert outcome.cut and outcome.rate_after_per_sec == 4.0

    # THEN every other caller, which never saw the signal, is refused until the Retry-After ends,
    # each after exactly one failed write that taught it the block
    before = [c.total("update_item") for c in clients]
    refusals = in_threads(lambda i: limiters[i].try_acquire("crm", POLICY, adaptive=LOOP))
    assert not any(d.allowed for d in refusals)
    assert all(1.999 <= d.retry_after_sec <= 2.0 for d in refusals)
    assert [c.total("update_item") - b for c, b in zip(clients, before)] == [0] + [1] * (THREADS - 1)

    # WHEN the block ends and the fleet drains the bucket
    clock.advance(2.0)
    after_block = sum(in_threads(lambda i: drain(limiters[i], "crm", POLICY, LOOP)))
    # THEN it admits the cut rate's burst, half the contract's
    assert after_block == 4
    # WHEN 10 s more pass: the rate climbed 0.8 req/s, so about 4.4 x 10 more are due
    clock.advance(10.0)
    later = sum(in_threads(lambda i: drain(limiters[i], "crm", POLICY, LOOP)))
    assert 4 <= later <= 5
    assert all(c.total("get_item") == 0 for c in clients)


def test_sixteen_429s_answering_one_overload_cut_once(cloud, table):
    # GIVEN 16 callers whose calls were all admitted before any 429 came back
    clock = FakeClock(T0)
    policy = RatePolicy(rate_per_sec=16, burst=16)
    limiters, clients = fleet(cloud, THREADS, lambda c: DynamoDbRateLimiter(table, client=c, clock=clock))
    admitted = in_threads(lambda i: limiters[i].try_acquire("crm", policy, adaptive=LOOP))
    assert all(d.allowed for d in admitted)

    # WHEN every one of them reports its 429 (Retry-After: 1) at once
    clock.advance(0.5)
    outcomes = in_threads(lambda i: limiters[i].report_signal("crm", policy, LOOP, admitted_at=admitted[i].decided_at,
                                                              retry_after_sec=1.0))

    # THEN exactly one cut, to half the rate, whichever caller won; the others wrote nothing that stuck
    assert sum(o.cut for (o,) in outcomes) == 1
    item = stored(cloud, table, rate_limiter_key("crm", 0))
    assert float(item["rate_base"]["N"]) == 8.0
    assert item["signals"] == {"N": "1"}
    assert float(item["blocked_until"]["N"]) == pytest.approx(T0 + 1.5, abs=1e-5)
    # AND each signal cost at most two writes (one that lost the race, then nothing left to write)
    assert all(c.total("update_item") - 1 <= 2 for c in clients)


def test_a_signal_reaches_every_shard_of_a_sharded_bucket(cloud, table):
    # GIVEN 32 req/s over 4 shards (partitions said to absorb 16 writes/s), each shard used once
    clock = FakeClock(T0)
    policy = RatePolicy(rate_per_sec=32, burst=32)
    client = CountingClient(cloud.client("dynamodb"))
    limiter = DynamoDbRateLimiter(table, client=client, clock=clock, per_partition_writes_per_sec=16)
    assert limiter.shards_for(policy) == 4
    decisions = [limiter.try_acquire_adaptive_shard("ai", shard, RatePolicy(8, 8), LOOP) for shard in range(4)]
    assert all(d.allowed for d in decisions)

    # WHEN a caller of shard 2 reports a 429 without Retry-After
    clock.advance(0.1)
    outcomes = limiter.report_signal("ai", policy, LOOP, admitted_at=decisions[2].decided_at, retry_after_sec=None)

    # THEN every shard was cut to half its share, with one write each
    assert [o.cut for o in outcomes] == [True] * 4
    assert {float(stored(cloud, table, rate_limiter_key("ai", s))["rate_base"]["N"]) for s in range(4)} == {4.0}
    writes = Counter(key for (op, key), n in client.calls.items() if op == "update_item" for _ in range(n))
    assert all(writes[rate_limiter_key("ai", s)] == 2 for s in range(4))
    # AND a caller that never saw any shard is held to the cut rate on whichever shard it meets
    other = DynamoDbRateLimiter(table, client=cloud.client("dynamodb"), clock=clock, per_partition_writes_per_sec=16)
    assert drain(other, "ai", policy, LOOP) <= 4 * 4

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
from throttling.core.adaptive_rate import PUBLISHED_TTL_SEC, AdaptiveRatePolicy
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


# -- a published limit (RateLimit-Policy and its kin): believed by every caller, written only when news ----------


def test_a_published_limit_is_written_once_and_every_caller_is_held_to_it(cloud, table):
    # GIVEN two callers of one 8 req/s bucket, each admitted once (so each has seen the item)
    clock = FakeClock(T0)
    (first, second), (first_client, second_client) = fleet(cloud, 2, lambda c: DynamoDbRateLimiter(table, client=c, clock=clock))
    admitted = first.try_acquire("crm", POLICY, adaptive=LOOP)
    assert second.try_acquire("crm", POLICY, adaptive=LOOP).allowed

    # WHEN the answer to the first caller's call publishes 4 req/s
    clock.advance(0.25)
    before = first_client.total("update_item")
    assert first.report_published("crm", POLICY, LOOP, admitted_at=admitted.decided_at, published_per_sec=4.0) == [True]

    # THEN it was one write, storing the rate and the admission of the call that carried it
    assert first_client.total("update_item") - before == 1
    item = stored(cloud, table, rate_limiter_key("crm", 0))
    assert (float(item["published_rate"]["N"]), float(item["published_at"]["N"])) == (4.0, admitted.decided_at)
    # AND the item outlives the publication's belief (an absent item would mean the configured ceiling)
    assert int(item["expires_at"]["N"]) >= admitted.decided_at + PUBLISHED_TTL_SEC
    # AND the same rate again (within 1 %, a later call) is no news: no write at all
    clock.advance(1.0)
    later = first.try_acquire("crm", POLICY, adaptive=LOOP)
    before = first_client.total("update_item")
    assert first.report_published("crm", POLICY, LOOP, admitted_at=later.decided_at, published_per_sec=4.02) == [False]
    assert first_client.total("update_item") == before

    # WHEN the other caller, which never saw the publication, takes its next token
    assert second.try_acquire("crm", POLICY, adaptive=LOOP).allowed
    # THEN that write's answer taught it the published rate: its own report of it costs nothing
    before = second_client.total("update_item")
    assert second.report_published("crm", POLICY, LOOP, admitted_at=later.decided_at, published_per_sec=4.0) == [False]
    assert second_client.total("update_item") == before
    # AND once the bucket refilled, the fleet admits the published rate's burst (4 less the 1 % headroom, rounded
    # up), not the contract's 8; then, every half second for 4 s, what 3.96 req/s earns (15.84)
    clock.advance(5.0)
    assert drain(first, "crm", POLICY, LOOP) + drain(second, "crm", POLICY, LOOP) == 4
    paced = 0
    for _ in range(8):
        clock.advance(0.5)
        paced += drain(first, "crm", POLICY, LOOP) + drain(second, "crm", POLICY, LOOP)
    assert paced in (15, 16)
    assert first_client.total("get_item") == second_client.total("get_item") == 0


def test_an_older_calls_publication_loses_to_a_newer_one_without_a_retry(cloud, table):
    # GIVEN two callers, admitted half a second apart, the later one's answer published 4 req/s first
    clock = FakeClock(T0)
    (early, late), (early_client, _) = fleet(cloud, 2, lambda c: DynamoDbRateLimiter(table, client=c, clock=clock))
    early_admission = early.try_acquire("crm", POLICY, adaptive=LOOP)
    clock.advance(0.5)
    late_admission = late.try_acquire("crm", POLICY, adaptive=LOOP)
    clock.advance(0.25)
    assert late.report_published("crm", POLICY, LOOP, admitted_at=late_admission.decided_at, published_per_sec=4.0) == [True]

    # WHEN the earlier call's answer, overtaken on the way, publishes 6 req/s
    before = early_client.total("update_item")
    written = early.report_published("crm", POLICY, LOOP, admitted_at=early_admission.decided_at, published_per_sec=6.0)

    # THEN it is not written (older news): one write that failed its condition, no retry, and no error
    assert written == [False]
    assert early_client.total("update_item") - before == 1
    assert float(stored(cloud, table, rate_limiter_key("crm", 0))["published_rate"]["N"]) == 4.0
    # AND the failed write taught the earlier caller the newer publication
    assert early.seen_state("crm").published_per_sec == 4.0


def test_a_published_limit_reaches_every_shard_as_its_share(cloud, table):
    # GIVEN 32 req/s over 4 shards, each shard used once
    clock = FakeClock(T0)
    policy = RatePolicy(rate_per_sec=32, burst=32)
    client = CountingClient(cloud.client("dynamodb"))
    limiter = DynamoDbRateLimiter(table, client=client, clock=clock, per_partition_writes_per_sec=16)
    decisions = [limiter.try_acquire_adaptive_shard("ai", shard, RatePolicy(8, 8), LOOP) for shard in range(4)]

    # WHEN an answer publishes the downstream's 16 req/s (the whole downstream's, not one shard's)
    clock.advance(0.1)
    written = limiter.report_published("ai", policy, LOOP, admitted_at=decisions[1].decided_at, published_per_sec=16.0)

    # THEN each shard holds a quarter of it, written once
    assert written == [True] * 4
    assert {float(stored(cloud, table, rate_limiter_key("ai", s))["published_rate"]["N"]) for s in range(4)} == {4.0}
    writes = Counter(key for (op, key), n in client.calls.items() if op == "update_item" for _ in range(n))
    assert all(writes[rate_limiter_key("ai", s)] == 2 for s in range(4))
    # AND a caller that never saw any shard is held, once its first write to each shard taught it the item, to the
    # published burst: each shard's 4 less the 1 % headroom, rounded up
    other = DynamoDbRateLimiter(table, client=cloud.client("dynamodb"), clock=clock, per_partition_writes_per_sec=16)
    clock.advance(5.0)
    drain(other, "ai", policy, LOOP)
    clock.advance(5.0)
    assert drain(other, "ai", policy, LOOP) == 4 * 4


def test_a_429_under_a_published_limit_cuts_from_the_published_rate(cloud, table):
    # GIVEN a caller of an 8 req/s bucket whose downstream published 4 req/s
    clock = FakeClock(T0)
    limiter = DynamoDbRateLimiter(table, client=cloud.client("dynamodb"), clock=clock)
    admitted = limiter.try_acquire("crm", POLICY, adaptive=LOOP)
    limiter.report_published("crm", POLICY, LOOP, admitted_at=admitted.decided_at, published_per_sec=4.0)

    # WHEN the same call's answer was a 429 too (publication first, then the signal)
    clock.advance(0.25)
    (outcome,) = limiter.report_signal("crm", POLICY, LOOP, admitted_at=admitted.decided_at, retry_after_sec=None)

    # THEN the cut is from the published rate (3.96 req/s, its 1 % headroom left), not from the contract's 8
    assert outcome.cut and outcome.rate_before_per_sec == pytest.approx(3.96)
    assert outcome.rate_after_per_sec == pytest.approx(1.98)
    # AND the publication survives the signal's write
    assert float(stored(cloud, table, rate_limiter_key("crm", 0))["published_rate"]["N"]) == 4.0


def test_a_publication_gone_with_its_item_is_forgotten_by_the_next_admission(cloud, table):
    # GIVEN a caller that wrote a published 4 req/s into an 8 req/s bucket
    clock = FakeClock(T0)
    limiter = DynamoDbRateLimiter(table, client=cloud.client("dynamodb"), clock=clock)
    admitted = limiter.try_acquire("crm", POLICY, adaptive=LOOP)
    limiter.report_published("crm", POLICY, LOOP, admitted_at=admitted.decided_at, published_per_sec=4.0)
    # WHEN the item goes (TTL, or an operator resetting the bucket), the bucket refilled meanwhile
    cloud.client("dynamodb").delete_item(TableName=table, Key={"pk": {"S": rate_limiter_key("crm", 0)}})
    clock.advance(5.0)

    # THEN the next admission's write finds no item, so no publication: the caller forgets it, and after that
    # first token the rest of the contract's burst of 8 is there again
    assert drain(limiter, "crm", POLICY, LOOP) >= 1
    assert limiter.seen_state("crm").published_per_sec is None
    clock.advance(5.0)
    assert drain(limiter, "crm", POLICY, LOOP) == 8

"""`throttling.runtime.shared_limiter`: the shared limiter from a function of your own (on moto, in virtual time)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from throttling.adapters.dynamodb_rate_limiter import DynamoDbRateLimiter
from throttling.adapters.ssm_tunables import TunablesReader
from throttling.core import names
from throttling.core.adaptive_rate import AdaptiveRatePolicy
from throttling.core.clock import FakeClock
from throttling.core.rate_limiter import RatePolicy
from throttling.core.tunables import DownstreamTunables
from throttling.runtime.shared_limiter import SharedLimiter
from throttling.runtime.token_gate import GateKnobs, TokenGate

TABLE = "limits"
PARAMETER = "/orders-example/downstreams/orders_api"
CONTRACT = RatePolicy(rate_per_sec=2, burst=2)


@pytest.fixture
def aws():
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                              AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                              KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
        ssm = boto3.client("ssm", region_name="us-east-1")
        ssm.put_parameter(Name=PARAMETER, Type="String",
                          Value=json.dumps({"rate_per_sec": 1.8, "burst": 1, "max_concurrency": 2, "mode": "auto"}))
        yield dynamodb, ssm


def limiter_on(dynamodb, clock: FakeClock, document: str, max_wait_sec: float = 10) -> SharedLimiter:
    tunables = TunablesReader(PARAMETER, defaults=DownstreamTunables(rate_per_sec=1, burst=1, max_concurrency=1),
                              fetch=lambda name: document, ceiling_rate_per_sec=CONTRACT.rate_per_sec,
                              ceiling_burst=CONTRACT.burst)
    gate = TokenGate(DynamoDbRateLimiter(TABLE, client=dynamodb, clock=clock), GateKnobs(max_wait_sec=max_wait_sec),
                     clock=clock.now, sleep=clock.advance)
    return SharedLimiter("orders_api", contract=CONTRACT, tunables=tunables, gate=gate)


def test_tokens_come_at_the_tunables_rate_and_a_refusal_says_when_to_come_back(aws):
    dynamodb, _ = aws
    clock = FakeClock(1_000.0)
    limiter = limiter_on(dynamodb, clock, '{"rate_per_sec": 2, "burst": 2, "max_concurrency": 2}')
    # WHEN three tokens are asked for at one instant, with no time to wait
    first, second, third = (limiter.acquire(time_left_sec=0) for _ in range(3))
    # THEN the burst of 2 is admitted and the third is told to come back in one emission interval
    assert (first.admitted, second.admitted, third.admitted) == (True, True, False)
    assert third.retry_after_sec == pytest.approx(0.5, abs=1e-3)
    # AND with the time to wait, it is admitted once the interval has passed
    waited = limiter.acquire(time_left_sec=5)
    assert waited.admitted and waited.waited_sec == pytest.approx(0.5, abs=1e-3)


def test_a_429_reported_blocks_the_bucket_for_every_caller_until_its_retry_after(aws):
    dynamodb, _ = aws
    clock = FakeClock(1_000.0)
    document = '{"rate_per_sec": 2, "burst": 2, "max_concurrency": 2}'
    ours, another_function = limiter_on(dynamodb, clock, document), limiter_on(dynamodb, clock, document)
    token = ours.acquire(time_left_sec=0)
    # WHEN the call it paid for is answered 429 with Retry-After: 3
    assert ours.report(token, status=429, retry_after_sec=3) is True
    # THEN another function's caller, with a token left in the burst, is refused until the Retry-After ends
    refused = another_function.acquire(time_left_sec=0)
    assert not refused.admitted and refused.retry_after_sec == pytest.approx(3, abs=0.01)
    clock.advance(3)
    assert another_function.acquire(time_left_sec=0).admitted


def test_an_answer_that_is_no_throttling_signal_writes_nothing(aws):
    dynamodb, _ = aws
    clock = FakeClock(1_000.0)
    limiter = limiter_on(dynamodb, clock, '{"rate_per_sec": 2, "burst": 2, "max_concurrency": 2}')
    token = limiter.acquire(time_left_sec=0)
    before = dynamodb.scan(TableName=TABLE)["Items"]
    # WHEN the call succeeded, failed with a 500, or met a 503 meaning an outage (no short Retry-After)
    reports = [limiter.report(token, status=status, retry_after_sec=None) for status in (200, 500, 503)]
    # THEN none is a signal and the bucket is as it was
    assert reports == [False, False, False]
    assert dynamodb.scan(TableName=TABLE)["Items"] == before


def test_a_published_limit_reported_holds_every_function_to_it_and_costs_a_write_only_when_news(aws):
    dynamodb, _ = aws
    clock = FakeClock(1_000.0)
    document = '{"rate_per_sec": 2, "burst": 2, "max_concurrency": 2}'
    ours, another_function = limiter_on(dynamodb, clock, document), limiter_on(dynamodb, clock, document)
    token = ours.acquire(time_left_sec=0)
    # WHEN the call it paid for is answered 200, publishing 1 req/s (half the contract)
    assert ours.report(token, status=200, published_per_sec=1.0) is False
    # THEN the bucket holds it, from that call's admission
    (item,) = dynamodb.scan(TableName=TABLE)["Items"]
    assert (item["published_rate"], item["published_at"]) == ({"N": "1.0"}, {"N": "1000"})
    # AND the same rate from the next answer is no news: the item is untouched
    clock.advance(1)
    assert ours.report(ours.acquire(time_left_sec=0), status=200, published_per_sec=1.0) is False
    assert dynamodb.scan(TableName=TABLE)["Items"][0]["published_at"] == {"N": "1000"}
    # AND another function, the bucket full again, gets one token at an instant (the burst at 0.99 req/s), not two:
    # its first write learnt the publication, its second is decided under it
    clock.advance(10)
    asked = [another_function.acquire(time_left_sec=0).admitted for _ in range(2)]
    assert asked == [True, False]


def test_a_429_that_publishes_a_limit_cuts_from_the_published_rate(aws):
    dynamodb, _ = aws
    clock = FakeClock(1_000.0)
    limiter = limiter_on(dynamodb, clock, '{"rate_per_sec": 2, "burst": 2, "max_concurrency": 2}')
    token = limiter.acquire(time_left_sec=0)
    # WHEN the call it paid for is answered 429, publishing 1 req/s
    assert limiter.report(token, status=429, retry_after_sec=None, published_per_sec=1.0) is True
    # THEN the cut is from the published 0.99 req/s (its 1 % headroom left), not from the tunables' 2
    (item,) = dynamodb.scan(TableName=TABLE)["Items"]
    assert float(item["rate_peak"]["N"]) == pytest.approx(0.99)
    assert float(item["rate_base"]["N"]) == pytest.approx(0.99 * AdaptiveRatePolicy().decrease_factor)


def test_from_environment_reads_what_the_construct_wires(aws):
    dynamodb, ssm = aws
    environ = {names.ENV_DOWNSTREAM_NAME: "orders_api", names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC: "2",
               names.ENV_DOWNSTREAM_BURST: "2", names.ENV_TUNABLES_PARAMETER_NAME: PARAMETER,
               names.ENV_RATE_LIMITER_TABLE_NAME: TABLE, names.ENV_TUNABLES_CACHE_SEC: "0"}
    # WHEN a function builds its limiter from the environment SharedLimiter.connect gave it
    limiter = SharedLimiter.from_environment(environ, dynamodb=dynamodb, ssm=ssm)
    # THEN it takes tokens of the downstream's bucket at the rate in Parameter Store, under the contract
    assert limiter.acquire(time_left_sec=1).admitted
    assert limiter.tunables.get().rate_per_sec == 1.8 and limiter.contract == CONTRACT
    assert [item["pk"]["S"] for item in dynamodb.scan(TableName=TABLE)["Items"]] == ["orders_api#0"]


def test_a_function_not_wired_is_told_what_to_do(aws):
    with pytest.raises(KeyError, match=r"lacks DOWNSTREAM_BURST, RATE_LIMITER_TABLE_NAME: wire the function with"
                                       r" SharedLimiter.connect\(function, downstream\)"):
        SharedLimiter.from_environment({names.ENV_DOWNSTREAM_NAME: "orders_api",
                                        names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC: "2",
                                        names.ENV_TUNABLES_PARAMETER_NAME: PARAMETER})


def test_a_tenant_takes_from_its_share_and_a_bad_class_is_refused(aws):
    dynamodb, _ = aws
    clock = FakeClock(1_000.0)
    # GIVEN a bucket of 2 req/s where tenant "quiet" has half and borrowing is off (hard shares)
    limiter = limiter_on(dynamodb, clock, '{"rate_per_sec": 2, "burst": 2, "max_concurrency": 2,'
                                          ' "share_quiet": 0.5, "share_noisy": 0.5, "borrow_depth": 0}', max_wait_sec=0)
    # WHEN the noisy tenant takes what its share allows, then asks again
    assert limiter.acquire(time_left_sec=0, tenant="noisy").admitted
    held_back = limiter.acquire(time_left_sec=0, tenant="noisy")
    # THEN it is held back while the quiet tenant, on the same bucket, is admitted at once
    assert not held_back.admitted and held_back.retry_after_sec > 0
    assert limiter.acquire(time_left_sec=0, tenant="quiet").admitted
    # AND a class that does not exist is refused before any token is taken
    with pytest.raises(ValueError, match=r"priority must be one of \['critical', 'standard', 'batch'\] or None"):
        limiter.acquire(time_left_sec=0, priority="urgent")

"""The deployed caller, for a downstream known only by a ceiling, discovers its limit from the document the stack seeds.

The real `call_downstream` handler runs with the environment and the tunables document the stacks give a
downstream configured with `rate_ceiling_per_sec` (`tests/infra/test_unknown_contract_stack.py` holds the
templates to the same), its limiter on moto's DynamoDB and its tunables in moto's Parameter Store. Its
downstream is a GCRA of 10 req/s that nobody configured, answering 429 with Retry-After past it. Time is a
FakeClock that the token gate's waits advance, so every figure is exact whatever the machine's speed.
"""

from __future__ import annotations

import copy
import io
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stacks.config import load_config
from stacks.patterns.shared_limiter import shared_limiter_environment
from stacks.shared_limits_stack import downstream_tunables_seed
from throttling.adapters.dynamodb_rate_limiter import DynamoDbRateLimiter
from throttling.core import names
from throttling.core.adaptive_rate import current_rate
from throttling.core.clock import FakeClock
from throttling.core.rate_limiter import InMemoryRateLimiter, RatePolicy
from throttling.runtime.downstream_client import DownstreamClient, DownstreamThrottled, RateLimited
from throttling.runtime.token_gate import TokenGate

T0 = 1_800_000_000.0
TABLE = "limiter"
PARAMETER = "/throttling/dev/downstreams/crm"
CEILING = 50
TRUE_LIMIT = RatePolicy(rate_per_sec=10, burst=10)


@dataclass
class Context:
    aws_request_id: str = "request"
    function_name: str = "crm-caller"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:crm-caller"

    def get_remaining_time_in_millis(self) -> int:
        return 20_000


class LimitedDownstream:
    """An opener in front of a downstream whose real limit nobody configured: past it, a 429 with Retry-After: 1."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._limit = InMemoryRateLimiter(TRUE_LIMIT, clock)
        self.answers: list[tuple[float, int]] = []

    def __call__(self, request: urllib.request.Request, timeout: float) -> Any:
        status = 200 if self._limit.try_acquire().allowed else 429
        self.answers.append((self._clock.now(), status))
        if status == 429:
            raise urllib.error.HTTPError(request.full_url, 429, "Too Many Requests",
                                         {"Retry-After": "1"}, io.BytesIO(b"{}"))  # type: ignore[arg-type]
        return _Answer(b'{"ok": true}')


@dataclass
class _Answer:
    body: bytes
    status: int = 200
    headers: Any = None

    def read(self) -> bytes:
        return self.body

    def __enter__(self) -> _Answer:
        return self

    def __exit__(self, *_: Any) -> None:
        return None


@pytest.fixture
def crm_below_a_ceiling(cdk_stages):
    """The dev stage's CRM as an operator who knows only "below 50 req/s" would configure it."""
    stages = copy.deepcopy(cdk_stages)
    crm = stages["dev"]["downstreams"]["crm"]
    crm.pop("rate_limit_per_sec")
    crm["rate_ceiling_per_sec"] = CEILING
    return load_config(stages).downstream("crm")


@pytest.fixture
def caller(import_handler, monkeypatch, crm_below_a_ceiling):
    """The real CRM caller, deployed as the stacks deploy it, on moto and a virtual clock; and its downstream."""
    crm = crm_below_a_ceiling
    document = downstream_tunables_seed(crm)
    environment = {
        names.ENV_DOWNSTREAM_BASE_URL: crm.base_url, names.ENV_DOWNSTREAM_TIMEOUT_SEC: str(crm.timeout_sec),
        **shared_limiter_environment(downstream=crm.name, rate_limit_per_sec=crm.max_rate_per_sec, burst=crm.burst,
                                     tunables_parameter_name=PARAMETER, tunables_seed=document, tunables_cache_sec=5,
                                     table_name=TABLE),
        names.ENV_LIMITER_MAX_WAIT_SEC: "5", "POWERTOOLS_SERVICE_NAME": "crm-caller",
        "POWERTOOLS_METRICS_NAMESPACE": "Test",
    }
    module = import_handler("handlers.call_downstream", environment)
    monkeypatch.setattr(module.metrics, "namespace", "Test")
    clock = FakeClock(T0)
    downstream = LimitedDownstream(clock)
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="eu-west-1")
        dynamodb.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                              BillingMode="PAY_PER_REQUEST")
        ssm = boto3.client("ssm", region_name="eu-west-1")
        ssm.put_parameter(Name=PARAMETER, Type="String", Value=document)
        deps = module.build_dependencies(environment, dynamodb=dynamodb, ssm=ssm)
        # The built gate and client, with time and the network made virtual: same knobs, same limiter table.
        limiter = DynamoDbRateLimiter(TABLE, client=dynamodb, clock=clock)
        deps = replace(deps, gate=TokenGate(limiter, deps.gate.knobs, clock=clock.now, sleep=clock.advance,
                                            logger=module.logger),
                       client=DownstreamClient(crm.name, crm.base_url, timeout_sec=crm.timeout_sec,
                                               opener=downstream, clock=clock.now))
        monkeypatch.setattr(module, "dependencies", lambda: deps)
        try:
            yield module, deps, limiter, clock, downstream
        finally:
            module.metrics.clear_metrics()


def test_the_caller_starts_at_the_seed_climbs_to_the_unknown_limit_and_cuts_on_its_429(caller):
    module, deps, limiter, clock, downstream = caller
    in_force = deps.tunables.get()
    # GIVEN the seeded document: 49.5 req/s planned under the 50 req/s ceiling, a seed of a tenth, a floor of half that
    assert (in_force.rate_per_sec, in_force.seed_fraction, in_force.floor_fraction) == (49.5, 0.1, 0.05)
    ceiling = in_force.rate_per_sec

    def rate_now() -> float:
        return current_rate(limiter.seen_state(deps.downstream), clock.now(), ceiling, in_force.adaptive)

    # WHEN the first call is made
    first = module.handler({"method": "POST", "path": "/emails"}, Context())
    # THEN it was answered, and the bucket started at the seed: 4.95 req/s, not the ceiling's 49.5
    assert first["status"] == 200 and first["tunables_in_force"]["seed_fraction"] == 0.1
    assert rate_now() == pytest.approx(4.95)

    # WHEN the workflow keeps calling as fast as the limiter admits (a call the limiter had no token for in time is
    # retried after the wait it was told, as the workflows' Retry on RateLimited does), until the first 429
    answered, throttled = 1, None
    while throttled is None and clock.now() < T0 + 120:
        try:
            module.handler({"method": "POST", "path": "/emails"}, Context())
            answered += 1
        except RateLimited as refused:
            clock.advance(refused.details["retry_after_sec"])
        except DownstreamThrottled as error:
            throttled = error
    # THEN the rate climbed from the seed by 2 % of the ceiling a second, past the real limit of 10 req/s
    assert throttled is not None, "the caller never found the downstream's limit"
    seconds_to_limit = clock.now() - T0
    # (0.99 req/s more each second: 10 req/s after about 5 s; the downstream's burst of 10 lets it pass a little)
    assert 5 <= seconds_to_limit <= 12
    # AND in that time it sent far fewer calls than the ceiling's plan would have (49.5 req/s from the start)
    assert answered < 0.4 * 49.5 * seconds_to_limit
    # AND that 429 was the only one the downstream gave: none while the climb was below its limit
    assert [status for _, status in downstream.answers].count(429) == 1
    assert throttled.details["retry_after_sec"] == 1

    # AND the caller reported it: the bucket is cut to 0.7 of its rate for every caller, and blocked for the Retry-After
    state = limiter.seen_state(deps.downstream)
    assert state.signals == 1
    assert state.rate_peak_per_sec > TRUE_LIMIT.rate_per_sec
    assert rate_now() == pytest.approx(0.7 * state.rate_peak_per_sec, rel=0.01)
    assert state.blocked_until == pytest.approx(clock.now() + 1, abs=0.01)
    cut_at = clock.now()

    # WHEN the next call is asked for at once THEN it waits out the block, and is answered
    after = module.handler({"method": "POST", "path": "/emails"}, Context())
    assert after["status"] == 200 and clock.now() >= cut_at + 1 - 0.01
    # AND every call the downstream saw is accounted for: each answered 200 to the workflow, or raised the one 429
    # (a call the limiter refused was never sent)
    assert len(downstream.answers) == answered + 2

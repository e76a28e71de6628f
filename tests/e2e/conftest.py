"""End-to-end fixtures: fresh simulators, operators' tuning, and the deployed use cases' names and state.

The simulators, the synthesized app, the LocalCloud and the deployment come from tests/localcloud_fixtures.py.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from localcloud.drivers.common import drain_queue
from localcloud.drivers.crm_batch import crm_batch_outputs
from localcloud.drivers.tuning import operator_tuning
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import DownstreamSimulator


@pytest.fixture
def fresh_simulators(simulators, cloud, deployed) -> dict[str, DownstreamSimulator]:
    """The session's simulators, reset to their named profiles with no recorded requests, and the shared
    limiter's buckets emptied with them: a bucket remembers what its downstream answered (the inner loop's
    block and cut after a 429), and an earlier test's 429 must not hold back the next test's fresh downstream.
    Where a bucket had been signalled, the warm execution environments go too: each remembers the last
    state it saw (it proves a refusal during a block without a write), which only a new one forgets."""
    for simulator in simulators.values():
        simulator.reset()
    dynamodb = cloud.client("dynamodb")
    table = stack_output(deployed, "-SharedLimits", "RateLimiterTableName")
    signalled = False
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            signalled = signalled or "signals" in item
            dynamodb.delete_item(TableName=table, Key={"pk": item["pk"]})
    if signalled:
        cloud.lambda_runtime.shutdown()
    return simulators


def stack_output(stacks: dict[str, DeployedStack], stack_suffix: str, output: str) -> Any:
    (stack,) = [s for name, s in stacks.items() if name.endswith(stack_suffix)]
    return stack.outputs[output]


@pytest.fixture
def tune_downstream(cloud):
    """Write a downstream's tunables document as an operator would (pinned); seeds are restored afterwards.

    `tune_downstream("crm", max_concurrency=3)` merges the changes into the seeded document, so each
    call starts from the seed, not from the previous call (`localcloud.drivers.tuning.operator_tuning`).
    """
    with operator_tuning(cloud) as tune:
        yield tune


@pytest.fixture
def crm(fresh_simulators) -> DownstreamSimulator:
    return fresh_simulators["crm"]


@pytest.fixture
def crm_tunables(tune_downstream):
    """`crm_tunables(max_concurrency=3)`: the CRM's document tuned as an operator would (see `tune_downstream`)."""
    return functools.partial(tune_downstream, "crm")


@pytest.fixture
def crm_dead_letters(cloud, deployed) -> Iterator[None]:
    """The CRM batch's dead-letter queue (both segment paths use it) empty before the test and after it."""
    url = crm_batch_outputs(deployed)["dead_letter_queue_url"]
    drain_queue(cloud, url)
    yield
    drain_queue(cloud, url)


def store_past_allowed_pattern(cloud, name: str, value: str) -> None:
    """Write `value` to the parameter `name` as Parameter Store would not: the tunables carry an AllowedPattern
    (flat JSON objects only) since it was deployed, but a value stored before that, or in a parameter created
    by hand, can still be anything, and the readers must cope with it."""
    from localcloud.emulator import patches

    patches.remove("ssm_allowed_pattern")
    try:
        cloud.client("ssm").put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
    finally:
        patches.apply("ssm_allowed_pattern")


@pytest.fixture(scope="module")
def payments(deployed) -> dict[str, str]:
    """The deployed payment workflow's names (state machine, tables, queues, functions)."""
    from localcloud.drivers.payments import payment_outputs

    return payment_outputs(deployed)


@pytest.fixture
def notifications(cloud, payments) -> Iterator[str]:
    """An SQS queue subscribed to the customer-notifications topic (raw delivery), as an e-mail sender would be."""
    sqs, sns = cloud.client("sqs"), cloud.client("sns")
    queue_url = sqs.create_queue(QueueName=f"notifications-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscription = sns.subscribe(TopicArn=payments["topic_arn"], Protocol="sqs", Endpoint=queue_arn,
                                 Attributes={"RawMessageDelivery": "true"})["SubscriptionArn"]
    yield queue_url
    sns.unsubscribe(SubscriptionArn=subscription)
    sqs.delete_queue(QueueUrl=queue_url)


@pytest.fixture
def gateway(fresh_simulators) -> DownstreamSimulator:
    return fresh_simulators["payment_gateway"]


@pytest.fixture
def breaker(cloud, payments) -> Iterator[Any]:
    """The payment gateway's breaker, as alarms and operators move it; closed again (its item deleted) afterwards.

    Needs the module's `payments` fixture (the deployed payment workflow's names, with `breaker_table`).
    """
    from throttling.adapters.dynamodb_circuit_breaker import DynamoDbCircuitBreaker
    from throttling.core.circuit_breaker import BreakerPolicy

    dynamodb = cloud.client("dynamodb")
    key = {"pk": {"S": "payment_gateway"}}
    dynamodb.delete_item(TableName=payments["breaker_table"], Key=key)
    yield DynamoDbCircuitBreaker(payments["breaker_table"], client=dynamodb, policy=BreakerPolicy())
    dynamodb.delete_item(TableName=payments["breaker_table"], Key=key)
    # Warm authorizers remember an open breaker until its open_until (by design: no read per call);
    # deleting the item is an operator's force-close, so start them afresh as a redeploy would.
    cloud.lambda_runtime.shutdown()

"""SQS fair queues on the emulator: a quiet tenant's messages come ahead of a noisy tenant's backlog.

moto delivers a standard queue's messages in the order they came, whatever their `MessageGroupId`;
the `sqs_fair_queues` fix models what AWS documents (see `localcloud.emulator.patches.sqs`). The
ordering itself is a pure function, checked here with hypothesis; then a real queue of the emulator,
with and without the fix, and with and without group ids.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localcloud.emulator import patches
from localcloud.emulator.patches.sqs import (
    AGE_OF_OLDEST_MESSAGE_IN_QUIET_GROUPS,
    NOISY_MIN_IN_FLIGHT,
    NUMBER_OF_NOISY_GROUPS,
    ProcessingSpan,
    fair_delivery_order,
    fair_queue_metrics,
    noisy_groups,
    processing_sec_by_group,
    publish_fair_queue_metrics,
)

GROUPS = st.sampled_from(["noisy", "quiet", "other", None])


@given(messages=st.lists(st.tuples(st.integers(), GROUPS), max_size=40),
       noisy=st.frozensets(st.sampled_from(["noisy", "quiet", "other"])),
       in_flight=st.dictionaries(st.sampled_from(["noisy", "quiet", "other"]), st.integers(0, 100)))
def test_a_fair_order_puts_every_quiet_message_first_and_keeps_each_tenant_s_own_order(messages, noisy, in_flight):
    # GIVEN messages of several tenants (None: no group id), some tenants noisy
    indexed = list(enumerate(messages))
    # WHEN a fair queue orders them
    ordered = fair_delivery_order(indexed, lambda m: m[1][1], noisy, in_flight)
    # THEN nothing is lost or added
    assert sorted(ordered) == indexed
    # AND every quiet message (a message without a group is never noisy) comes before any noisy one
    kinds = [m[1][1] in noisy for m in ordered]
    assert kinds == sorted(kinds)
    # AND each tenant's messages keep the order they came in
    for group in {group for _, group in messages}:
        positions = [i for i, (_, own) in ordered if own == group]
        assert positions == sorted(positions)
    # AND with no tenant noisy the order is the order they came in
    assert fair_delivery_order(indexed, lambda m: m[1][1], frozenset(), in_flight) == indexed


def test_noisy_tenants_are_those_aws_documents():
    # GIVEN tenants judged by their messages in flight (more than 10 % and at least 30) and their share of
    # the recent processing time (more than 10 %)
    # THEN 30 in flight of 40 is noisy; 29 is not, whatever its share; 30 of 400 (7.5 %) is not
    assert noisy_groups({"a": NOISY_MIN_IN_FLIGHT, "b": 10}, {}) == {"a"}
    assert noisy_groups({"a": NOISY_MIN_IN_FLIGHT - 1}, {}) == frozenset()
    assert noisy_groups({"a": 30, "b": 370}, {}) == {"b"}
    # AND a tenant holding more than 10 % of the processing time is noisy, one holding 10 % exactly is not
    assert noisy_groups({}, {"a": 11.0, "b": 89.0}) == {"a", "b"}
    assert noisy_groups({}, {"a": 10.0, "b": 90.0}) == {"b"}
    # AND messages without a group id are never a noisy tenant
    assert noisy_groups({None: 100}, {None: 100.0}) == frozenset()


def test_processing_time_counts_only_the_recent_window():
    # GIVEN spans of processing, one ending before the window, one straddling its start, one still open
    spans = [ProcessingSpan("a", 0.0, 10.0), ProcessingSpan("a", 90.0, 110.0), ProcessingSpan("b", 150.0, 200.0)]
    # WHEN the last 60 s before t=160 are counted
    counted = processing_sec_by_group(spans, now=160.0, window_sec=60.0)
    # THEN only what falls inside them counts, up to now
    assert counted == {"a": 10.0, "b": 10.0}


def _send(sqs, queue_url: str, tenant: str | None, count: int) -> list[str]:
    bodies = [f"{tenant}-{i}" for i in range(count)]
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body, **({"MessageGroupId": tenant} if tenant else {}))
    return bodies


def _receive(sqs, queue_url: str, count: int) -> list[dict]:
    received: list[dict] = []
    while len(received) < count:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=min(10, count - len(received)),
                                    VisibilityTimeout=300, MessageSystemAttributeNames=["All"]).get("Messages", [])
        if not batch:
            break
        received += batch
    return received


@pytest.mark.emulator
@pytest.mark.parametrize("fair", [True, False], ids=["fair-queues", "moto-alone"])
def test_a_quiet_tenant_s_messages_come_ahead_of_a_noisy_backlog_only_with_the_fix(cloud, fair):
    sqs = cloud.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"fair-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    if not fair:
        patches.remove("sqs_fair_queues")
    try:
        # GIVEN a noisy tenant with 60 messages, 30 of them in flight (noisy by AWS's concurrency measure)
        _send(sqs, queue_url, "noisy", 60)
        in_flight = _receive(sqs, queue_url, NOISY_MIN_IN_FLIGHT)
        assert len(in_flight) == NOISY_MIN_IN_FLIGHT
        # AND a quiet tenant that sends 3 after the noisy backlog
        quiet = _send(sqs, queue_url, "quiet", 3)
        # WHEN a consumer receives 5 more
        received = _receive(sqs, queue_url, 5)
    finally:
        patches.apply("sqs_fair_queues")
    bodies = [m["Body"] for m in received]
    # THEN with fair queues the quiet tenant's 3 come first, in their order, and the group id is on each;
    # moto alone hands out the noisy backlog in the order it came
    if fair:
        assert bodies[:3] == quiet and bodies[3:] == ["noisy-30", "noisy-31"]
        assert [m["Attributes"]["MessageGroupId"] for m in received[:3]] == ["quiet"] * 3
    else:
        assert bodies == [f"noisy-{i}" for i in range(30, 35)]
    # AND every message is accounted for: 35 in flight, 28 still waiting, none lost
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert (int(attributes["ApproximateNumberOfMessagesNotVisible"]),
            int(attributes["ApproximateNumberOfMessages"])) == (35, 28)


@pytest.mark.emulator
def test_without_group_ids_the_order_is_as_before(cloud):
    # GIVEN a standard queue whose messages carry no group id (each its own tenant), 30 of them in flight
    sqs = cloud.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"plain-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    bodies = _send(sqs, queue_url, None, 40)
    first = _receive(sqs, queue_url, NOISY_MIN_IN_FLIGHT)
    # WHEN the rest are received THEN every message comes in the order it was sent, as moto alone has it
    rest = _receive(sqs, queue_url, 10)
    assert [m["Body"] for m in first + rest] == bodies


@pytest.mark.emulator
def test_the_quiet_groups_metrics_leave_a_noisy_backlog_out(cloud):
    from moto.sqs.models import sqs_backends

    # GIVEN a noisy tenant's backlog sent 100 s ago with 30 in flight, and a quiet tenant's message sent 5 s ago
    sqs = cloud.client("sqs")
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    _send(sqs, queue_url, "noisy", 40)
    _receive(sqs, queue_url, NOISY_MIN_IN_FLIGHT)
    _send(sqs, queue_url, "quiet", 1)
    queue = sqs_backends["123456789012"]["us-east-1"].queues[name]
    noisy_sent = min(m.sent_timestamp for m in queue._messages) / 1000
    quiet_sent = max(m.sent_timestamp for m in queue._messages) / 1000
    # WHEN the metrics are computed 5 s after the quiet message was sent
    metrics = fair_queue_metrics(queue, now=quiet_sent + 5)
    # THEN one tenant is noisy, and the quiet groups' oldest message is the quiet one, not the backlog
    assert metrics[NUMBER_OF_NOISY_GROUPS] == 1
    assert metrics[AGE_OF_OLDEST_MESSAGE_IN_QUIET_GROUPS] == pytest.approx(5, abs=0.01)
    assert quiet_sent >= noisy_sent
    # AND publishing puts them into CloudWatch under AWS/SQS and the queue's name, as SQS does
    published = publish_fair_queue_metrics("123456789012", "us-east-1")
    assert published[name][NUMBER_OF_NOISY_GROUPS] == 1
    listed = cloud.client("cloudwatch").list_metrics(Namespace="AWS/SQS", MetricName=NUMBER_OF_NOISY_GROUPS,
                                                     Dimensions=[{"Name": "QueueName", "Value": name}])
    assert len(listed["Metrics"]) == 1


def test_the_alarm_reads_the_metric_the_emulator_computes():
    from stacks.patterns.monitoring import QUIET_GROUPS_AGE_METRIC

    # THEN the stacks' alarm and the emulator's metric are SQS's one name
    assert QUIET_GROUPS_AGE_METRIC == AGE_OF_OLDEST_MESSAGE_IN_QUIET_GROUPS

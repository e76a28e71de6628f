"""SQS event sources on the emulator: polled as Lambda does, into the real runtime, with partial batch failures."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.emulator

FIXTURES = Path(__file__).with_name("fixture_functions")


def test_a_mapping_delivers_batches_and_only_poison_reaches_the_dlq(cloud):
    # GIVEN a queue whose messages go to a DLQ after two receives, drained by a function through a
    # mapping with batches of 5, at most 2 concurrent, reporting partial batch failures
    sqs, lambda_ = cloud.client("sqs"), cloud.client("lambda")
    dlq_url = sqs.create_queue(QueueName="records-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(QueueName="records", Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
    })["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    role = cloud.client("iam").create_role(RoleName="consumer", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lambda_.create_function(FunctionName="consumer", Runtime="python3.13", Role=role, Handler="probe.partial_batch",
                            Code={"ZipFile": _zip()}, Timeout=10)
    lambda_.create_event_source_mapping(
        FunctionName="consumer", EventSourceArn=queue_arn, BatchSize=5, MaximumBatchingWindowInSeconds=0,
        FunctionResponseTypes=["ReportBatchItemFailures"], ScalingConfig={"MaximumConcurrency": 2},
    )
    cloud.event_sources.sync()
    # WHEN 19 healthy messages and one poison message are sent
    for index in range(20):
        sqs.send_message(QueueUrl=queue_url, MessageBody="poison" if index == 7 else f"record-{index}")
    # THEN the 19 healthy ones are deleted after one delivery, the poison one is retried and then
    # moved to the DLQ by its receive count, and nothing else is left anywhere
    assert _wait_for_dlq(cloud, dlq_url, 1)
    (poller,) = cloud.event_sources.pollers.values()
    assert poller.drain(timeout_sec=30)
    assert poller.messages_deleted == 19
    assert poller.max_in_flight_observed <= 2
    dead = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in dead] == ["poison"]
    # AND every batch ran the real handler in the emulator's runtime, which reported failures instead of raising
    batches = [r for r in cloud.lambda_runtime.invocations if r.function_name == "consumer"]
    assert batches and not any(r.errored for r in batches)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(FIXTURES / "probe.py", "probe.py")
    return buffer.getvalue()


def _wait_for_dlq(cloud, dlq_url: str, count: int, timeout_sec: float = 30) -> bool:
    import time

    sqs = cloud.client("sqs")
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        attributes = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
        if int(attributes["Attributes"]["ApproximateNumberOfMessages"]) >= count:
            return True
        time.sleep(0.1)
    return False

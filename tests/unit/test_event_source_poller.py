"""The SQS event-source poller against moto's SQS: batching, concurrency cap, deletes and retries.

The Lambda function is a fake (`FakeFunction`) so each test controls the response; SQS is moto in
process. Waits are on counters and events, never on wall-clock claims.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import boto3
import pytest
from moto import mock_aws
from moto.awslambda.models import LambdaFunction

from localcloud.emulator.event_source_poller import (
    DEFAULT_MAXIMUM_CONCURRENCY,
    EventSourceMappingSpec,
    EventSourcePollerManager,
    InvocationResult,
    MalformedBatchResponseError,
    SqsEventSourcePoller,
    disable_moto_synchronous_sqs_trigger,
    failed_message_ids,
)

REGION = "us-east-1"
POLL_WAIT_SEC = 0.01
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:orders"


class Queue(NamedTuple):
    url: str
    arn: str


class FakeFunction:
    """Stands in for the Lambda runtime: records every event and answers with `respond(event)`.

    With `hold=True` every invocation blocks until `release` is set, and the highest number of
    invocations running at once is measured here, independently of the poller's own counter.
    """

    def __init__(self, respond: Callable[[dict], InvocationResult] | None = None, *, hold: bool = False) -> None:
        self.events: list[dict] = []
        self.release = threading.Event()
        self.max_concurrent = 0
        self._respond = respond or (lambda event: InvocationResult(payload=None))
        self._hold = hold
        self._running = 0
        self._entered = 0
        self._changed = threading.Condition()

    def __call__(self, function_name: str, event: dict) -> InvocationResult:
        with self._changed:
            self.events.append(event)
            self._running += 1
            self._entered += 1
            self.max_concurrent = max(self.max_concurrent, self._running)
            self._changed.notify_all()
        try:
            if self._hold:
                self.release.wait(timeout=10)
            return self._respond(event)
        finally:
            with self._changed:
                self._running -= 1

    def wait_for_entered(self, count: int, timeout_sec: float = 5.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._entered >= count, timeout=timeout_sec)

    @property
    def records(self) -> list[dict]:
        return [record for event in self.events for record in event["Records"]]

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(len(event["Records"]) for event in self.events)

    def deliveries(self) -> Counter[str]:
        return Counter(record["body"] for record in self.records)

    def receive_counts(self, body: str) -> list[str]:
        return [r["attributes"]["ApproximateReceiveCount"] for r in self.records if r["body"] == body]


class StingySqsClient:
    """Real (moto) SQS, but a receive returns at most 3 messages, as SQS's sampled short poll may."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def receive_message(self, **kwargs: Any) -> dict:
        return self._client.receive_message(**{**kwargs, "MaxNumberOfMessages": min(3, kwargs["MaxNumberOfMessages"])})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def wait_until(predicate: Callable[[], bool], timeout_sec: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_sec
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def queue_counts(sqs: Any, queue: Queue) -> tuple[int, int]:
    """(visible, in flight) messages."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def send(sqs: Any, queue: Queue, bodies: list[str]) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=queue.url, MessageBody=body)


def respond_with(payload: Any) -> Callable[[dict], InvocationResult]:
    return lambda event: InvocationResult(payload=payload)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture
def sqs(aws) -> Any:
    return boto3.client("sqs", region_name=REGION)


@pytest.fixture
def make_queue(sqs) -> Callable[..., Queue]:
    def _make(name: str, **attributes: str) -> Queue:
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return Queue(url, arn)

    return _make


@pytest.fixture
def start_poller(sqs):
    started: list[SqsEventSourcePoller] = []

    def _start(queue: Queue, function: FakeFunction, *, sqs_client: Any = None, **spec: Any) -> SqsEventSourcePoller:
        poller = SqsEventSourcePoller(
            EventSourceMappingSpec(
                uuid=f"esm-{len(started)}",
                function_name="orders-consumer",
                queue_url=queue.url,
                queue_arn=queue.arn,
                region=REGION,
                **spec,
            ),
            sqs_client=sqs_client or sqs,
            invoke=function,
            poll_wait_sec=POLL_WAIT_SEC,
        )
        started.append(poller)
        poller.start()
        return poller

    yield _start
    for poller in started:
        poller.stop(timeout_sec=5)


# -- spec ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "shown"),
    [
        ({"batch_size": 0}, "got 0"),
        ({"batch_size": 10_001, "maximum_batching_window_sec": 1}, "got 10001"),
        ({"maximum_batching_window_sec": 301}, "got 301"),
        ({"maximum_batching_window_sec": -1}, "got -1"),
        ({"maximum_concurrency": 1}, "got 1"),
        ({"maximum_concurrency": 1001}, "got 1001"),
        ({"batch_size": 11, "maximum_batching_window_sec": 0}, "batch_size=11"),
        ({"queue_arn": QUEUE_ARN + ".fifo", "batch_size": 20, "maximum_batching_window_sec": 1}, "got 20"),
        ({"queue_arn": "arn:aws:sns:us-east-1:123456789012:orders"}, "arn:aws:sns"),
    ],
)
def test_spec_rejects_what_lambda_rejects(overrides: dict, shown: str):
    # GIVEN settings outside Lambda's documented ranges
    settings = {
        "uuid": "esm-1",
        "function_name": "orders-consumer",
        "queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/orders",
        "queue_arn": QUEUE_ARN,
        "region": REGION,
        **overrides,
    }

    # WHEN the spec is built THEN it fails early with a lowercase message showing the bad value
    with pytest.raises(ValueError) as error:
        EventSourceMappingSpec(**settings)
    assert shown in str(error.value)
    assert str(error.value)[0].islower()


def test_spec_without_maximum_concurrency_uses_the_default():
    # GIVEN a mapping without ScalingConfig
    spec = EventSourceMappingSpec(
        uuid="esm-1", function_name="f", queue_url="https://q", queue_arn=QUEUE_ARN, region=REGION
    )

    # THEN it runs at Lambda's starting concurrency
    assert spec.maximum_concurrency is None
    assert spec.effective_maximum_concurrency == DEFAULT_MAXIMUM_CONCURRENCY == 5


# -- batching --------------------------------------------------------------------------------------
def test_batch_size_is_respected_and_every_message_is_delivered_once(sqs, make_queue, start_poller):
    # GIVEN 25 messages waiting and a mapping with batch size 10
    queue = make_queue("orders")
    bodies = [f"m{i}" for i in range(25)]
    send(sqs, queue, bodies)
    function = FakeFunction()

    # WHEN the poller runs until the queue is empty
    poller = start_poller(queue, function, batch_size=10, maximum_batching_window_sec=0.2)
    assert poller.drain(timeout_sec=5)

    # THEN batches hold at most 10 messages (10, 10, then the 5 left when the window ran out)
    assert function.batch_sizes == [5, 10, 10]
    assert function.deliveries() == Counter(bodies)
    assert poller.batches_invoked == 3
    assert poller.messages_deleted == 25
    assert poller.messages_failed == 0


def test_batch_larger_than_one_receive_is_gathered_from_several_receives(sqs, make_queue, start_poller):
    # GIVEN 25 messages and a batch size of 25 (above 10, so Lambda requires a window of >= 1 s)
    queue = make_queue("orders")
    send(sqs, queue, [f"m{i}" for i in range(25)])
    function = FakeFunction()

    # WHEN the poller runs (the batch fills before the window ends)
    poller = start_poller(queue, function, batch_size=25, maximum_batching_window_sec=1)
    assert poller.drain(timeout_sec=5)

    # THEN one invocation carries all 25, gathered from three receives of at most 10
    assert function.batch_sizes == [25]


@pytest.mark.parametrize(("window_sec", "expected_batch_sizes"), [(0, [1, 3, 3]), (1.0, [7])])
def test_batching_window_gathers_receives_until_it_ends(
    sqs, make_queue, start_poller, window_sec: float, expected_batch_sizes: list[int]
):
    # GIVEN 7 messages, a batch size of 10 and receives that return at most 3 messages
    queue = make_queue("orders")
    send(sqs, queue, [f"m{i}" for i in range(7)])
    function = FakeFunction()

    # WHEN the poller runs with the given batching window
    poller = start_poller(
        queue, function, sqs_client=StingySqsClient(sqs), batch_size=10, maximum_batching_window_sec=window_sec
    )
    assert poller.drain(timeout_sec=5)

    # THEN without a window each receive is invoked as it comes; with one they are gathered
    assert function.batch_sizes == expected_batch_sizes


# -- concurrency -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("maximum_concurrency", "expected_cap"), [(2, 2), (3, 3), (None, DEFAULT_MAXIMUM_CONCURRENCY)]
)
def test_maximum_concurrency_is_reached_and_never_exceeded(
    sqs, make_queue, start_poller, maximum_concurrency: int | None, expected_cap: int
):
    # GIVEN three times as many single-message batches as the cap, and a function that holds every call
    queue = make_queue("orders")
    total = expected_cap * 3
    bodies = [f"m{i}" for i in range(total)]
    send(sqs, queue, bodies)
    function = FakeFunction(hold=True)

    # WHEN the poller fills every slot
    poller = start_poller(queue, function, batch_size=1, maximum_concurrency=maximum_concurrency)
    assert function.wait_for_entered(expected_cap)

    # THEN messages beyond the cap stay in the queue instead of being received and held
    assert queue_counts(sqs, queue) == (total - expected_cap, expected_cap)

    # WHEN the function is released
    function.release.set()
    assert poller.drain(timeout_sec=5)

    # THEN everything was delivered once and the cap was reached but never exceeded
    assert function.deliveries() == Counter(bodies)
    assert function.max_concurrent == expected_cap
    assert poller.max_in_flight_observed == expected_cap


# -- failures --------------------------------------------------------------------------------------
def test_partial_batch_failure_deletes_the_others_and_the_failed_message_comes_back(sqs, make_queue, start_poller):
    # GIVEN a batch of three where the function reports "b" as failed on its first delivery
    queue = make_queue("orders")
    send(sqs, queue, ["a", "b", "c"])

    def respond(event: dict) -> InvocationResult:
        failures = [
            {"itemIdentifier": r["messageId"]}
            for r in event["Records"]
            if r["body"] == "b" and r["attributes"]["ApproximateReceiveCount"] == "1"
        ]
        return InvocationResult(payload={"batchItemFailures": failures})

    function = FakeFunction(respond)

    # WHEN the batch is processed
    poller = start_poller(queue, function, report_batch_item_failures=True)
    assert wait_until(lambda: poller.batches_invoked == 1 and poller.in_flight == 0)

    # THEN "a" and "c" are deleted and "b" is kept, invisible until its visibility timeout ends
    assert poller.messages_deleted == 2
    assert poller.messages_failed == 1
    assert queue_counts(sqs, queue) == (0, 1)

    # WHEN its visibility timeout ends (made immediate instead of waiting the queue's 30 s)
    first_b = next(r for r in function.records if r["body"] == "b")
    sqs.change_message_visibility(QueueUrl=queue.url, ReceiptHandle=first_b["receiptHandle"], VisibilityTimeout=0)
    assert poller.drain(timeout_sec=5)

    # THEN "b" is delivered a second time, with ApproximateReceiveCount 2, and then deleted
    assert function.receive_counts("b") == ["1", "2"]
    assert function.deliveries() == Counter({"a": 1, "b": 2, "c": 1})
    assert poller.messages_deleted == 3


def test_poison_message_ends_in_the_dead_letter_queue_while_the_rest_of_its_batch_succeeds(
    sqs, make_queue, start_poller
):
    # GIVEN a queue with a 1 s visibility timeout that moves a message to a DLQ after 2 receives,
    # holding three good messages and one the function always reports as failed
    dlq = make_queue("orders-dlq")
    queue = make_queue(
        "orders",
        VisibilityTimeout="1",
        RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq.arn, "maxReceiveCount": 2}),
    )
    send(sqs, queue, ["ok-1", "ok-2", "ok-3", "poison"])

    def respond(event: dict) -> InvocationResult:
        failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "poison"]
        return InvocationResult(payload={"batchItemFailures": failures})

    function = FakeFunction(respond)

    # WHEN the poller runs until the source queue is empty (two visibility timeouts)
    poller = start_poller(queue, function, report_batch_item_failures=True)
    assert poller.drain(timeout_sec=8)

    # THEN the first batch held all four: ok-1..3 were deleted after that one delivery
    assert sorted(r["body"] for r in function.events[0]["Records"]) == ["ok-1", "ok-2", "ok-3", "poison"]
    assert function.deliveries() == Counter({"ok-1": 1, "ok-2": 1, "ok-3": 1, "poison": 2})
    # the poison message failed on receive 1 and 2; moto moved it to the DLQ on the next receive
    assert function.receive_counts("poison") == ["1", "2"]
    assert poller.messages_deleted == 3
    assert poller.messages_failed == 2
    # (a long poll: moto moves it in two steps, out of the source queue and then into the DLQ, and on
    # a loaded machine the drain can see the source empty in between)
    in_dlq = sqs.receive_message(QueueUrl=dlq.url, MaxNumberOfMessages=10, WaitTimeSeconds=3).get("Messages", [])
    assert [m["Body"] for m in in_dlq] == ["poison"]
    assert queue_counts(sqs, queue) == (0, 0)


@pytest.mark.parametrize("report_batch_item_failures", [False, True])
def test_function_error_keeps_the_whole_batch(sqs, make_queue, start_poller, report_batch_item_failures: bool):
    # GIVEN a function that raises
    queue = make_queue("orders")
    send(sqs, queue, ["a", "b", "c"])
    function = FakeFunction(
        lambda event: InvocationResult(payload={"errorType": "RuntimeError", "errorMessage": "boom"}, errored=True)
    )

    # WHEN the batch is processed
    poller = start_poller(queue, function, report_batch_item_failures=report_batch_item_failures)
    assert wait_until(lambda: poller.batches_invoked == 1 and poller.in_flight == 0)

    # THEN nothing is deleted: all three wait out their visibility timeout for a retry
    assert poller.messages_deleted == 0
    assert poller.messages_failed == 3
    assert queue_counts(sqs, queue) == (0, 3)


@pytest.mark.parametrize(
    "payload",
    [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}, '{"batchItemFailures": []}', b"", ""],
    ids=["null", "empty-object", "empty-list", "null-list", "json-text", "empty-bytes", "empty-text"],
)
def test_partial_response_shapes_lambda_treats_as_complete_success(payload: Any):
    # WHEN a response Lambda documents as "no failures" is read THEN no message is kept
    assert failed_message_ids(payload, ["id-1", "id-2"]) == set()


def test_partial_response_names_the_messages_to_keep():
    # GIVEN a response, as JSON text, that reports one message twice
    payload = json.dumps({"batchItemFailures": [{"itemIdentifier": "id-2"}, {"itemIdentifier": "id-2"}]})

    # WHEN it is read THEN only that message is kept
    assert failed_message_ids(payload, ["id-1", "id-2", "id-3"]) == {"id-2"}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"batchItemFailures": [{"itemIdentifier": ""}]}, id="empty-identifier"),
        pytest.param({"batchItemFailures": [{"itemIdentifier": None}]}, id="null-identifier"),
        pytest.param({"batchItemFailures": [{"itemIdentifier": "id-9"}]}, id="unknown-identifier"),
        pytest.param({"batchItemFailures": [{"messageId": "id-1"}]}, id="bad-key-name"),
        pytest.param({"batchItemFailures": ["id-1"]}, id="bare-ids"),
        pytest.param({"batchItemFailures": "id-1"}, id="not-a-list"),
        pytest.param("{not json", id="not-json"),
        pytest.param(["id-1"], id="not-an-object"),
    ],
)
def test_partial_response_shapes_lambda_treats_as_complete_failure(payload: Any):
    # WHEN a response Lambda cannot use is read THEN it is rejected, which fails the whole batch
    with pytest.raises(MalformedBatchResponseError):
        failed_message_ids(payload, ["id-1", "id-2"])


def test_malformed_partial_response_fails_the_whole_batch(
    sqs, make_queue, start_poller, caplog: pytest.LogCaptureFixture
):
    # GIVEN a function whose partial batch response names a message that is not in the batch
    queue = make_queue("orders")
    send(sqs, queue, ["a", "b", "c"])
    function = FakeFunction(respond_with({"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}))
    caplog.set_level(logging.ERROR, logger="localcloud.emulator.event_source_poller")

    # WHEN the batch is processed
    poller = start_poller(queue, function, report_batch_item_failures=True)
    assert wait_until(lambda: poller.batches_invoked == 1 and poller.in_flight == 0)

    # THEN the whole batch is kept for a retry and the reason is logged
    assert poller.messages_deleted == 0
    assert poller.messages_failed == 3
    assert queue_counts(sqs, queue) == (0, 3)
    assert any(
        "invalid partial batch response" in record.getMessage() and "not-in-this-batch" in record.getMessage()
        for record in caplog.records
    )


def test_batch_item_failures_are_ignored_without_report_batch_item_failures(sqs, make_queue, start_poller):
    # GIVEN a mapping without ReportBatchItemFailures and a function that reports every item failed
    queue = make_queue("orders")
    send(sqs, queue, ["a", "b"])
    function = FakeFunction(
        lambda event: InvocationResult(
            payload={"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}
        )
    )

    # WHEN the queue is drained
    poller = start_poller(queue, function, report_batch_item_failures=False)
    assert poller.drain(timeout_sec=5)

    # THEN, as on Lambda, the response counts as success and both messages are gone after one delivery
    assert poller.messages_deleted == 2
    assert function.deliveries() == Counter({"a": 1, "b": 1})


# -- event shape -----------------------------------------------------------------------------------
def test_event_has_lambdas_sqs_record_shape(sqs, make_queue, start_poller):
    # GIVEN a message with string, number and binary attributes
    queue = make_queue("orders")
    sqs.send_message(
        QueueUrl=queue.url,
        MessageBody='{"order": 1}',
        MessageAttributes={
            "tenant": {"DataType": "String", "StringValue": "acme"},
            "priority": {"DataType": "Number", "StringValue": "3"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    function = FakeFunction()

    # WHEN it is delivered
    poller = start_poller(queue, function)
    assert poller.drain(timeout_sec=5)

    # THEN the record carries the fields Lambda's SQS event has, message attributes in lowercase keys
    (record,) = function.records
    assert set(record) >= {
        "messageId", "receiptHandle", "body", "attributes", "messageAttributes",
        "md5OfBody", "eventSource", "eventSourceARN", "awsRegion",
    }  # fmt: skip
    assert record["body"] == '{"order": 1}'
    assert record["md5OfBody"] == hashlib.md5(b'{"order": 1}').hexdigest()
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queue.arn
    assert record["awsRegion"] == REGION
    assert set(record["attributes"]) >= {
        "ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp",
    }  # fmt: skip
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"] == {
        "tenant": {"stringValue": "acme", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        "priority": {"stringValue": "3", "stringListValues": [], "binaryListValues": [], "dataType": "Number"},
        "blob": {
            "binaryValue": base64.b64encode(b"\x00\x01").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    json.dumps(function.events[0])  # the event must survive the trip to a real runtime


# -- moto's own trigger and the manager ------------------------------------------------------------
def _zip(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.py", source)
    return buffer.getvalue()


@pytest.fixture
def moto_inline_invocations(aws, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every event moto's own Lambda path runs; `_invoke_lambda` would need Docker, absent here."""
    calls: list[dict] = []

    def record(self: LambdaFunction, event: Any) -> tuple[str, bool, str]:
        calls.append(event)
        return "null", False, ""

    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", record)
    return calls


@pytest.fixture
def lambda_client(aws) -> Any:
    client = boto3.client("lambda", region_name=REGION)
    role = boto3.client("iam", region_name=REGION).create_role(
        RoleName="orders-consumer-role", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    client.create_function(
        FunctionName="orders-consumer",
        Runtime="python3.11",
        Role=role,
        Handler="index.handler",
        Code={"ZipFile": _zip("def handler(event, context):\n    return None\n")},
    )
    return client


@pytest.fixture
def no_inline_trigger():
    undo = disable_moto_synchronous_sqs_trigger()
    yield
    undo()


def test_moto_alone_invokes_the_function_inside_send_message(
    sqs, make_queue, lambda_client, moto_inline_invocations
):
    # GIVEN moto's own SQS event-source mapping (the limitation the patch covers)
    queue = make_queue("orders")
    lambda_client.create_event_source_mapping(EventSourceArn=queue.arn, FunctionName="orders-consumer", BatchSize=10)

    # WHEN a message is sent without the patch
    sqs.send_message(QueueUrl=queue.url, MessageBody="a")

    # THEN moto invoked the function before SendMessage returned and deleted the message
    assert [[r["body"] for r in event["Records"]] for event in moto_inline_invocations] == [["a"]]
    assert queue_counts(sqs, queue) == (0, 0)


def test_disabling_moto_trigger_leaves_the_message_for_the_poller(
    sqs, make_queue, lambda_client, moto_inline_invocations
):
    # GIVEN moto's own SQS event-source mapping and the patch applied
    queue = make_queue("orders")
    lambda_client.create_event_source_mapping(EventSourceArn=queue.arn, FunctionName="orders-consumer", BatchSize=10)
    undo = disable_moto_synchronous_sqs_trigger()
    try:
        # WHEN a message is sent
        sqs.send_message(QueueUrl=queue.url, MessageBody="a")

        # THEN nothing was invoked inline and the message waits, unreceived, in the queue
        assert moto_inline_invocations == []
        assert queue_counts(sqs, queue) == (1, 0)
        # and applying the patch twice does not stack
        disable_moto_synchronous_sqs_trigger()()
        sqs.send_message(QueueUrl=queue.url, MessageBody="b")
        assert moto_inline_invocations == []
    finally:
        undo()

    # WHEN the patch is undone THEN moto's inline invocation is back: the next send runs every waiting
    # message through the function, one invocation per message
    sqs.send_message(QueueUrl=queue.url, MessageBody="c")
    assert sorted([r["body"] for r in event["Records"]] for event in moto_inline_invocations) == [["a"], ["b"], ["c"]]


@pytest.fixture
def manager_for(sqs):
    managers: list[EventSourcePollerManager] = []

    def _make(function: FakeFunction, **options: Any) -> EventSourcePollerManager:
        manager = EventSourcePollerManager(
            invoke=function,
            sqs_client_factory=lambda region: boto3.client("sqs", region_name=region),
            poll_wait_sec=POLL_WAIT_SEC,
            **options,
        )
        managers.append(manager)
        return manager

    yield _make
    for manager in managers:
        manager.stop_all(timeout_sec=5)


def test_manager_polls_each_moto_mapping_with_its_settings(
    sqs, make_queue, lambda_client, moto_inline_invocations, no_inline_trigger, manager_for
):
    # GIVEN a mapping created through the Lambda API, with every setting the poller honours
    queue = make_queue("orders")
    mapping = lambda_client.create_event_source_mapping(
        EventSourceArn=queue.arn,
        FunctionName="orders-consumer",
        BatchSize=5,
        MaximumBatchingWindowInSeconds=1,
        ScalingConfig={"MaximumConcurrency": 3},
        FunctionResponseTypes=["ReportBatchItemFailures"],
    )
    function = FakeFunction()
    manager = manager_for(function)

    # WHEN the manager syncs
    started = manager.sync()

    # THEN one poller runs with moto's stored settings
    assert started == [mapping["UUID"]]
    spec = manager.pollers[mapping["UUID"]].spec
    assert (spec.batch_size, spec.maximum_batching_window_sec, spec.maximum_concurrency) == (5, 1, 3)
    assert spec.report_batch_item_failures is True
    assert spec.function_name == mapping["FunctionArn"]
    assert (spec.queue_arn, spec.region) == (queue.arn, REGION)

    # WHEN five messages are sent
    sqs.send_message_batch(QueueUrl=queue.url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(5)])
    assert manager.drain(timeout_sec=5)

    # THEN the poller, not moto, delivered them as one batch of five
    assert function.batch_sizes == [5]
    assert moto_inline_invocations == []

    # WHEN sync runs again (after another deploy) THEN nothing new is started
    poller = manager.pollers[mapping["UUID"]]
    assert manager.sync() == []
    assert manager.pollers[mapping["UUID"]] is poller


def test_manager_follows_added_disabled_deleted_and_rejected_mappings(
    sqs, make_queue, lambda_client, no_inline_trigger, manager_for, caplog: pytest.LogCaptureFixture
):
    # GIVEN one mapping already polled
    orders, refunds, audits = make_queue("orders"), make_queue("refunds"), make_queue("audits")
    first = lambda_client.create_event_source_mapping(EventSourceArn=orders.arn, FunctionName="orders-consumer")
    manager = manager_for(FakeFunction())
    assert manager.sync() == [first["UUID"]]

    # WHEN a second mapping is added THEN only it is started
    second = lambda_client.create_event_source_mapping(EventSourceArn=refunds.arn, FunctionName="orders-consumer")
    assert manager.sync() == [second["UUID"]]
    assert set(manager.pollers) == {first["UUID"], second["UUID"]}

    # WHEN the first is disabled, then enabled again THEN its poller stops, then starts again
    lambda_client.update_event_source_mapping(UUID=first["UUID"], Enabled=False)
    assert manager.sync() == []
    assert set(manager.pollers) == {second["UUID"]}
    lambda_client.update_event_source_mapping(UUID=first["UUID"], Enabled=True)
    assert manager.sync() == [first["UUID"]]

    # WHEN the second is deleted THEN its poller stops
    lambda_client.delete_event_source_mapping(UUID=second["UUID"])
    manager.sync()
    assert set(manager.pollers) == {first["UUID"]}

    # WHEN a mapping Lambda would reject is added (moto accepts batch size 20 without a window)
    caplog.set_level(logging.ERROR, logger="localcloud.emulator.event_source_poller")
    bad = lambda_client.create_event_source_mapping(
        EventSourceArn=audits.arn, FunctionName="orders-consumer", BatchSize=20
    )
    assert manager.sync() == []

    # THEN it is not polled, and the reason is listed and logged
    assert "batch_size=20" in manager.rejected[bad["UUID"]]
    assert any(bad["UUID"] in record.getMessage() for record in caplog.records)


def test_manager_applies_spec_override(sqs, make_queue, lambda_client, no_inline_trigger, manager_for):
    # GIVEN a mapping without ScalingConfig and an override that caps the emulator's concurrency
    queue = make_queue("orders")
    mapping = lambda_client.create_event_source_mapping(EventSourceArn=queue.arn, FunctionName="orders-consumer")

    def cap_concurrency(spec: EventSourceMappingSpec) -> EventSourceMappingSpec:
        return EventSourceMappingSpec(**{**spec.__dict__, "maximum_concurrency": 2})

    manager = manager_for(FakeFunction(), spec_override=cap_concurrency)

    # WHEN the manager syncs twice THEN the overridden spec is used and is stable across syncs
    assert manager.sync() == [mapping["UUID"]]
    assert manager.pollers[mapping["UUID"]].spec.maximum_concurrency == 2
    assert manager.sync() == []

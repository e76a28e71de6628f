"""The legacy consumer's rules without AWS: parsing, postponement arithmetic, and what one batch does with fakes.

The handler builds its dependencies from its environment once per execution environment, as on Lambda;
`fakes` builds them from a test environment, with fakes for SQS and DynamoDB, and swaps the
limiter and the mainframe client for fakes too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttling.core import names
from throttling.core.backoff import postpone_for_sec
from throttling.core.rate_limit_headers import RateLimitInfo
from throttling.core.rate_limiter import RateDecision
from throttling.core.tunables import DownstreamTunables
from throttling.runtime.downstream_client import (
    DownstreamRejected,
    DownstreamResponse,
    DownstreamThrottled,
    DownstreamUnavailable,
)

ENVIRONMENT = {
    "DOWNSTREAM_NAME": "legacy_mainframe",
    "DOWNSTREAM_BASE_URL": "http://127.0.0.1:9",
    "DOWNSTREAM_TIMEOUT_SEC": "10",
    "DOWNSTREAM_RATE_LIMIT_PER_SEC": "1",
    "DOWNSTREAM_BURST": "1",
    "TUNABLES_PARAMETER_NAME": "/throttling/test/downstreams/legacy_mainframe",
    "RATE_LIMITER_TABLE_NAME": "limiter",
    "RECORDS_TABLE_NAME": "records",
    "QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/legacy",
    "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/legacy-dead-letters",
    "QUEUE_MAX_RECEIVE_COUNT": "20",
    "POWERTOOLS_SERVICE_NAME": "legacy_mainframe-consumer",
    "POWERTOOLS_METRICS_NAMESPACE": "Test",
}
ALLOW = RateDecision(allowed=True, retry_after_sec=0.0, remaining=0, reset_after_sec=1.0, new_tat=1.0, based_on_tat=0.0)


def deny(retry_after_sec: float) -> RateDecision:
    return RateDecision(allowed=False, retry_after_sec=retry_after_sec, remaining=0, reset_after_sec=retry_after_sec,
                        new_tat=None, based_on_tat=0.0)


@pytest.fixture(scope="module")
def consumer(import_handler):
    # Only Powertools' own variables: its logger and metrics read their service and namespace at import.
    return import_handler("handlers.legacy_consumer", {name: value for name, value in ENVIRONMENT.items()
                                                       if name.startswith("POWERTOOLS_")})


# -- postponement --------------------------------------------------------------------------------


def postponement(consumer, retry_after_sec: float | None, receive_count: int, held_sec: float = 0.0) -> int:
    """The consumer's postponement: the shared rule, capped for the time its mapping may hold a batch."""
    return postpone_for_sec(retry_after_sec, receive_count, held_sec,
                            hold_before_invoke_sec=consumer.LONGEST_HOLD_BEFORE_INVOKE_SEC)


@pytest.mark.parametrize(
    ("retry_after_sec", "receive_count", "expected_sec"),
    [
        (4.2, 1, 5),  # the Retry-After, rounded up to whole seconds
        (3.0, 1, 3),  # ... but not a whole second up for an exact value
        (None, 1, 1),  # no Retry-After: at least one second
        (0.01, 1, 1),
        (1.0, 5, 16),  # the fifth receive: 2^4 s, more than the mainframe asked
        (120.0, 5, 120),  # a longer Retry-After wins
        (None, 17, 42_900),  # 2^16 s is beyond 12 h: capped (less the 300 s a batch may wait to be invoked)
        (86_400.0, 1, 42_900),  # so is a Retry-After of a day
    ],
)
def test_a_postponement_honours_the_retry_after_and_backs_off_with_each_receive(
    consumer, retry_after_sec, receive_count, expected_sec
):
    assert postponement(consumer, retry_after_sec, receive_count) == expected_sec


def test_the_cap_counts_the_time_this_invocation_has_held_the_batch(consumer):
    assert postponement(consumer, 86_400.0, 1, held_sec=59.5) == 42_900 - 60


@given(retry_after_sec=st.one_of(st.none(), st.floats(0, 1e6)), receive_count=st.integers(1, 1_000),
       held_sec=st.floats(0, 900))
def test_a_postponement_is_whole_seconds_within_sqs_limits_and_never_shorter_than_asked(
    consumer, retry_after_sec, receive_count, held_sec
):
    seconds = postponement(consumer, retry_after_sec, receive_count, held_sec)
    assert isinstance(seconds, int) and 1 <= seconds <= 43_200 - 300 - held_sec
    assert seconds >= min(retry_after_sec or 0, 43_200 - 300 - held_sec - 1)
    assert seconds >= postponement(consumer, retry_after_sec, max(1, receive_count - 1), held_sec)


@pytest.mark.parametrize(
    ("planned", "contract", "expected_sec"),
    [(0.8, 1.0, 0.125), (2.5, 5.0, 0.1), (1.0, 1.0, float("inf")), (2.0, 1.0, float("inf"))],
)
def test_a_token_is_stale_after_half_the_headroom_between_the_planned_and_the_contract_interval(
    consumer, planned, contract, expected_sec
):
    assert consumer.stale_token_after_sec(planned, contract) == pytest.approx(expected_sec)


# -- one batch, with fakes -----------------------------------------------------------------------


@dataclass
class FakeLimiter:
    """Answers `decisions` in turn (then admits); each answer takes the next of `delays` on `clock`."""

    decisions: list[RateDecision] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    clock: list[float] = field(default_factory=lambda: [1_000.0])
    calls: int = 0
    reported: list[dict[str, Any]] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)
    # (tenant, priority) of each take
    shares_asked: list[tuple[str | None, str | None]] = field(default_factory=list)

    def try_acquire(self, bucket: str, policy: Any, cost: int = 1, adaptive: Any = None, *, tenant: str | None = None,
                    priority: str | None = None, shares: Any = None) -> RateDecision:
        assert bucket == "legacy_mainframe"
        self.calls += 1
        self.shares_asked.append((tenant, priority))
        self.clock[0] += self.delays.pop(0) if self.delays else 0.0
        return self.decisions.pop(0) if self.decisions else ALLOW

    def report_signal(self, bucket: str, policy: Any, adaptive: Any, *, admitted_at: float,
                      retry_after_sec: float | None) -> None:
        self.reported.append({"bucket": bucket, "admitted_at": admitted_at, "retry_after_sec": retry_after_sec})

    def report_published(self, bucket: str, policy: Any, adaptive: Any, *, admitted_at: float,
                         published_per_sec: float | None) -> None:
        self.published.append({"bucket": bucket, "admitted_at": admitted_at, "published_per_sec": published_per_sec})


@dataclass
class FakeMainframe:
    """Answers 200 unless `errors` names the record id; records every call."""

    errors: dict[str, Exception] = field(default_factory=dict)
    calls: list[tuple[str, dict]] = field(default_factory=list)
    timeout_sec: float = 10.0
    # What its 2xx headers say of its limit (nothing, unless a test says otherwise).
    rate_limit: RateLimitInfo = field(default_factory=RateLimitInfo)

    def call(self, method: str, path: str, *, body: Any = None, headers: dict | None = None) -> DownstreamResponse:
        assert (method, path) == ("POST", "/records")
        self.calls.append((body["record_id"], dict(headers or {})))
        if body["record_id"] in self.errors:
            raise self.errors[body["record_id"]]
        return DownstreamResponse(status=200, body={}, latency_ms=3.0, rate_limit=self.rate_limit)


@dataclass
class FakeAws:
    """Stands in for both the SQS and the DynamoDB client: records what the handler asked for.

    `send_error` is raised by every `SendMessage` (as boto3 raises SQS's refusal), after recording it.
    """

    visibility_calls: list[dict] = field(default_factory=list)
    updates: list[dict] = field(default_factory=list)
    sent: list[dict] = field(default_factory=list)
    send_error: Exception | None = None

    def change_message_visibility_batch(self, **request):
        self.visibility_calls.append(request)
        return {"Successful": [{"Id": e["Id"]} for e in request["Entries"]], "Failed": []}

    def send_message(self, **request):
        self.sent.append(request)
        if self.send_error is not None:
            raise self.send_error
        return {"MessageId": f"dead-{len(self.sent)}", "MD5OfMessageBody": "x"}

    def update_item(self, **request):
        self.updates.append(request)
        return {}

    def statuses(self) -> dict[str, str]:
        return {u["Key"]["pk"]["S"]: u["ExpressionAttributeValues"].get(":delivered" if "delivered_at" in
                                                                           u["UpdateExpression"] else ":failed")["S"]
                for u in self.updates}

    def new_visibilities(self) -> dict[str, int]:
        return {e["ReceiptHandle"]: e["VisibilityTimeout"] for call in self.visibility_calls for e in call["Entries"]}


class FakeContext:
    function_name = "legacy-consumer"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:legacy-consumer"
    aws_request_id = "request-1"

    def __init__(self, remaining_ms: int = 60_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def fakes(consumer, monkeypatch):
    limiter, mainframe, aws = FakeLimiter(), FakeMainframe(), FakeAws()
    deps = consumer.build_dependencies(ENVIRONMENT, dynamodb=aws, sqs=aws)
    deps.gate.limiter = limiter
    deps.client = mainframe
    monkeypatch.setattr(deps.tunables, "get", lambda: DownstreamTunables(rate_per_sec=0.8, burst=1, max_concurrency=1))
    monkeypatch.setattr(consumer, "dependencies", lambda: deps)
    slept: list[float] = []
    monkeypatch.setattr(consumer.time, "sleep", slept.append)
    return limiter, mainframe, aws, slept


def sqs_event(*bodies: str, receive_count: int = 1) -> dict[str, Any]:
    return {"Records": [
        {"messageId": f"m-{i}", "receiptHandle": f"h-{i}", "body": body,
         "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "1"},
         "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:legacy", "awsRegion": "us-east-1"}
        for i, body in enumerate(bodies)]}


def record(record_id: str) -> str:
    return json.dumps({"record_id": record_id, "payload": {}})


def failures(response: dict) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def emitted_metrics(capsys) -> dict[str, float]:
    """What the invocations so far published (Powertools' EMF lines on stdout), summed per metric."""
    totals: dict[str, float] = {}
    for line in capsys.readouterr().out.splitlines():
        if '"_aws"' not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                values = document[metric["Name"]]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(values if isinstance(values, list)
                                                                             else [values])
    return totals


def test_a_poison_message_goes_to_the_dead_letter_queue_at_once_with_its_reason(consumer, fakes, capsys):
    limiter, mainframe, aws, _ = fakes
    # WHEN a batch holds a malformed body between two records
    response = consumer.handler(sqs_event(record("r-0"), "{oops", record("r-2"), receive_count=1), FakeContext())
    # THEN nothing fails: the records are sent with their id as Idempotency-Key and marked delivered ...
    assert failures(response) == []
    assert [(rid, headers["Idempotency-Key"]) for rid, headers in mainframe.calls] == [("r-0", "r-0"), ("r-2", "r-2")]
    assert aws.statuses() == {"r-0": "delivered", "r-2": "delivered"}
    # ... and the malformed body is in the dead-letter queue after its first receive, unchanged, with why,
    # where from, which message and which receive (so the mapping deletes it from the queue)
    (dead,) = aws.sent
    assert (dead["QueueUrl"], dead["MessageBody"]) == (ENVIRONMENT["DEAD_LETTER_QUEUE_URL"], "{oops")
    attributes = dead["MessageAttributes"]
    assert attributes["error"]["DataType"] == "String"
    assert attributes["error"]["StringValue"].startswith("the body is not JSON (Expecting property name")
    assert attributes["source_queue_arn"] == {"DataType": "String",
                                              "StringValue": "arn:aws:sqs:us-east-1:123456789012:legacy"}
    assert attributes["source_message_id"] == {"DataType": "String", "StringValue": "m-1"}
    assert attributes["receive_count"] == {"DataType": "Number", "StringValue": "1"}
    # AND it spent no token and changed no visibility
    assert limiter.calls == 2
    assert aws.new_visibilities() == {}
    # AND the metrics say it was poison and went to the dead-letter queue
    metrics = emitted_metrics(capsys)
    assert (metrics["PoisonRecords"], metrics["PoisonRecordsDeadLettered"]) == (1, 1)
    assert "PoisonRecordsReturnedToQueue" not in metrics


def test_records_the_mainframe_cannot_carry_are_dead_lettered_before_any_token_or_call(consumer, fakes):
    limiter, mainframe, aws, _ = fakes
    # GIVEN a batch where an id with a newline, an id with an emoji, a too-deep payload and NaN sit between records
    poison = ['{"record_id": "r-1\\n", "payload": {}}', '{"record_id": "r-\\ud83d\\ude00", "payload": {}}',
              '{"record_id": "r-deep", "payload": ' + "[" * 900 + "]" * 900 + "}",
              '{"record_id": "r-nan", "payload": {"x": NaN}}']
    response = consumer.handler(sqs_event(record("r-0"), *poison, record("r-5"), receive_count=3), FakeContext())
    # THEN none of the four fails: each is in the dead-letter queue, body unchanged, with its own reason
    assert failures(response) == [] and aws.new_visibilities() == {}
    assert [dead["MessageBody"] for dead in aws.sent] == poison
    reasons = [dead["MessageAttributes"]["error"]["StringValue"] for dead in aws.sent]
    assert [reason.split(" (")[0].split(",")[0] for reason in reasons] == [
        "record_id must be 1-128 characters of A-Z", "record_id must be 1-128 characters of A-Z",
        "the body nests 901 levels deep; a record's payload may nest at most 8",
        "the body holds NaN"]
    assert {dead["MessageAttributes"]["receive_count"]["StringValue"] for dead in aws.sent} == {"3"}
    # AND the records around them were delivered, with one token each: none was spent on the poison
    assert [rid for rid, _ in mainframe.calls] == ["r-0", "r-5"]
    assert limiter.calls == 2
    assert aws.statuses() == {"r-0": "delivered", "r-5": "delivered"}


def test_a_dead_letter_keeps_the_producer_s_attributes_beside_its_reason(consumer, fakes):
    _, _, aws, _ = fakes
    # GIVEN a poison message posted through the API (its request id) with a binary attribute and one named "error"
    event = sqs_event("not a record")
    event["Records"][0]["messageAttributes"] = {
        "correlation_id": {"stringValue": "api-request-7", "stringListValues": [], "binaryListValues": [],
                           "dataType": "String"},
        "signature": {"binaryValue": "AAEC/w==", "stringListValues": [], "binaryListValues": [],
                      "dataType": "Binary.sig"},
        "error": {"stringValue": "the producer's own", "stringListValues": [], "binaryListValues": [],
                  "dataType": "String"},
    }
    # WHEN it is handled
    consumer.handler(event, FakeContext())
    # THEN its dead letter carries the producer's attributes as SendMessage takes them, the reason replacing "error"
    (dead,) = aws.sent
    attributes = dead["MessageAttributes"]
    assert attributes["correlation_id"] == {"DataType": "String", "StringValue": "api-request-7"}
    assert attributes["signature"] == {"DataType": "Binary.sig", "BinaryValue": b"\x00\x01\x02\xff"}
    assert attributes["error"]["StringValue"].startswith("the body is not JSON")
    assert set(attributes) == {"correlation_id", "signature", "error", "source_queue_arn", "source_message_id",
                               "receive_count"}


def test_a_poison_message_the_dead_letter_queue_refuses_comes_straight_back_and_nothing_is_lost(
    consumer, fakes, capsys, caplog
):
    from botocore.exceptions import ClientError

    limiter, mainframe, aws, _ = fakes
    # GIVEN a dead-letter queue that refuses the send (SQS's answer to an 11th message attribute)
    aws.send_error = ClientError({"Error": {"Code": "InvalidParameterValue", "Message": "Number of message "
                                            "attributes [11] exceeds the allowed maximum [10]."}}, "SendMessage")
    # WHEN a batch holds a malformed body between two records
    response = consumer.handler(sqs_event(record("r-0"), "{oops", record("r-2")), FakeContext())
    # THEN the send was tried once, and the poison message fails with visibility 0: it comes straight back,
    # so SQS moves it to the dead-letter queue after its receive count, in seconds
    assert len(aws.sent) == 1
    assert failures(response) == ["m-1"]
    assert aws.new_visibilities() == {"h-1": 0}
    # AND the records around it were delivered with one token each
    assert [rid for rid, _ in mainframe.calls] == ["r-0", "r-2"] and limiter.calls == 2
    # AND the log and the metrics say it went back to the queue, and why
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("poison message")]
    assert logged.getMessage().startswith("poison message: the dead-letter queue did not take it")
    assert "exceeds the allowed maximum [10]" in logged.send_error and "not JSON" in logged.error
    metrics = emitted_metrics(capsys)
    assert (metrics["PoisonRecords"], metrics["PoisonRecordsReturnedToQueue"]) == (1, 1)
    assert "PoisonRecordsDeadLettered" not in metrics


def test_a_poison_message_behind_a_refusal_is_dead_lettered_not_postponed(consumer, fakes):
    _, mainframe, aws, _ = fakes
    mainframe.errors["r-0"] = DownstreamThrottled({"status": 429, "retry_after_sec": 4.2})
    # WHEN the first record is answered 429 and a poison message and a record follow it
    response = consumer.handler(sqs_event(record("r-0"), "{oops", record("r-2")), FakeContext())
    # THEN the two records are postponed by the Retry-After, and the poison message is dead-lettered now
    assert failures(response) == ["m-0", "m-2"]
    assert aws.new_visibilities() == {"h-0": 5, "h-2": 5}
    assert [dead["MessageBody"] for dead in aws.sent] == ["{oops"]


def test_a_429_postpones_that_record_and_the_rest_by_the_retry_after(consumer, fakes):
    _, mainframe, aws, _ = fakes
    mainframe.errors["r-1"] = DownstreamThrottled({"status": 429, "retry_after_sec": 4.2})
    # WHEN the second of four records is answered 429
    response = consumer.handler(sqs_event(*(record(f"r-{i}") for i in range(4))), FakeContext())
    # THEN it and the two after it fail, the later ones without a call, all invisible for 5 s, in one request
    assert failures(response) == ["m-1", "m-2", "m-3"]
    assert [rid for rid, _ in mainframe.calls] == ["r-0", "r-1"]
    assert aws.new_visibilities() == {"h-1": 5, "h-2": 5, "h-3": 5}
    assert len(aws.visibility_calls) == 1
    # AND the refused record says why; the untouched ones have no status yet
    assert aws.statuses() == {"r-0": "delivered", "r-1": "failed"}
    (failed,) = [u for u in aws.updates if u["Key"]["pk"]["S"] == "r-1"]
    assert "DownstreamThrottled" in failed["ExpressionAttributeValues"][":error"]["S"]
    assert failed["ExpressionAttributeValues"][":retry_after"] == {"N": "5"}
    assert "#status <> :delivered" in failed["ConditionExpression"]


def test_a_429_is_reported_to_the_shared_limiter_so_every_consumer_slows(consumer, fakes):
    limiter, mainframe, _, _ = fakes
    # GIVEN tokens the limiter admits at 1000.0, and a mainframe answering the second record 429
    limiter.decisions = [replace(ALLOW, decided_at=1_000.0)] * 2
    mainframe.errors["r-1"] = DownstreamThrottled({"status": 429, "retry_after_sec": 4.2})
    # WHEN a batch of three is handled
    consumer.handler(sqs_event(*(record(f"r-{i}") for i in range(3))), FakeContext())
    # THEN the 429 was reported once, for the token of the call that met it, with its Retry-After
    assert limiter.reported == [{"bucket": "legacy_mainframe", "admitted_at": 1_000.0, "retry_after_sec": 4.2}]


def test_a_limit_the_mainframe_publishes_in_its_2xx_is_reported_for_each_delivery(consumer, fakes):
    limiter, mainframe, _, _ = fakes
    # GIVEN tokens admitted at 1000.0 and 1001.0, and a mainframe whose 200s publish 0.5 req/s
    limiter.decisions = [replace(ALLOW, decided_at=1_000.0), replace(ALLOW, decided_at=1_001.0)]
    mainframe.rate_limit = RateLimitInfo(limit=1, published_per_sec=0.5, window_sec=2.0)
    # WHEN a batch of two is delivered
    consumer.handler(sqs_event(record("r-0"), record("r-1")), FakeContext())
    # THEN each answer's publication reached the limiter for its own token, and no signal did
    assert limiter.published == [{"bucket": "legacy_mainframe", "admitted_at": at, "published_per_sec": 0.5}
                                 for at in (1_000.0, 1_001.0)]
    assert limiter.reported == []


def test_a_limiter_wait_the_invocation_cannot_afford_postpones_the_rest_without_a_call(consumer, fakes):
    limiter, mainframe, aws, slept = fakes
    # GIVEN a limiter that admits the first record, then asks for 30 s while 20 s are left
    limiter.decisions = [ALLOW, deny(30.0)]
    # WHEN a batch of three is handled
    response = consumer.handler(sqs_event(*(record(f"r-{i}") for i in range(3))), FakeContext(remaining_ms=20_000))
    # THEN the first is delivered and the other two come back after the limiter's wait, never sent
    assert failures(response) == ["m-1", "m-2"]
    assert [rid for rid, _ in mainframe.calls] == ["r-0"]
    assert aws.new_visibilities() == {"h-1": 30, "h-2": 30}
    assert slept == [] and limiter.calls == 2


def test_a_short_limiter_wait_is_waited_out_in_the_invocation(consumer, fakes):
    limiter, mainframe, aws, slept = fakes
    limiter.decisions = [ALLOW, deny(1.25)]
    response = consumer.handler(sqs_event(record("r-0"), record("r-1")), FakeContext())
    assert failures(response) == []
    assert slept == [1.25] and [rid for rid, _ in mainframe.calls] == ["r-0", "r-1"]
    assert aws.new_visibilities() == {}


def test_a_token_that_came_back_too_late_is_not_used(consumer, fakes, monkeypatch):
    limiter, mainframe, aws, _ = fakes
    # GIVEN a limiter whose first answer takes 0.3 s, longer than half the 0.25 s headroom of 0.8 vs 1 req/s
    limiter.delays = [0.3, 0.01]
    monkeypatch.setattr(consumer.time, "time", lambda: limiter.clock[0])
    # WHEN one record is handled
    response = consumer.handler(sqs_event(record("r-0")), FakeContext())
    # THEN the late token is dropped and a second one taken before the one call
    assert failures(response) == []
    assert limiter.calls == 2 and [rid for rid, _ in mainframe.calls] == ["r-0"]


def test_a_limiter_whose_every_token_comes_back_too_late_postpones_the_batch_when_no_time_is_left(
    consumer, fakes, monkeypatch
):
    limiter, mainframe, aws, _ = fakes
    # GIVEN a limiter whose every answer takes 0.25 s, longer than half the 0.25 s headroom of 0.8 vs 1 req/s,
    # and an invocation that can afford 48 s of it (60 s left, less the call's 10 s and the 2 s reserve)
    limiter.delays = [0.25] * 1000
    monkeypatch.setattr(consumer.time, "time", lambda: limiter.clock[0])
    # WHEN a batch of two is handled
    response = consumer.handler(sqs_event(record("r-0"), record("r-1")), FakeContext(remaining_ms=60_000))
    # THEN the consumer takes late tokens only until the time it can afford is spent (48 s / 0.25 s), instead
    # of without end, and both records come back after the shortest postponement, never sent
    assert limiter.calls == 192
    assert failures(response) == ["m-0", "m-1"]
    assert aws.new_visibilities() == {"h-0": 1, "h-1": 1}
    assert mainframe.calls == []


def test_a_down_mainframe_postpones_with_a_backoff_that_grows_with_the_receive_count(consumer, fakes):
    _, mainframe, aws, _ = fakes
    mainframe.errors["r-0"] = DownstreamUnavailable({"reason": "connection refused"})
    # WHEN records received for the fourth time meet a refused connection (no Retry-After)
    response = consumer.handler(sqs_event(record("r-0"), record("r-1"), receive_count=4), FakeContext())
    # THEN both are postponed by 2^3 s and only the first was tried
    assert failures(response) == ["m-0", "m-1"]
    assert aws.new_visibilities() == {"h-0": 8, "h-1": 8}
    assert [rid for rid, _ in mainframe.calls] == ["r-0"]


def test_a_rejected_record_fails_alone_and_the_batch_goes_on(consumer, fakes):
    _, mainframe, aws, _ = fakes
    mainframe.errors["r-0"] = DownstreamRejected({"status": 400, "body": "bad account"})
    response = consumer.handler(sqs_event(record("r-0"), record("r-1")), FakeContext())
    # THEN it is retried after the queue's visibility timeout (no visibility change); the next is delivered
    assert failures(response) == ["m-0"]
    assert aws.new_visibilities() == {}
    assert aws.statuses() == {"r-0": "failed", "r-1": "delivered"}


def test_a_batch_of_only_failures_is_answered_not_raised(consumer, fakes):
    # GIVEN a dead-letter queue that cannot be reached, so two poison messages are failures
    _, _, aws, _ = fakes
    aws.send_error = ConnectionError("sqs unreachable")
    # A raised error would fail the whole batch and leave the poison messages at the visibility timeout
    response = consumer.handler(sqs_event("{oops", "nope"), FakeContext())
    assert failures(response) == ["m-0", "m-1"]
    assert aws.new_visibilities() == {"h-0": 0, "h-1": 0}


def test_the_mainframe_call_carries_the_api_request_id_or_else_the_message_id(consumer, fakes):
    _, mainframe, _, _ = fakes
    # GIVEN one record posted through the API (it carries the API's request id) and one published by the workflow
    event = sqs_event(record("r-api"), record("r-workflow"))
    event["Records"][0]["messageAttributes"] = {"correlation_id": {"stringValue": "api-request-7",
                                                                   "dataType": "String"}}
    consumer.handler(event, FakeContext())
    # THEN each call's X-Correlation-Id joins it to where it came from
    assert {rid: headers["X-Correlation-Id"] for rid, headers in mainframe.calls} == {
        "r-api": "api-request-7", "r-workflow": "m-1"}


def test_an_unexpected_error_fails_that_record_alone_and_is_logged(consumer, fakes, caplog):
    _, mainframe, aws, _ = fakes
    mainframe.errors["r-1"] = ValueError("Invalid header value b'x\\n'")
    response = consumer.handler(sqs_event(record("r-0"), record("r-1"), record("r-2")), FakeContext())
    # THEN it returns to the queue, the others are delivered, and the log says why, with its message id
    assert failures(response) == ["m-1"]
    assert aws.statuses() == {"r-0": "delivered", "r-2": "delivered"}
    (error,) = [r for r in caplog.records if r.getMessage() == "unexpected error; the record returns to the queue"]
    assert error.levelname == "ERROR" and error.message_id == "m-1"
    assert "Invalid header value" in str(error.exc_info[1])


def test_once_the_mainframe_is_shared_out_a_record_takes_from_its_tenant_s_share(consumer, fakes, monkeypatch):
    limiter = fakes[0]
    # GIVEN the mainframe's tunables name tenant acme's share
    monkeypatch.setattr(consumer.dependencies().tunables, "get", lambda: DownstreamTunables(
        rate_per_sec=0.8, burst=1, max_concurrency=1, tenant_shares=(("acme", 0.5),)))
    event = sqs_event(record("r-acme"), record("r-none"))
    event["Records"][0]["attributes"]["MessageGroupId"] = "acme"
    # WHEN the batch is handled
    consumer.handler(event, FakeContext())
    # THEN each token is taken for its record's tenant, as standard work
    assert limiter.shares_asked == [("acme", "standard"), (names.DEFAULT_TENANT, "standard")]


def test_a_record_s_tenant_is_its_message_group_and_a_poison_message_keeps_it_in_the_dead_letter_queue(consumer, fakes):
    limiter, mainframe, aws, _ = fakes
    # GIVEN a record of tenant "acme" (its MessageGroupId, as the API sends it), one sent without a group,
    # and a poison message of tenant "acme"
    event = sqs_event(record("r-acme"), record("r-none"), "{oops")
    for index in (0, 2):
        event["Records"][index]["attributes"]["MessageGroupId"] = "acme"
    # WHEN the batch is handled
    consumer.handler(event, FakeContext())
    # THEN each delivered record's status names its tenant, the default tenant for the one without a group
    tenants = {u["Key"]["pk"]["S"]: u["ExpressionAttributeValues"][":tenant"]["S"] for u in aws.updates}
    assert tenants == {"r-acme": "acme", "r-none": names.DEFAULT_TENANT}
    assert [rid for rid, _ in mainframe.calls] == ["r-acme", "r-none"]
    # AND each token was taken as standard work, from the bucket as a whole: the mainframe's tunables name no
    # tenant's share, so no tenant counts (the poison message took none)
    assert limiter.shares_asked == [(None, "standard"), (None, "standard")]
    # AND the poison message reaches the dead-letter queue still in its tenant's group, so a redrive keeps it there
    (dead,) = aws.sent
    assert (dead["MessageBody"], dead["MessageGroupId"]) == ("{oops", "acme")

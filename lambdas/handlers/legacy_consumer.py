"""Deliver the legacy buffer queue's records to the mainframe, one shared-limiter token per record.

Event: a batch from the queue's event-source mapping (`ReportBatchItemFailures` on). Each message
body is a record `{"record_id": "...", "payload": ...}` (published by `legacy_publish.asl.json`).
Answer: `{"batchItemFailures": [...]}`: only the records to try again return to the queue; the
mapping deletes the others (delivered, or dead-lettered by this function).

Per record, in order (Powertools' `BatchProcessor`, so one bad record fails alone):
1. Parse. A body that is not a record the mainframe's contract can carry is a poison message: not
   JSON, or a record whose `record_id` is not 1-128 characters of `A-Za-z0-9_.:-` (it travels as the
   Idempotency-Key header: a newline or an emoji cannot), whose payload nests deeper than
   `MAX_PAYLOAD_DEPTH` or holds NaN, Infinity or text that is not Unicode (JSON and UTF-8 carry
   neither). No retry can fix it, so it is not retried, even behind an earlier refusal: this
   function sends it to `DEAD_LETTER_QUEUE_URL` at once, its body unchanged, its own message
   attributes kept and the reason beside them (`error`, `source_queue_arn`, `source_message_id`,
   `receive_count`), and it is deleted from the queue like a delivered record. If that send fails
   (SQS refuses it: more than 10 attributes in all, or over the queue's size with them; throttling;
   an outage), nothing is lost: it fails, and its visibility is set to 0 so it comes straight back
   and SQS moves it to the dead-letter queue itself after `QUEUE_MAX_RECEIVE_COUNT` receives, in
   seconds, without the reason attributes. Either way no token and no mainframe call is spent on
   it; the log line and the metric (`PoisonRecordsDeadLettered`, `PoisonRecordsReturnedToQueue`)
   say which happened. An invocation that fails after the send (a timeout) may dead-letter it twice.
   The record contract is `legacy.records`; the API's `LegacyRecord` model states the same (a contract
   test keeps them equal).
2. Take one token for the bucket `legacy_mainframe` from the shared limiter (the same bucket every
   caller of the mainframe uses, so the rate holds across all concurrent batches). A refusal is
   waited out while the invocation can still afford the wait and the call after it. A token that
   took longer than half the headroom to come back is not used (`stale_token_after_sec`): a call
   that late could land too close to the next caller's, and the mainframe has no burst to absorb it;
   once the time left cannot afford the call any more (the limiter is slow right now) the record is
   postponed; it used to take late tokens without end, past the invocation's timeout.
   The waiting and the stale tokens are `throttling.runtime.token_gate`'s, as for every caller.
3. `POST /records` with `Idempotency-Key: <record_id>` (a redelivered record is recognised).
4. Write the record's status (`legacy.record_status`): `delivered` with its timestamps and tenant, or
   `failed` with the error.

The tenant is the message's `MessageGroupId` (the API key's client; `legacy.records.tenant_of`): every
log line of the record carries it, its status item names it, and a poison message keeps it on its way
to the dead-letter queue, so a redriven message is still its tenant's in the fair queue.

When the limiter's wait is longer than the time left, or the mainframe refuses (429, 5xx, timeout,
with or without Retry-After), this record and every later one of the batch are postponed, not
failed one by one: their visibility is set to `postpone_for_sec(...)` (at least the Retry-After,
doubling with each receive, within SQS's 12-hour cap) with one `ChangeMessageVisibilityBatch`,
and they are reported as batch item failures. A postponed record is received again, so each
postponement spends one receive of `QUEUE_MAX_RECEIVE_COUNT` (N). Thanks to the doubling, a healthy
record reaches the dead-letter queue only after N postponements in a row spanning at least
sum(min(2^(n-1) s, ~12 h)), about 66 hours for N = 20, instead of N Retry-Afters (20 s at 1 s
each); and at most N x 12 h = 10 days, inside the queue's 14-day retention, so it never expires
there either. A 4xx other than 429 fails that record alone (after the visibility timeout it is
tried again, one mainframe call per receive, until the dead-letter queue).
"""

from __future__ import annotations

import base64
import functools
import os
import time
from dataclasses import dataclass
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from legacy.record_status import WRITE_ERRORS, RecordStatusStore
from legacy.records import PoisonRecord, parse_record, tenant_of
from throttling.adapters.dynamodb_rate_limiter import DynamoDbRateLimiter
from throttling.adapters.ssm_tunables import TunablesReader, downstream_tunables_reader
from throttling.core import names
from throttling.core.adaptive_rate import AdaptiveRatePolicy
from throttling.core.hierarchical_rate import TenantShares
from throttling.core.backoff import postpone_for_sec
from throttling.core.rate_limiter import RatePolicy
from throttling.core.rate_limiter import stale_token_after_sec as shared_stale_token_after_sec
from throttling.core.tunables import DownstreamTunables
from throttling.runtime.call_metrics import record_call
from throttling.runtime.downstream_client import (
    DownstreamClient,
    DownstreamError,
    DownstreamRejected,
    DownstreamThrottled,
    DownstreamUnavailable,
)
from throttling.runtime.token_gate import GateKnobs, GateOutcome, TokenGate

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient
    from types_boto3_sqs import SQSClient
    from types_boto3_ssm import SSMClient

# SQS refuses a visibility beyond 12 h counted from the receive; the mapping may have held the batch
# for up to its 300 s batching window before invoking, and the invocation has run meanwhile.
LONGEST_HOLD_BEFORE_INVOKE_SEC = 300
# Kept back from the time left for the status write and the visibility change after the last call.
FINISHING_RESERVE_SEC = 2.0
VISIBILITY_BATCH_MAX = 10
# A poison message's reason, as its dead letter carries it in the `error` attribute.
REASON_MAX_CHARS = 1000

logger = Logger()
metrics = Metrics()
# Patches boto3 and http.client, so every AWS call and every downstream call is a subsegment of the trace.
tracer = Tracer()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@dataclass
class Dependencies:
    """What the function talks to and its settings, built once per execution environment (the SSM
    cache and the last good tunables live as long as it does)."""

    downstream: str
    # The mainframe's rate and burst: an operator's value above either is clamped to it.
    contract: RatePolicy
    statuses: RecordStatusStore
    queue_url: str
    dead_letter_queue_url: str
    max_receive_count: int | None
    tunables: TunablesReader[DownstreamTunables]
    gate: TokenGate
    client: DownstreamClient
    sqs: SQSClient


def build_dependencies(
    environ: Mapping[str, str],
    *,
    dynamodb: DynamoDBClient | None = None,
    sqs: SQSClient | None = None,
    ssm: SSMClient | None = None,
) -> Dependencies:
    """The function's dependencies from its environment variables; clients default to boto3's."""
    contract = RatePolicy(rate_per_sec=float(environ[names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC]),
                          burst=int(environ[names.ENV_DOWNSTREAM_BURST]))
    dynamodb = dynamodb or boto3.client("dynamodb")
    limiter = DynamoDbRateLimiter(environ[names.ENV_RATE_LIMITER_TABLE_NAME], client=dynamodb)
    return Dependencies(
        downstream=environ[names.ENV_DOWNSTREAM_NAME],
        contract=contract,
        statuses=RecordStatusStore(environ[names.ENV_RECORDS_TABLE_NAME], client=dynamodb,
                                   retention_sec=int(environ.get("STATUS_RETENTION_DAYS", "30")) * 86_400),
        queue_url=environ[names.ENV_QUEUE_URL],
        dead_letter_queue_url=environ[names.ENV_DEAD_LETTER_QUEUE_URL],
        max_receive_count=int(environ.get(names.ENV_QUEUE_MAX_RECEIVE_COUNT, "0")) or None,
        tunables=downstream_tunables_reader(environ, contract, ssm=ssm),
        # Refusals are waited out and late tokens replaced while the invocation can afford it; a lost race
        # answers 0 s, and a few milliseconds keep two losers from spinning in step. Tokens are timed on
        # the wall clock.
        gate=TokenGate(limiter, GateKnobs(min_pause_sec=0.005, max_stale_tokens=None),
                       clock=lambda: time.time(), logger=logger),
        client=DownstreamClient(environ[names.ENV_DOWNSTREAM_NAME], environ[names.ENV_DOWNSTREAM_BASE_URL],
                                timeout_sec=float(environ.get(names.ENV_DOWNSTREAM_TIMEOUT_SEC, "5"))),
        sqs=sqs or boto3.client("sqs"),
    )


@functools.cache
def dependencies() -> Dependencies:
    """This execution environment's dependencies, built once (on Lambda, at import: see the end of the module)."""
    return build_dependencies(os.environ)


class Postponed(Exception):
    """The record was not delivered now and comes back after its new visibility timeout."""


def stale_token_after_sec(planned_rate_per_sec: float, contract_rate_per_sec: float) -> float:
    """How late an admitted token may still be used: `throttling.core.rate_limiter.stale_token_after_sec` for a
    one-request-at-a-time mainframe, half the headroom between the planned and the contract interval."""
    return shared_stale_token_after_sec(RatePolicy(planned_rate_per_sec), RatePolicy(contract_rate_per_sec))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = dependencies()
    metrics.add_dimension(name=names.DOWNSTREAM_DIMENSION, value=deps.downstream)
    in_force = deps.tunables.get()
    batch = Batch(deps, RatePolicy(rate_per_sec=in_force.rate_per_sec, burst=in_force.burst), context,
                  adaptive=in_force.adaptive, shares=in_force.shares)
    response = process_partial_response(event=event, record_handler=batch.handle, processor=processor, context=context)
    batch.change_visibilities()
    logger.info("batch done", extra={"records": len(event.get("Records", [])), **batch.summary()})
    return response


def dead_letter_attributes(record: SQSRecord, reason: str, receive_count: int) -> dict[str, dict[str, Any]]:
    """The message's own attributes as `SendMessage` takes them, with why and where from beside them.

    The producer's attributes (the API's `correlation_id`) stay, so a redriven message is the one it
    sent; the reason's names replace any of the producer's that share them.
    """
    attributes = {name: _sendable_attribute(value) for name, value in (record.get("messageAttributes") or {}).items()}
    attributes.update({
        "error": {"DataType": "String", "StringValue": reason[:REASON_MAX_CHARS]},
        "source_queue_arn": {"DataType": "String", "StringValue": record.event_source_arn},
        "source_message_id": {"DataType": "String", "StringValue": record.message_id},
        "receive_count": {"DataType": "Number", "StringValue": str(receive_count)},
    })
    return attributes


def _sendable_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """Lambda's event shape of a message attribute (`binaryValue` base64-encoded) in `SendMessage`'s."""
    data_type = value["dataType"]
    if data_type.split(".")[0] == "Binary":
        return {"DataType": data_type, "BinaryValue": base64.b64decode(value.get("binaryValue") or "")}
    return {"DataType": data_type, "StringValue": value.get("stringValue") or ""}


def correlation_id_of(record: SQSRecord) -> str:
    """The id that joins this record's logs and its mainframe call to where it came from.

    A record posted to the API carries the API's request id in its `correlation_id` attribute (the
    access log's `request_id`); any other record is known by its message id.
    """
    attributes = record.message_attributes
    if attributes and "correlation_id" in attributes:
        return attributes["correlation_id"].string_value or record.message_id
    return record.message_id


class Batch:
    """One invocation: once the limiter or the mainframe says "not now", every later record is postponed."""

    def __init__(self, deps: Dependencies, policy: RatePolicy, context: LambdaContext,
                 adaptive: AdaptiveRatePolicy | None = None, shares: TenantShares | None = None) -> None:
        self.deps = deps
        self.policy = policy
        # The tenants' shares of the bucket and the classes' depths (the tunables'; None: the defaults).
        self.shares = shares
        # The shared limiter's inner loop (None: the bucket at `policy`, blind to the mainframe's 429s).
        self.adaptive = adaptive
        self.token: GateOutcome | None = None
        self.context = context
        self.stale_after_sec = stale_token_after_sec(policy.rate_per_sec, deps.contract.rate_per_sec)
        self.started = time.monotonic()
        self.postpone_after_sec: float | None = None
        self.new_visibility: list[tuple[SQSRecord, int]] = []
        self.delivered = 0
        self.dead_lettered = 0

    def handle(self, record: SQSRecord) -> str:
        try:
            return self._handle(record)
        except (Postponed, PoisonRecord, DownstreamThrottled, DownstreamUnavailable, DownstreamRejected):
            raise  # each is logged and counted where it happens
        except Exception:  # noqa: BLE001 - the last-resort guard of one record: logged, counted and re-raised
            # Anything else is a bug or an AWS failure: the record returns to the queue, and it must not do so silently.
            metrics.add_metric(name="UnexpectedRecordErrors", unit=MetricUnit.Count, value=1)
            logger.exception("unexpected error; the record returns to the queue",
                             extra={"message_id": record.message_id})
            raise

    def _handle(self, record: SQSRecord) -> str:
        receive_count = int(record.attributes.approximate_receive_count or "1")
        tenant = tenant_of(record.attributes.message_group_id)
        try:
            item = parse_record(record.body)
        except PoisonRecord as error:
            # Before any postponement: waiting cannot fix it, and it needs no token.
            return self._dead_letter(record, receive_count, error)
        if self.postpone_after_sec is not None:
            self._postpone(record, receive_count)
            raise Postponed(f"postponed behind an earlier refusal (retry after {self.postpone_after_sec:.3f} s)")

        wait_sec = self._take_token(tenant)
        if wait_sec is not None:
            metrics.add_metric(name="LimiterPostponed", unit=MetricUnit.Count, value=1)
            self.postpone_after_sec = wait_sec
            self._postpone(record, receive_count)
            raise Postponed(f"the limiter's wait of {wait_sec:.3f} s is longer than this invocation can afford")

        correlation_id = correlation_id_of(record)
        logger.set_correlation_id(correlation_id)
        logger.append_keys(tenant=tenant)
        headers = {"Idempotency-Key": item.record_id, "X-Correlation-Id": correlation_id}
        try:
            response = self.deps.client.call("POST", "/records", body={"record_id": item.record_id, "payload": item.payload},
                                   headers=headers)
        except (DownstreamThrottled, DownstreamUnavailable) as error:
            # The mainframe refused or is down: the rest of the batch would meet the same answer, and
            # a 429 (or a 503 with Retry-After) slows every consumer through the shared limiter.
            record_call(metrics, error=error)
            if self.token is not None and self.deps.gate.report(self.deps.downstream, self.policy, self.adaptive,
                                                                self.token, error):
                metrics.add_metric(name=names.LIMITER_SIGNALS_REPORTED, unit=MetricUnit.Count, value=1)
            self.postpone_after_sec = error.details.get("retry_after_sec") or 0.0
            visibility_sec = self._postpone(record, receive_count)
            self._record_failed(item.record_id, record.message_id, receive_count, error, retry_after_sec=visibility_sec)
            raise
        except DownstreamRejected as error:
            record_call(metrics, error=error)
            self._record_failed(item.record_id, record.message_id, receive_count, error)
            logger.error("the mainframe rejected the record; it is retried until the dead-letter queue",
                         extra={"record_id": item.record_id, "message_id": record.message_id,
                                "receive_count": receive_count, "error": str(error)})
            raise
        record_call(metrics, response=response)
        if self.token is not None:
            # Not a signal, but it may publish the mainframe's limit, which then caps every consumer.
            self.deps.gate.report(self.deps.downstream, self.policy, self.adaptive, self.token, response)
        self.deps.statuses.delivered(item.record_id, record.message_id, receive_count, response.status, tenant=tenant)
        metrics.add_metric(name="RecordsDelivered", unit=MetricUnit.Count, value=1)
        self.delivered += 1
        return item.record_id

    def _dead_letter(self, record: SQSRecord, receive_count: int, error: PoisonRecord) -> str:
        """Send a poison message to the dead-letter queue with its reason (it is then deleted from the queue);
        if SQS will not take it there, fail it with visibility 0, so SQS moves it after its receive count."""
        metrics.add_metric(name="PoisonRecords", unit=MetricUnit.Count, value=1)
        context = {"message_id": record.message_id, "error": str(error), "receive_count": receive_count,
                   "body_preview": (record.body or "")[:200]}
        try:
            group = {"MessageGroupId": record.attributes.message_group_id} if record.attributes.message_group_id else {}
            answer = self.deps.sqs.send_message(QueueUrl=self.deps.dead_letter_queue_url, MessageBody=record.body,
                                      MessageAttributes=dead_letter_attributes(record, str(error), receive_count),
                                      **group)
        except Exception as send_error:  # noqa: BLE001 - whatever SQS answered, the message must not be lost
            metrics.add_metric(name="PoisonRecordsReturnedToQueue", unit=MetricUnit.Count, value=1)
            logger.error(
                "poison message: the dead-letter queue did not take it, so it comes straight back and SQS moves it "
                "there after its receive count",
                extra={**context, "max_receive_count": self.deps.max_receive_count, "send_error": repr(send_error)[:500]},
            )
            self.new_visibility.append((record, 0))
            raise error from None
        metrics.add_metric(name="PoisonRecordsDeadLettered", unit=MetricUnit.Count, value=1)
        logger.error("poison message: sent to the dead-letter queue with its reason; it leaves the queue as delivered",
                     extra={**context, "dead_letter_message_id": answer.get("MessageId")})
        self.dead_lettered += 1
        return "dead-lettered"

    def change_visibilities(self) -> None:
        """Apply the postponements and poison fast-tracks; a failure leaves the queue's visibility timeout."""
        for start in range(0, len(self.new_visibility), VISIBILITY_BATCH_MAX):
            chunk = self.new_visibility[start : start + VISIBILITY_BATCH_MAX]
            entries = [
                {"Id": str(index), "ReceiptHandle": record.receipt_handle, "VisibilityTimeout": seconds}
                for index, (record, seconds) in enumerate(chunk)
            ]
            try:
                answer = self.deps.sqs.change_message_visibility_batch(QueueUrl=self.deps.queue_url, Entries=entries)
            except (ClientError, BotoCoreError):  # the records are already failures; they only come back later
                logger.exception("could not change visibilities; the records come back after the visibility timeout")
                continue
            for failure in answer.get("Failed", []):
                logger.warning("could not change a record's visibility", extra={"failure": failure})

    def summary(self) -> dict[str, Any]:
        postponed = [seconds for _, seconds in self.new_visibility if seconds > 0]
        returned = len(self.new_visibility) - len(postponed)
        return {
            "delivered": self.delivered,
            "postponed": len(postponed),
            "postponed_for_sec": max(postponed, default=0),
            "poison": self.dead_lettered + returned,
            "dead_lettered": self.dead_lettered,
        }

    def _postpone(self, record: SQSRecord, receive_count: int) -> int:
        seconds = postpone_for_sec(self.postpone_after_sec, receive_count, time.monotonic() - self.started,
                                   hold_before_invoke_sec=LONGEST_HOLD_BEFORE_INVOKE_SEC)
        self.new_visibility.append((record, seconds))
        metrics.add_metric(name="RecordsPostponed", unit=MetricUnit.Count, value=1)
        return seconds

    def _take_token(self, tenant: str) -> float | None:
        """Wait for a token of `tenant`'s share while affordable: None once admitted, else the wait that cannot be
        afforded (0 when tokens kept coming back too late until no time was left: the limiter is that slow right now).

        A record is standard work: below a payment, above a campaign, should another caller share the mainframe.
        """
        outcome = self.deps.gate.take(self.deps.downstream, self.policy, time_left_sec=self._affordable_wait_sec(),
                                      stale_after_sec=self.stale_after_sec, adaptive=self.adaptive, tenant=tenant,
                                      priority=names.PRIORITY_STANDARD, shares=self.shares)
        self.token = outcome
        if outcome.stale_tokens:
            metrics.add_metric(name="LimiterStaleTokens", unit=MetricUnit.Count, value=outcome.stale_tokens)
        if not outcome.admitted:
            return outcome.retry_after_sec
        metrics.add_metric(name="LimiterWaitedMs", unit=MetricUnit.Milliseconds, value=outcome.waited_sec * 1000)
        return None

    def _record_failed(
        self, record_id: str, message_id: str, receive_count: int, error: DownstreamError, *,
        retry_after_sec: int | None = None,
    ) -> None:
        """Best effort: the record is already a failure (and a delivered record stays delivered)."""
        try:
            self.deps.statuses.failed(record_id, message_id, receive_count, f"{type(error).__name__}: {error}",
                                      retry_after_sec=retry_after_sec)
        except WRITE_ERRORS as write_error:
            logger.warning("could not record a failure", extra={"record_id": record_id, "error": repr(write_error)})

    def _affordable_wait_sec(self) -> float:
        remaining_sec = self.context.get_remaining_time_in_millis() / 1000
        return max(0.0, remaining_sec - self.deps.client.timeout_sec - FINISHING_RESERVE_SEC)


if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    # On Lambda, built in the init phase as before, outside the first invocation's time and timeout.
    dependencies()

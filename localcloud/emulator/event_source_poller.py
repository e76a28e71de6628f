"""SQS -> Lambda event-source mappings for the embedded emulator, polled the way Lambda polls them.

moto 5.2.5 runs an SQS event-source mapping inside `SendMessage`: one synchronous invocation per call,
ignoring batch size, batching window and maximum concurrency. `disable_moto_synchronous_sqs_trigger`
turns that off; `SqsEventSourcePoller` then follows Lambda's documented semantics for one mapping
(batching, a concurrency cap, deletes on success, partial batch responses), and
`EventSourcePollerManager` keeps one poller per mapping found in moto's Lambda backend.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from throttling.core.names import SQS_MAX_MAXIMUM_CONCURRENCY, SQS_MIN_MAXIMUM_CONCURRENCY

__all__ = [
    "DEFAULT_MAXIMUM_CONCURRENCY",
    "DEFAULT_POLL_WAIT_SEC",
    "EventSourceMappingSpec",
    "EventSourcePollerManager",
    "InvocationResult",
    "MalformedBatchResponseError",
    "SqsEventSourcePoller",
    "build_sqs_event",
    "disable_moto_synchronous_sqs_trigger",
    "failed_message_ids",
    "iter_moto_sqs_event_source_mappings",
    "spec_from_moto_mapping",
]

logger = logging.getLogger(__name__)

# Lambda starts an SQS mapping with five concurrent batches and only scales beyond that under a
# sustained backlog (up to 300 more per minute). The emulator does not model that scaling, so a mapping
# without MaximumConcurrency gets Lambda's starting point rather than an unbounded pool.
DEFAULT_MAXIMUM_CONCURRENCY = 5
DEFAULT_POLL_WAIT_SEC = 0.2

SQS_RECEIVE_MAX_MESSAGES = 10  # ReceiveMessage and DeleteMessageBatch take at most 10 per call
BATCH_SIZE_RANGE = (1, 10_000)
FIFO_MAX_BATCH_SIZE = 10
BATCHING_WINDOW_RANGE_SEC = (0, 300)
# ScalingConfig.MaximumConcurrency, as documented for Lambda.
MAXIMUM_CONCURRENCY_RANGE = (SQS_MIN_MAXIMUM_CONCURRENCY, SQS_MAX_MAXIMUM_CONCURRENCY)
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"

_SLOT_WAIT_SEC = 0.05  # how often a poller blocked on its concurrency cap looks at stop()
_RECEIVE_ERROR_BACKOFF_SEC = 0.5


@dataclasses.dataclass(frozen=True)
class EventSourceMappingSpec:
    """One SQS event-source mapping, in the units the poller works in.

    `maximum_concurrency=None` means "no MaximumConcurrency set": the poller then runs up to
    DEFAULT_MAXIMUM_CONCURRENCY batches at once. Fractional batching windows are accepted so tests can
    stay fast; Lambda itself takes whole seconds.
    """

    uuid: str
    function_name: str
    queue_url: str
    queue_arn: str
    region: str
    batch_size: int = 10
    maximum_batching_window_sec: float = 0
    maximum_concurrency: int | None = None
    report_batch_item_failures: bool = False
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("uuid", "function_name", "queue_url", "region"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        arn_parts = self.queue_arn.split(":") if isinstance(self.queue_arn, str) else []
        if len(arn_parts) != 6 or arn_parts[0] != "arn" or arn_parts[2] != "sqs":
            raise ValueError(f"queue_arn must be an sqs queue arn, got {self.queue_arn!r}")

        low, high = BATCH_SIZE_RANGE
        if not _is_int(self.batch_size) or not low <= self.batch_size <= high:
            raise ValueError(f"batch_size must be an integer from {low} to {high}, got {self.batch_size!r}")
        low, high = BATCHING_WINDOW_RANGE_SEC
        window = self.maximum_batching_window_sec
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not low <= window <= high:
            raise ValueError(f"maximum_batching_window_sec must be from {low} to {high}, got {window!r}")
        low, high = MAXIMUM_CONCURRENCY_RANGE
        concurrency = self.maximum_concurrency
        if concurrency is not None and (not _is_int(concurrency) or not low <= concurrency <= high):
            raise ValueError(
                f"maximum_concurrency must be None or an integer from {low} to {high} (lambda's range), "
                f"got {concurrency!r}"
            )
        if self.batch_size > SQS_RECEIVE_MAX_MESSAGES and window < 1:
            raise ValueError(
                f"batch_size above {SQS_RECEIVE_MAX_MESSAGES} needs maximum_batching_window_sec >= 1, as on lambda; "
                f"got batch_size={self.batch_size} with maximum_batching_window_sec={window!r}: "
                "raise the window or lower the batch size"
            )
        if self.is_fifo and self.batch_size > FIFO_MAX_BATCH_SIZE:
            raise ValueError(
                f"batch_size for a fifo queue must be <= {FIFO_MAX_BATCH_SIZE}, got {self.batch_size} "
                f"for {self.queue_arn}"
            )

    @property
    def is_fifo(self) -> bool:
        return self.queue_arn.endswith(".fifo")

    @property
    def effective_maximum_concurrency(self) -> int:
        return self.maximum_concurrency if self.maximum_concurrency is not None else DEFAULT_MAXIMUM_CONCURRENCY


@dataclasses.dataclass(frozen=True)
class InvocationResult:
    """What the injected `invoke` callable reports back.

    `payload` is the function's response (parsed JSON or the raw JSON text); `errored` is True when
    the function raised, i.e. Lambda answered with a `FunctionError`.
    """

    payload: Any
    errored: bool = False


InvokeFn = Callable[[str, dict], InvocationResult]


class MalformedBatchResponseError(ValueError):
    """A partial batch response that Lambda treats as a failure of the whole batch."""


def build_sqs_event(messages: Sequence[Mapping[str, Any]], *, queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda hands a function for a batch of `ReceiveMessage` results."""
    records = []
    for message in messages:
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {
                name: _lambda_message_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        records.append(record)
    return {"Records": records}


def failed_message_ids(payload: Any, batch_message_ids: Iterable[str]) -> set[str]:
    """The message ids a `ReportBatchItemFailures` response asks Lambda to keep.

    Follows Lambda's documented conditions: a null or empty response and a null or empty
    `batchItemFailures` list mean the whole batch succeeded; an empty, null, misnamed or unknown
    `itemIdentifier`, or a response that is not JSON, raises MalformedBatchResponseError, which the
    poller treats as the whole batch failing.
    """
    if isinstance(payload, (bytes, bytearray)):
        payload = payload.decode("utf-8", errors="replace")
    if isinstance(payload, str):
        if not payload.strip():
            return set()
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as error:
            raise MalformedBatchResponseError(f"response is not json: {payload[:200]!r}") from error
    if payload is None:
        return set()
    if not isinstance(payload, Mapping):
        raise MalformedBatchResponseError(f"response must be a json object, got {payload!r:.200}")
    failures = payload.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        raise MalformedBatchResponseError(f"batchItemFailures must be a list, got {failures!r:.200}")
    known_ids = set(batch_message_ids)
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, Mapping) else None
        if not isinstance(identifier, str) or not identifier:
            raise MalformedBatchResponseError(f"batchItemFailures entry has no usable itemIdentifier: {item!r:.200}")
        if identifier not in known_ids:
            raise MalformedBatchResponseError(f"itemIdentifier {identifier!r} is not a message of this batch")
        failed.add(identifier)
    return failed


class SqsEventSourcePoller:
    """Polls one queue and invokes one function the way a Lambda SQS event-source mapping does.

    A gatherer thread takes a concurrency slot, then receives until `batch_size` messages are held or
    the batching window (started by the first message) has passed; with a window of 0 it invokes with
    whatever one receive returned. Each batch runs on a worker thread, so at most
    `spec.effective_maximum_concurrency` batches are in flight, and no message is received while every
    slot is busy. Successful messages are deleted; failed ones are left to reappear after the queue's
    visibility timeout, where the queue's redrive policy decides when they go to the dead-letter queue.

    `poll_wait_sec` is the pause after an empty receive. Receives are short polls: moto's short poll
    sees every visible message, and short polls keep `stop()` responsive. A value of 0 spins.
    """

    def __init__(
        self,
        spec: EventSourceMappingSpec,
        *,
        sqs_client: Any,
        invoke: InvokeFn,
        poll_wait_sec: float = DEFAULT_POLL_WAIT_SEC,
    ) -> None:
        if isinstance(poll_wait_sec, bool) or not isinstance(poll_wait_sec, (int, float)) or poll_wait_sec < 0:
            raise ValueError(f"poll_wait_sec must be >= 0, got {poll_wait_sec!r}")
        self.spec = spec
        self._sqs = sqs_client
        self._invoke = invoke
        self._poll_wait_sec = poll_wait_sec

        self._stop_requested = threading.Event()
        self._slots = threading.BoundedSemaphore(spec.effective_maximum_concurrency)
        self._lock = threading.Lock()
        self._gatherer: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._futures: set[concurrent.futures.Future[None]] = set()

        self._batches_invoked = 0
        self._messages_deleted = 0
        self._messages_failed = 0
        self._delete_errors = 0
        self._receive_errors = 0
        self._in_flight = 0
        self._max_in_flight_observed = 0

    # -- counters --------------------------------------------------------------------------------
    @property
    def batches_invoked(self) -> int:
        return self._batches_invoked

    @property
    def messages_deleted(self) -> int:
        return self._messages_deleted

    @property
    def messages_failed(self) -> int:
        """Messages left in the queue for a retry: function errors, reported failures, bad responses."""
        return self._messages_failed

    @property
    def delete_errors(self) -> int:
        """Messages the function processed but DeleteMessageBatch did not remove (they will come back)."""
        return self._delete_errors

    @property
    def receive_errors(self) -> int:
        return self._receive_errors

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def max_in_flight_observed(self) -> int:
        return self._max_in_flight_observed

    @property
    def is_running(self) -> bool:
        return self._gatherer is not None and self._gatherer.is_alive()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start polling; a disabled mapping does not poll, as on Lambda."""
        if not self.spec.enabled:
            logger.info("event source mapping %s is disabled; not polling %s", self.spec.uuid, self.spec.queue_arn)
            return
        if self.is_running:
            raise RuntimeError(f"poller for mapping {self.spec.uuid} is already running; call stop() first")
        self._stop_requested.clear()
        concurrency = self.spec.effective_maximum_concurrency
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=f"esm-{self.spec.uuid[:8]}-batch"
        )
        self._gatherer = threading.Thread(
            target=self._gather_loop, name=f"esm-{self.spec.uuid[:8]}-poll", daemon=True
        )
        self._gatherer.start()
        logger.info(
            "polling %s for %s (batch_size=%d, window=%ss, maximum_concurrency=%d, report_batch_item_failures=%s)",
            self.spec.queue_arn,
            self.spec.function_name,
            self.spec.batch_size,
            self.spec.maximum_batching_window_sec,
            concurrency,
            self.spec.report_batch_item_failures,
        )

    def stop(self, timeout_sec: float = 30.0) -> bool:
        """Stop receiving and wait for in-flight batches; False if they did not finish in time."""
        self._stop_requested.set()
        deadline = time.monotonic() + timeout_sec
        if self._gatherer is not None:
            self._gatherer.join(max(0.0, deadline - time.monotonic()))
            if self._gatherer.is_alive():
                logger.error("poller for mapping %s did not stop within %ss", self.spec.uuid, timeout_sec)
                return False
        with self._lock:
            pending = set(self._futures)
        _, not_done = concurrent.futures.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if not_done:
            logger.error(
                "%d batch(es) of mapping %s still running after %ss", len(not_done), self.spec.uuid, timeout_sec
            )
            return False
        return True

    def drain(self, timeout_sec: float = 10.0, *, check_interval_sec: float = 0.02) -> bool:
        """Wait until the queue has no visible, delayed or in-flight message and no batch runs.

        Failed messages count as in flight until their visibility timeout passes and they are either
        processed or moved to the dead-letter queue, so a drain also waits out retries.
        """
        deadline = time.monotonic() + timeout_sec
        while True:
            if self._in_flight == 0 and self._queue_is_empty():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(check_interval_sec)

    # -- polling ---------------------------------------------------------------------------------
    def _gather_loop(self) -> None:
        while not self._stop_requested.is_set():
            if not self._slots.acquire(timeout=_SLOT_WAIT_SEC):
                continue
            dispatched = False
            try:
                messages = self._gather_batch()
                if messages:
                    self._dispatch(messages)
                    dispatched = True
            except Exception:
                self._receive_errors += 1
                logger.exception(
                    "polling %s for mapping %s failed; retrying in %ss",
                    self.spec.queue_arn,
                    self.spec.uuid,
                    _RECEIVE_ERROR_BACKOFF_SEC,
                )
                self._stop_requested.wait(_RECEIVE_ERROR_BACKOFF_SEC)
            finally:
                if not dispatched:
                    self._slots.release()
            if not dispatched:
                self._stop_requested.wait(self._poll_wait_sec)

    def _gather_batch(self) -> list[dict[str, Any]]:
        spec = self.spec
        batch: list[dict[str, Any]] = []
        window_ends_at: float | None = None
        while len(batch) < spec.batch_size:
            received = self._receive(min(SQS_RECEIVE_MAX_MESSAGES, spec.batch_size - len(batch)))
            batch.extend(received)
            if not batch:
                return batch  # nothing arrived; the window only opens with a first message
            if spec.maximum_batching_window_sec == 0 or len(batch) >= spec.batch_size:
                break
            if window_ends_at is None:
                window_ends_at = time.monotonic() + spec.maximum_batching_window_sec
            remaining = window_ends_at - time.monotonic()
            if remaining <= 0:
                break
            if not received:
                if self._stop_requested.wait(min(self._poll_wait_sec, remaining)):
                    break  # stopping: hand over what is already in flight instead of abandoning it
        return batch

    def _receive(self, max_messages: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self.spec.queue_url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=0,
            # AttributeNames is deprecated in favour of MessageSystemAttributeNames; older endpoints
            # only know the first, moto merges both.
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return response.get("Messages", [])

    def _dispatch(self, messages: list[dict[str, Any]]) -> None:
        assert self._executor is not None
        # A batch counts as in flight from here, not from when a worker picks it up, so drain() cannot
        # see an empty queue and an idle poller while a received batch waits for its worker.
        with self._lock:
            self._in_flight += 1
            self._max_in_flight_observed = max(self._max_in_flight_observed, self._in_flight)
        try:
            future = self._executor.submit(self._run_batch, messages)
        except BaseException:
            with self._lock:
                self._in_flight -= 1
            raise
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget_future)

    def _forget_future(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _run_batch(self, messages: list[dict[str, Any]]) -> None:
        with self._lock:
            self._batches_invoked += 1
        try:
            to_delete = self._invoke_batch(messages)
            failed = len(messages) - len(to_delete)
            deleted = self._delete(to_delete) if to_delete else 0
            with self._lock:
                self._messages_failed += failed
                self._messages_deleted += deleted
                self._delete_errors += len(to_delete) - deleted
        except Exception:
            logger.exception(
                "batch of %d message(s) for mapping %s failed in the poller", len(messages), self.spec.uuid
            )
            with self._lock:
                self._messages_failed += len(messages)
        finally:
            with self._lock:
                self._in_flight -= 1
            self._slots.release()

    def _invoke_batch(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Invoke the function and return the messages Lambda would delete."""
        spec = self.spec
        event = build_sqs_event(messages, queue_arn=spec.queue_arn, region=spec.region)
        try:
            result = self._invoke(spec.function_name, event)
        except Exception:
            logger.exception(
                "invoking %s for mapping %s raised; %d message(s) stay in the queue",
                spec.function_name,
                spec.uuid,
                len(messages),
            )
            return []
        if result.errored:
            logger.warning(
                "%s returned a function error for a batch of %d; they reappear after the visibility timeout: %.300s",
                spec.function_name,
                len(messages),
                result.payload,
            )
            return []
        if not spec.report_batch_item_failures:
            return list(messages)  # a batchItemFailures response is ignored, as on Lambda
        message_ids = [message["MessageId"] for message in messages]
        try:
            failed_ids = failed_message_ids(result.payload, message_ids)
        except MalformedBatchResponseError as error:
            logger.error(
                "%s returned an invalid partial batch response (%s); the whole batch of %d is treated as failed",
                spec.function_name,
                error,
                len(messages),
            )
            return []
        if failed_ids:
            logger.info(
                "%s reported %d of %d message(s) as failed", spec.function_name, len(failed_ids), len(messages)
            )
        return [message for message in messages if message["MessageId"] not in failed_ids]

    def _delete(self, messages: list[dict[str, Any]]) -> int:
        deleted = 0
        for start in range(0, len(messages), SQS_RECEIVE_MAX_MESSAGES):
            chunk = messages[start : start + SQS_RECEIVE_MAX_MESSAGES]
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
            try:
                response = self._sqs.delete_message_batch(QueueUrl=self.spec.queue_url, Entries=entries)
            except (BotoCoreError, ClientError):
                logger.exception("deleting %d processed message(s) from %s failed", len(chunk), self.spec.queue_arn)
                continue
            for failure in response.get("Failed", []):
                logger.error("could not delete a processed message from %s: %s", self.spec.queue_arn, failure)
            deleted += len(response.get("Successful", []))
        return deleted

    def _queue_is_empty(self) -> bool:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.spec.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return all(int(value) == 0 for value in attributes.values())


class EventSourcePollerManager:
    """One SqsEventSourcePoller per SQS event-source mapping registered in moto's Lambda backend.

    `sync()` is safe to call after every deploy: it starts pollers for new or re-enabled mappings,
    restarts a poller whose mapping changed, and stops pollers whose mapping was deleted or disabled.
    A mapping whose settings Lambda would reject (moto validates almost nothing) is logged and listed
    in `rejected`. `spec_override` lets the emulator adjust a spec (e.g. a shorter window for a demo)
    before the poller starts.
    """

    def __init__(
        self,
        *,
        invoke: InvokeFn,
        sqs_client_factory: Callable[[str], Any],
        mapping_lookup: Callable[[], Iterable[Any]] | None = None,
        spec_override: Callable[[EventSourceMappingSpec], EventSourceMappingSpec] | None = None,
        poll_wait_sec: float = DEFAULT_POLL_WAIT_SEC,
        stop_timeout_sec: float = 30.0,
    ) -> None:
        self._invoke = invoke
        self._sqs_client_factory = sqs_client_factory
        self._mapping_lookup = mapping_lookup or iter_moto_sqs_event_source_mappings
        self._spec_override = spec_override
        self._poll_wait_sec = poll_wait_sec
        self._stop_timeout_sec = stop_timeout_sec
        self._lock = threading.RLock()
        self._sqs_clients: dict[str, Any] = {}
        self._pollers: dict[str, SqsEventSourcePoller] = {}
        self._rejected: dict[str, str] = {}

    @property
    def pollers(self) -> Mapping[str, SqsEventSourcePoller]:
        """Running pollers by mapping UUID."""
        with self._lock:
            return dict(self._pollers)

    @property
    def rejected(self) -> Mapping[str, str]:
        """Mappings that could not be polled, by UUID, with the reason."""
        with self._lock:
            return dict(self._rejected)

    def sync(self) -> list[str]:
        """Bring the pollers in line with the registered mappings; returns the UUIDs started."""
        with self._lock:
            started: list[str] = []
            seen: set[str] = set()
            for mapping in self._mapping_lookup():
                if _arn_service(mapping.event_source_arn) != "sqs":
                    continue
                seen.add(mapping.uuid)
                spec = self._spec_for(mapping)
                if spec is None:
                    self._stop_poller(mapping.uuid, reason="its settings are rejected")
                    continue
                current = self._pollers.get(mapping.uuid)
                if current is not None and current.spec == spec:
                    continue
                if current is not None:
                    self._stop_poller(mapping.uuid, reason="its settings changed")
                if not spec.enabled:
                    continue
                poller = SqsEventSourcePoller(
                    spec,
                    sqs_client=self._sqs_client(spec.region),
                    invoke=self._invoke,
                    poll_wait_sec=self._poll_wait_sec,
                )
                poller.start()
                self._pollers[mapping.uuid] = poller
                started.append(mapping.uuid)
            for uuid in set(self._pollers) - seen:
                self._stop_poller(uuid, reason="the mapping was deleted")
            for uuid in set(self._rejected) - seen:
                del self._rejected[uuid]
            return started

    def drain(self, timeout_sec: float = 10.0) -> bool:
        """Drain every polled queue (see SqsEventSourcePoller.drain) within one overall timeout."""
        deadline = time.monotonic() + timeout_sec
        return all(
            poller.drain(max(0.0, deadline - time.monotonic())) for poller in self.pollers.values()
        )

    def stop_all(self, timeout_sec: float | None = None) -> bool:
        """Stop every poller; False if some batch did not finish in time."""
        timeout_sec = self._stop_timeout_sec if timeout_sec is None else timeout_sec
        with self._lock:
            pollers, self._pollers = self._pollers, {}
        deadline = time.monotonic() + timeout_sec
        results = [poller.stop(max(0.0, deadline - time.monotonic())) for poller in pollers.values()]
        return all(results)

    def _spec_for(self, mapping: Any) -> EventSourceMappingSpec | None:
        try:
            queue_url = self._queue_url(mapping.event_source_arn)
            spec = spec_from_moto_mapping(mapping, queue_url=queue_url)
            if self._spec_override is not None:
                spec = self._spec_override(spec)
        except (ValueError, ClientError, BotoCoreError) as error:
            reason = str(error)
            if self._rejected.get(mapping.uuid) != reason:
                logger.error("cannot poll event source mapping %s: %s", mapping.uuid, reason)
            self._rejected[mapping.uuid] = reason
            return None
        self._rejected.pop(mapping.uuid, None)
        return spec

    def _queue_url(self, queue_arn: str) -> str:
        _, _, _, region, account_id, queue_name = queue_arn.split(":")
        response = self._sqs_client(region).get_queue_url(QueueName=queue_name, QueueOwnerAWSAccountId=account_id)
        return response["QueueUrl"]

    def _sqs_client(self, region: str) -> Any:
        if region not in self._sqs_clients:
            self._sqs_clients[region] = self._sqs_client_factory(region)
        return self._sqs_clients[region]

    def _stop_poller(self, uuid: str, *, reason: str) -> None:
        poller = self._pollers.pop(uuid, None)
        if poller is None:
            return
        logger.info("stopping the poller of mapping %s because %s", uuid, reason)
        if not poller.stop(self._stop_timeout_sec):
            logger.error("the poller of mapping %s left batches running", uuid)


def spec_from_moto_mapping(mapping: Any, *, queue_url: str) -> EventSourceMappingSpec:
    """Translate a `moto.awslambda.models.EventSourceMapping` (or a look-alike) into a spec.

    moto 5.2.5 keeps every CreateEventSourceMapping field, including from CloudFormation:
    `batch_size`, `enabled`, `max_batch_window` (MaximumBatchingWindowInSeconds),
    `function_response_types` (FunctionResponseTypes) and `scaling_config` (the ScalingConfig dict).
    """
    _, _, _, region, _, _ = mapping.event_source_arn.split(":")
    scaling_config = getattr(mapping, "scaling_config", None) or {}
    concurrency = scaling_config.get("MaximumConcurrency")
    response_types = getattr(mapping, "function_response_types", None) or []
    window = getattr(mapping, "max_batch_window", None)
    batch_size = getattr(mapping, "batch_size", None)
    return EventSourceMappingSpec(
        uuid=mapping.uuid,
        function_name=mapping.function_arn,
        queue_url=queue_url,
        queue_arn=mapping.event_source_arn,
        region=region,
        batch_size=int(batch_size) if batch_size is not None else 10,
        maximum_batching_window_sec=_number(window) if window is not None else 0,
        maximum_concurrency=int(concurrency) if concurrency is not None else None,
        report_batch_item_failures=REPORT_BATCH_ITEM_FAILURES in response_types,
        enabled=_flag(getattr(mapping, "enabled", True)),
    )


def iter_moto_sqs_event_source_mappings() -> list[Any]:
    """Every SQS event-source mapping registered in this process's moto Lambda backends."""
    from moto.awslambda.models import lambda_backends

    mappings: list[Any] = []
    # dict.values() walks only the accounts and regions that exist; BackendDict's own item access
    # would create new ones.
    for account_backends in list(dict.values(lambda_backends)):
        for backend in list(dict.values(account_backends)):
            mappings.extend(list(backend._event_source_mappings.values()))
    return [mapping for mapping in mappings if _arn_service(mapping.event_source_arn) == "sqs"]


_TRIGGER_PATCH_LOCK = threading.Lock()
_ADD_MESSAGE_LOCK = threading.RLock()


def disable_moto_synchronous_sqs_trigger() -> Callable[[], None]:
    """Stop moto from invoking Lambda inside SendMessage; returns a callable that undoes it.

    Covers this moto 5.2.5 limitation: `moto.sqs.models.Queue.add_message` walks
    `queue.lambda_event_source_mappings` after storing a message and, for each enabled mapping, receives
    up to BatchSize messages and invokes the function synchronously, one invocation per message, before
    SendMessage returns. It ignores the batching window and maximum concurrency, bumps
    ApproximateReceiveCount on failure, and keeps firing for mappings deleted through the API (moto never
    removes them from the queue). With the patch, `add_message` runs with the mappings hidden, so the
    message simply stays in the queue for SqsEventSourcePoller. Calling it again while active is a no-op
    whose undo does nothing.
    """
    from moto.sqs.models import Queue

    with _TRIGGER_PATCH_LOCK:
        original = Queue.add_message
        if getattr(original, "_localcloud_trigger_disabled", False):
            return lambda: None

        @functools.wraps(original)
        def add_message_without_trigger(self: Any, message: Any) -> None:
            # One lock for all queues: the swap below must not interleave with another send (it would
            # restore an empty dict). add_message itself is a list append, so the lock costs nothing.
            with _ADD_MESSAGE_LOCK:
                mappings = self.lambda_event_source_mappings
                self.lambda_event_source_mappings = {}
                try:
                    original(self, message)
                finally:
                    registered_meanwhile = self.lambda_event_source_mappings
                    self.lambda_event_source_mappings = mappings
                    mappings.update(registered_meanwhile)

        add_message_without_trigger._localcloud_trigger_disabled = True  # type: ignore[attr-defined]
        Queue.add_message = add_message_without_trigger  # type: ignore[method-assign]

    def undo() -> None:
        with _TRIGGER_PATCH_LOCK:
            if Queue.add_message is add_message_without_trigger:
                Queue.add_message = original  # type: ignore[method-assign]

    return undo


def _lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """SQS's `MessageAttributeValue` in the lowercase shape Lambda puts in the event."""
    attribute: dict[str, Any] = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = _base64(value["BinaryValue"])
    attribute["stringListValues"] = list(value.get("StringListValues", []))
    attribute["binaryListValues"] = [_base64(item) for item in value.get("BinaryListValues", [])]
    attribute["dataType"] = value["DataType"]
    return attribute


def _base64(value: bytes | str) -> str:
    # boto3 hands binary attributes over decoded; Lambda's event carries them base64-encoded.
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return value


def _arn_service(arn: Any) -> str:
    parts = arn.split(":") if isinstance(arn, str) else []
    return parts[2] if len(parts) > 2 else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> float | int:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else float(value)


def _flag(value: Any) -> bool:
    # CloudFormation templates may carry booleans as strings.
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)

"""A queue in front of a slow downstream, drained by one function at a pace the shared limiter sets.

The leaky bucket of the architecture: producers write as fast as they like, the queue holds the
backlog, and the consumer takes one shared-limiter token per record, so the downstream sees at most
its rate whatever the backlog, the batch size or the number of concurrent batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .handler_function import HandlerFunction
from throttling.core import names
from throttling.core.names import SQS_MAX_MAXIMUM_CONCURRENCY, SQS_MIN_MAXIMUM_CONCURRENCY

# Lambda's documented ranges for an SQS event-source mapping and SQS's for a queue.
MAX_CONCURRENCY_RANGE = (SQS_MIN_MAXIMUM_CONCURRENCY, SQS_MAX_MAXIMUM_CONCURRENCY)
BATCH_SIZE_RANGE = (1, 10_000)
BATCH_SIZE_WITHOUT_WINDOW = 10
BATCHING_WINDOW_RANGE_SEC = (0, 300)
FUNCTION_TIMEOUT_RANGE_SEC = (1, 900)
MAX_RECEIVE_COUNT_RANGE = (1, 1_000)
MAX_VISIBILITY_TIMEOUT_SEC = 43_200  # 12 h
RETENTION_RANGE_DAYS = (1, 14)
# AWS's guidance for SQS event sources: a visibility timeout of at least six times the function
# timeout, so a batch whose invocation was throttled and retried is not yet visible to another poll.
VISIBILITY_TO_TIMEOUT_RATIO = 6
DEAD_LETTER_RETENTION_DAYS = 14  # the maximum: a dead message keeps its original enqueue time


class ThrottledQueueConsumer(Construct):
    """An encrypted, TLS-only SQS queue with a dead-letter queue, consumed by one `HandlerFunction`.

    The handler is expected to take one token per record from the shared limiter and to report
    partial batch failures (`ReportBatchItemFailures` is always on), so one bad record fails alone.
    The construct adds `QUEUE_URL` and `QUEUE_MAX_RECEIVE_COUNT` to the function's environment,
    so the handler can postpone records (`ChangeMessageVisibility`) and tell a last attempt, and
    `DEAD_LETTER_QUEUE_URL` with the right to send there (`grant_send_messages`) and no other, so
    it can dead-letter a message no retry can fix at once, with its reason, instead of failing it
    until its receive count runs out.

    Pitfalls of SQS event sources, and how this construct designs around them:

    - **Concurrency cannot hold a low rate.** The mapping's `MaximumConcurrency` cannot go below 2,
      and one batch alone can already exceed a downstream that takes one request per second. So the
      rate is held by the shared limiter inside the handler, not by concurrency; `max_concurrency`
      only caps how many batches wait on the limiter at once (default 2, the minimum).
    - **Reserved concurrency below the mapping's concurrency loses healthy messages.** The mapping
      keeps polling up to `MaximumConcurrency` batches; when the function is throttled, the batch it
      received goes back to the queue after the visibility timeout with its receive count spent, and
      after `max_receive_count` such throttles a healthy message lands in the dead-letter queue. So
      `reserved_concurrency` must be >= `max_concurrency` (it defaults to it, and a lower value is an
      error). Several mappings on one function need the sum of their concurrencies reserved.
    - **A reservation is not always available.** A new account's concurrency limit (10, or 50)
      leaves nothing to reserve, since Lambda keeps 100 executions unreserved, and the deploy rolls
      back. `reserve_concurrency=False` reserves nothing: the mapping's `MaximumConcurrency` still
      caps the batches in flight and the shared limiter the rate; what is lost is the guarantee, so
      when the account's other functions exhaust its pool the consumer is throttled and a batch
      spends a receive (size `max_receive_count` for it).
    - **A visibility timeout shorter than the function timeout redelivers batches still running.**
      Lambda requires it to be at least the function timeout and AWS advises six times, so that a
      throttled-then-retried invocation still owns its batch; it defaults to six times the function
      timeout, and a lower value is an error.
    - **A dead message keeps its original enqueue time.** Its retention in the dead-letter queue
      counts from when it was first sent, so the dead-letter queue keeps messages for 14 days (the
      maximum) and a message that spent `d` days in the queue has `14 - d` days left to be redriven.

    Redriving dead letters once their cause is fixed: an SQS message move task moves them back to
    the queue (the consumer then delivers them at the limiter's pace like any other message):

        aws sqs start-message-move-task --source-arn <dead_letter_queue arn> --destination-arn <queue arn>
        aws sqs list-message-move-tasks --source-arn <dead_letter_queue arn>

    Always name the destination: without one, a task returns each message to the queue SQS moved it
    from, and a message the handler sent to the dead-letter queue itself was never moved by SQS.

    `grant_redrive(role)` gives an operator role or a redrive function exactly these permissions.

    :param code: the consumer's code (a new `lambda_.Code` per consumer).
    :param handler: the consumer's handler in `code`, e.g. `handlers.legacy_consumer.handler`.
    :param service: Powertools service name of the consumer.
    :param description: the function's description.
    :param removal_policy: of the queues' and the function's log group.
    :param log_retention: of the consumer's log group; default two years (CDK's default for a log group).
    :param function_timeout_sec: the consumer's timeout; size it for a whole batch, each record
        waiting its turn at the limiter and its downstream call. Default 60 s.
    :param environment: more environment variables of the consumer; default none.
    :param memory_mb: the consumer's memory; default 256 MB.
    :param batch_size: records per invocation (1-10,000); above 10 needs a batching window. Default 10.
    :param max_batching_window_sec: how long the mapping gathers records before invoking (0-300);
        default 0 (invoke as soon as records arrive).
    :param max_concurrency: the mapping's `ScalingConfig.MaximumConcurrency` (2-1,000); default 2.
    :param reserve_concurrency: reserve concurrency for the consumer at all; default true (false for
        an account whose limit leaves nothing to reserve; `reserved_concurrency` must then be unset).
    :param reserved_concurrency: the function's reserved concurrency; default `max_concurrency`.
    :param max_receive_count: receives before SQS moves a message to the dead-letter queue
        (1-1,000); default 10. Size it from how often the handler may postpone a healthy record.
    :param visibility_timeout_sec: the queue's visibility timeout; default six times the function
        timeout (at most 12 h).
    :param retention_days: how long the queue keeps a message (1-14); default 14, so a backlog
        outlives a long downstream outage.
    :param layers: the consumer's layers after Powertools' (e.g. `RuntimeLayer`); default none.
    :param function_props: other `aws_lambda.Function` keyword arguments or overrides (`HandlerFunction`).
    :param existing_queue: a queue of yours to drain instead of a new one; it must have a dead-letter
        queue (`dead_letter_queue=...` where you create it), whose `max_receive_count` is then used,
        and the visibility-timeout rule above is yours to keep. `queue_props`, `dead_letter_queue_props`,
        `visibility_timeout_sec`, `retention_days` and `max_receive_count` do not apply to it.
    :param queue_props: other `aws_sqs.Queue` keyword arguments or overrides of the queue's defaults
        (SQS-managed encryption, TLS only); the dead-letter queue is this construct's.
    :param dead_letter_queue_props: the same for the dead-letter queue.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code: lambda_.Code,
        handler: str,
        service: str,
        description: str,
        removal_policy: RemovalPolicy,
        log_retention: logs.RetentionDays = logs.RetentionDays.TWO_YEARS,
        function_timeout_sec: int = 60,
        environment: Mapping[str, str] | None = None,
        memory_mb: int = 256,
        batch_size: int = 10,
        max_batching_window_sec: int = 0,
        max_concurrency: int = SQS_MIN_MAXIMUM_CONCURRENCY,
        reserve_concurrency: bool = True,
        reserved_concurrency: int | None = None,
        max_receive_count: int = 10,
        visibility_timeout_sec: int | None = None,
        retention_days: int = 14,
        layers: Sequence[lambda_.ILayerVersion] = (),
        function_props: Mapping[str, Any] | None = None,
        existing_queue: sqs.Queue | None = None,
        queue_props: Mapping[str, Any] | None = None,
        dead_letter_queue_props: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if existing_queue is not None:
            if queue_props or dead_letter_queue_props:
                raise ValueError("queue_props and dead_letter_queue_props were given with existing_queue: configure the"
                                 " queue where you create it, or drop existing_queue")
            if existing_queue.dead_letter_queue is None:
                raise ValueError(f"existing_queue {existing_queue.node.path} has no dead-letter queue: a record no retry"
                                 " can fix would be retried until its retention ends; create it with"
                                 " dead_letter_queue=sqs.DeadLetterQueue(queue=..., max_receive_count=...)")
            max_receive_count = existing_queue.dead_letter_queue.max_receive_count
        if not reserve_concurrency and reserved_concurrency is not None:
            raise ValueError(
                f"reserved_concurrency {reserved_concurrency} was given with reserve_concurrency=False; give one or"
                " the other"
            )
        if reserve_concurrency and reserved_concurrency is None:
            reserved_concurrency = max_concurrency
        if visibility_timeout_sec is None:
            visibility_timeout_sec = function_timeout_sec * VISIBILITY_TO_TIMEOUT_RATIO
        validate_consumer_settings(
            function_timeout_sec=function_timeout_sec,
            batch_size=batch_size,
            max_batching_window_sec=max_batching_window_sec,
            max_concurrency=max_concurrency,
            reserved_concurrency=reserved_concurrency,
            max_receive_count=max_receive_count,
            visibility_timeout_sec=visibility_timeout_sec,
            retention_days=retention_days,
        )
        self.max_receive_count = max_receive_count

        if existing_queue is not None:
            self.queue: sqs.Queue = existing_queue
            self.dead_letter_queue: sqs.IQueue = existing_queue.dead_letter_queue.queue  # type: ignore[union-attr]
        else:
            self.dead_letter_queue = sqs.Queue(self, "DeadLetterQueue", **{**dict(
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                retention_period=Duration.days(DEAD_LETTER_RETENTION_DAYS),
                removal_policy=removal_policy,
            ), **(dead_letter_queue_props or {})})
            self.queue = sqs.Queue(self, "Queue", **{**dict(
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                visibility_timeout=Duration.seconds(visibility_timeout_sec),
                retention_period=Duration.days(retention_days),
                removal_policy=removal_policy,
            ), **(queue_props or {}), "dead_letter_queue": sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=max_receive_count)})
        self.handler_function = HandlerFunction(
            self,
            "Consumer",
            code=code,
            handler=handler,
            service=service,
            description=description,
            log_retention=log_retention,
            removal_policy=removal_policy,
            timeout_sec=function_timeout_sec,
            memory_mb=memory_mb,
            reserved_concurrency=reserved_concurrency,
            layers=layers,
            function_props=function_props,
            environment={
                **(environment or {}),
                names.ENV_QUEUE_URL: self.queue.queue_url,
                names.ENV_QUEUE_MAX_RECEIVE_COUNT: str(max_receive_count),
                names.ENV_DEAD_LETTER_QUEUE_URL: self.dead_letter_queue.queue_url,
            },
        )
        self.function = self.handler_function.function
        # Sending only (with CDK's GetQueueAttributes and GetQueueUrl): the handler never reads dead letters.
        self.dead_letter_queue.grant_send_messages(self.function)
        # Also grants the consumer ReceiveMessage, DeleteMessage and ChangeMessageVisibility on the queue.
        self.event_source = event_sources.SqsEventSource(
            self.queue,
            batch_size=batch_size,
            max_batching_window=Duration.seconds(max_batching_window_sec) if max_batching_window_sec else None,
            max_concurrency=max_concurrency,
            report_batch_item_failures=True,
        )
        self.function.add_event_source(self.event_source)

    # -- grants ----------------------------------------------------------------------------------
    def grant_redrive(self, grantee: iam.IGrantable) -> iam.Grant:
        """Start, watch and cancel message move tasks from the dead-letter queue back to the queue."""
        from_dead_letters = iam.Grant.add_to_principal(
            grantee=grantee,
            actions=[
                "sqs:StartMessageMoveTask",
                "sqs:ListMessageMoveTasks",
                "sqs:CancelMessageMoveTask",
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
            ],
            resource_arns=[self.dead_letter_queue.queue_arn],
        )
        return from_dead_letters.combine(self.queue.grant_send_messages(grantee))

    # -- metrics ---------------------------------------------------------------------------------
    def metric_backlog(self, **props) -> cloudwatch.Metric:
        """Messages waiting to be received (ApproximateNumberOfMessagesVisible, maximum per minute)."""
        return self.queue.metric_approximate_number_of_messages_visible(**_defaults(props))

    def metric_oldest_message_age(self, **props) -> cloudwatch.Metric:
        """Age of the oldest message in seconds: how far behind the downstream's pace the backlog is."""
        return self.queue.metric_approximate_age_of_oldest_message(**_defaults(props))

    def metric_dead_letters(self, **props) -> cloudwatch.Metric:
        """Messages in the dead-letter queue; anything above zero needs an operator (and a redrive)."""
        return self.dead_letter_queue.metric_approximate_number_of_messages_visible(**_defaults(props))


def validate_consumer_settings(
    *,
    function_timeout_sec: int,
    batch_size: int,
    max_batching_window_sec: int,
    max_concurrency: int,
    reserved_concurrency: int | None,
    max_receive_count: int,
    visibility_timeout_sec: int,
    retention_days: int,
) -> None:
    """Raise `ValueError` naming the first setting Lambda or SQS would refuse, or that would lose messages.

    `reserved_concurrency` None means no reservation (the account's pool), which loses nothing by itself.
    """
    _check_int("function_timeout_sec", function_timeout_sec, FUNCTION_TIMEOUT_RANGE_SEC)
    _check_int("batch_size", batch_size, BATCH_SIZE_RANGE)
    _check_int("max_batching_window_sec", max_batching_window_sec, BATCHING_WINDOW_RANGE_SEC)
    if batch_size > BATCH_SIZE_WITHOUT_WINDOW and max_batching_window_sec < 1:
        raise ValueError(
            f"batch_size above {BATCH_SIZE_WITHOUT_WINDOW} needs max_batching_window_sec >= 1 (lambda refuses it"
            f" otherwise), got batch_size {batch_size} with max_batching_window_sec {max_batching_window_sec}"
        )
    if _is_int(max_concurrency) and max_concurrency < MAX_CONCURRENCY_RANGE[0]:
        raise ValueError(
            f"max_concurrency must be >= {MAX_CONCURRENCY_RANGE[0]} (lambda's minimum for an sqs mapping), got"
            f" {max_concurrency}; hold a lower rate with the shared limiter in the handler, not with concurrency"
        )
    _check_int("max_concurrency", max_concurrency, MAX_CONCURRENCY_RANGE)
    if reserved_concurrency is not None and (
            not _is_int(reserved_concurrency) or reserved_concurrency < max_concurrency):
        raise ValueError(
            f"reserved_concurrency must be >= max_concurrency, got {reserved_concurrency!r} < {max_concurrency}:"
            " throttled invocations would send healthy messages back to the queue and, after max_receive_count"
            " receives, to the dead-letter queue; raise reserved_concurrency or leave it unset"
        )
    _check_int("max_receive_count", max_receive_count, MAX_RECEIVE_COUNT_RANGE)
    _check_int("visibility_timeout_sec", visibility_timeout_sec, (0, MAX_VISIBILITY_TIMEOUT_SEC))
    minimum_visibility_sec = function_timeout_sec * VISIBILITY_TO_TIMEOUT_RATIO
    if visibility_timeout_sec < minimum_visibility_sec:
        raise ValueError(
            f"visibility_timeout_sec must be >= {VISIBILITY_TO_TIMEOUT_RATIO} x function_timeout_sec"
            f" ({minimum_visibility_sec}), got {visibility_timeout_sec}; leave it unset to derive it,"
            " or lower function_timeout_sec"
        )
    _check_int("retention_days", retention_days, RETENTION_RANGE_DAYS)


def _check_int(name: str, value: object, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not _is_int(value) or not low <= value <= high:  # type: ignore[operator]
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _defaults(props: dict) -> dict:
    return {"period": Duration.minutes(1), "statistic": "Maximum", **props}

"""Deliver each queued order to the orders API, one shared-limiter token per order.

A body that is not an order is dead-lettered at once with its reason (no retry can fix it) and the
rest of the batch goes on; an order the limiter cannot admit in time, or the API refuses, is reported
as a batch item failure and comes back after the queue's visibility timeout.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import boto3
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from throttling.core.rate_limit_headers import parse_rate_limit_headers
from throttling.runtime.shared_limiter import SharedLimiter

ORDERS_API_URL = os.environ["ORDERS_API_URL"].rstrip("/")
DEAD_LETTER_QUEUE_URL = os.environ["DEAD_LETTER_QUEUE_URL"]
CALL_TIMEOUT_SEC = 5.0

limiter = SharedLimiter.from_environment()
processor = BatchProcessor(event_type=EventType.SQS)
sqs = boto3.client("sqs")


def deliver(record, context) -> None:
    order = _order(record.body)
    if order is None:
        sqs.send_message(QueueUrl=DEAD_LETTER_QUEUE_URL, MessageBody=record.body, MessageAttributes={
            "error": {"DataType": "String", "StringValue": "not an order: a JSON object with a string order_id"}})
        return
    token = limiter.acquire(time_left_sec=context.get_remaining_time_in_millis() / 1000 - CALL_TIMEOUT_SEC - 1)
    if not token.admitted:
        raise RuntimeError(f"order {order['order_id']}: the orders API's bucket is empty for"
                           f" {token.retry_after_sec:.1f} s more; the queue brings it back")
    request = urllib.request.Request(f"{ORDERS_API_URL}/orders", data=json.dumps(order).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Idempotency-Key": order["order_id"]})
    try:
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_SEC) as answer:
            # A limit the API states in its answer (RateLimit-Policy) caps every caller's bucket at once.
            published = parse_rate_limit_headers(answer.headers.items(), now=time.time()).published_per_sec
            limiter.report(token, status=answer.status, published_per_sec=published)
            return
    except urllib.error.HTTPError as error:
        retry_after = error.headers.get("Retry-After", "")
        published = parse_rate_limit_headers(error.headers.items(), now=time.time()).published_per_sec
        limiter.report(token, status=error.code, retry_after_sec=float(retry_after) if retry_after.isdigit() else None,
                       published_per_sec=published)
        raise


def _order(body: str) -> dict | None:
    try:
        order = json.loads(body)
    except ValueError:
        return None
    return order if isinstance(order, dict) and isinstance(order.get("order_id"), str) else None


def handler(event, context):
    return process_partial_response(event=event, record_handler=lambda record: deliver(record, context),
                                    processor=processor, context=context)

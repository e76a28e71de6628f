"""Authorizations the gateway may have made without our hearing of it, and when repeating one stops being safe.

An authorization whose answer was lost (a timeout, a 5xx, a connection cut after the request left)
may have been made. Repeating it under the same `Idempotency-Key` is safe only while the gateway
keeps that key: Stripe, for one, prunes keys once they are at least 24 hours old and treats a key it
no longer holds as a new request. A workflow's own retries come within minutes, but a parked order is
resumed when the breaker closes, possibly days later, and by then nothing else remembers the first
attempt either (the authorizer's Powertools idempotency keeps answers, not errors, and for a day).

So the authorizer notes each order's first unanswered authorization here, in its idempotency table
beside Powertools' records, and refuses to repeat it once the gateway may have forgotten the key: the
order is cancelled (`AuthorizationOutcomeUnknown`) instead of risking a second authorization, and an
authorization the gateway did make is never captured and lapses.

`may_repeat_authorization` is the rule (pure); `UnansweredAuthorizations` the DynamoDB adapter,
with an injected low-level client.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient

__all__ = [
    "UNANSWERED_RECORD_TTL_SEC",
    "UnansweredAuthorizations",
    "may_repeat_authorization",
]

# A note must outlive every way an order can come back: 14 days in the parked-orders queue, then up to
# 14 days in its dead-letter queue before an operator redrives it.
UNANSWERED_RECORD_TTL_SEC = 30 * 86_400
# Beside Powertools' own records (`authorize_payment#<hash>`), under a prefix none of them can have.
KEY_PREFIX = "authorize_payment.unanswered#"


def may_repeat_authorization(first_unanswered_at: float | None, now: float, key_kept_sec: float) -> bool:
    """May an order's authorization be sent (again) at `now`?

    Yes when no earlier one went unanswered, or the first that did is younger than `key_kept_sec`,
    how long the gateway is known to keep an Idempotency-Key (a repeat then gets the first answer).
    """
    if not isinstance(key_kept_sec, (int, float)) or isinstance(key_kept_sec, bool) or not key_kept_sec > 0:
        raise ValueError(f"key_kept_sec must be a number of seconds > 0, got {key_kept_sec!r}")
    if first_unanswered_at is None:
        return True
    return now - first_unanswered_at < key_kept_sec


class UnansweredAuthorizations:
    """One item per order whose authorization went unanswered: `{id, first_unanswered_at, expiration}`.

    `expiration` is the table's TTL attribute (Powertools' layout). Noting keeps the first time
    (a conditional put), so later failures never make an order look younger than it is.
    """

    def __init__(self, table_name: str, *, client: DynamoDBClient, ttl_sec: int = UNANSWERED_RECORD_TTL_SEC) -> None:
        self.table_name = table_name
        self._client = client
        self._ttl_sec = ttl_sec

    def first_at(self, order_id: str) -> float | None:
        """When the order's first unanswered authorization was sent (epoch seconds), or None."""
        item = self._client.get_item(
            TableName=self.table_name, Key={"id": {"S": KEY_PREFIX + order_id}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        value = float(item["first_unanswered_at"]["N"])
        return value if math.isfinite(value) else None

    def note(self, order_id: str, now: float) -> None:
        """Remember that an authorization of `order_id` sent at `now` got no answer (the first such time is kept)."""
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item={
                    "id": {"S": KEY_PREFIX + order_id},
                    "first_unanswered_at": {"N": repr(float(now))},
                    "expiration": {"N": str(int(now) + self._ttl_sec)},
                },
                ConditionExpression="attribute_not_exists(id)",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

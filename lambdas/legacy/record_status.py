"""Where each legacy record's delivery status is kept: one DynamoDB item per record, keyed by its id.

The adapter of the records table, with an injected client. An operator (or the API's status route)
reads an item to learn whether a record reached the mainframe: `delivered` with its timestamps and
the mainframe's status code, or `failed` with the last error and, when the record was postponed,
how long until it is tried again; a delivered record names its tenant. Items expire `retention_sec`
after their last write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from throttling.core import names

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient

__all__ = ["WRITE_ERRORS", "RecordStatusStore"]

ERROR_MAX_CHARS = 1000
# What a failed status write raises: DynamoDB's refusal, or botocore's when no answer came.
WRITE_ERRORS = (ClientError, BotoCoreError)


class RecordStatusStore:
    """Writes a record's status; a delivered record is never marked failed afterwards."""

    def __init__(
        self,
        table_name: str,
        *,
        client: DynamoDBClient,
        retention_sec: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table_name = table_name
        self.client = client
        self.retention_sec = retention_sec
        self.clock = clock

    def delivered(self, record_id: str, message_id: str, receive_count: int, status_code: int, *,
                  tenant: str = names.DEFAULT_TENANT) -> None:
        """Mark the record delivered, for `tenant` (raises on a failed write: the caller decides what that costs)."""
        now = self.clock()
        self.client.update_item(
            TableName=self.table_name,
            Key={"pk": {"S": record_id}},
            UpdateExpression=(
                "SET #status = :delivered, delivered_at = :now, updated_at = :now, attempts = :attempts,"
                " message_id = :message_id, downstream_status = :code, expires_at = :expires_at, tenant = :tenant,"
                " first_attempt_at = if_not_exists(first_attempt_at, :now) REMOVE #error, retry_after_sec"
            ),
            ExpressionAttributeNames={"#status": "status", "#error": "error"},
            ExpressionAttributeValues={
                ":delivered": {"S": "delivered"},
                ":now": {"S": _iso(now)},
                ":attempts": {"N": str(receive_count)},
                ":message_id": {"S": message_id},
                ":code": {"N": str(status_code)},
                ":tenant": {"S": tenant},
                ":expires_at": {"N": str(int(now) + self.retention_sec)},
            },
        )

    def failed(
        self,
        record_id: str,
        message_id: str,
        receive_count: int,
        error: str,
        *,
        retry_after_sec: int | None = None,
    ) -> bool:
        """Mark the record failed with `error`, unless it was delivered; False when a delivered record kept
        its status. Other write errors propagate: the caller logs them (the record is a failure already)."""
        now = self.clock()
        values: dict[str, Any] = {
            ":failed": {"S": "failed"},
            ":delivered": {"S": "delivered"},
            ":error": {"S": error[:ERROR_MAX_CHARS]},
            ":now": {"S": _iso(now)},
            ":attempts": {"N": str(receive_count)},
            ":message_id": {"S": message_id},
            ":expires_at": {"N": str(int(now) + self.retention_sec)},
        }
        update = (
            "SET #status = :failed, #error = :error, updated_at = :now, attempts = :attempts, message_id = :message_id,"
            " expires_at = :expires_at, first_attempt_at = if_not_exists(first_attempt_at, :now)"
        )
        if retry_after_sec is not None:
            update += ", retry_after_sec = :retry_after"
            values[":retry_after"] = {"N": str(retry_after_sec)}
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": record_id}},
                UpdateExpression=update,
                ConditionExpression="attribute_not_exists(#status) OR #status <> :delivered",
                ExpressionAttributeNames={"#status": "status", "#error": "error"},
                ExpressionAttributeValues=values,
            )
        except ClientError as write_error:
            if write_error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True


def _iso(epoch_sec: float) -> str:
    return datetime.fromtimestamp(epoch_sec, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

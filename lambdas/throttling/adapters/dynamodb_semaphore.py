"""A counting semaphore of expiring leases over DynamoDB, one item per semaphore.

The adapter holds no decision logic beyond the pure `throttling.core.semaphore` rule (a lease whose
expiry <= now is reclaimable): each operation is a conditional write that fails if the item moved
meanwhile, and a failed condition returns the stored item at no extra read. The low-level client
is injected; time comes from an injected `Clock`. The table has a string partition key `pk` and
no sort key.

Costs (how DynamoDB bills them: `throttling.adapters._dynamodb`):

- Semaphore: acquiring a free slot costs 1 write; renewing a held lease 2 (the failed take tells
  it is held, then the renewal); a denial 1 failed write, plus 1 per expired lease reclaimed and 1
  retry when any was. The first acquire of a semaphore ever adds a rejected update and 1 put that
  creates the item with an empty `leases` map (`SET leases.#owner` needs the map to exist).
  Release: 1 write. Reclaim: 1 consistent read (or a scan) + 1 write per expired lease.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from throttling.adapters._dynamodb import check_name, error_code, failed_condition_item, number
from throttling.core.clock import Clock, SystemClock
from throttling.core.semaphore import (
    SEMAPHORE_ACQUIRE_CONDITION,
    SEMAPHORE_ACQUIRE_UPDATE,
    SEMAPHORE_CREATE_CONDITION,
    SEMAPHORE_RECLAIM_CONDITION,
    SEMAPHORE_RECLAIM_UPDATE,
    SEMAPHORE_RELEASE_CONDITION,
    SEMAPHORE_RELEASE_UPDATE,
    SEMAPHORE_RENEW_CONDITION,
    SEMAPHORE_RENEW_UPDATE,
    new_semaphore_item,
)

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient

__all__ = ["DynamoDbSemaphore"]

# The expressions are the core's (`throttling.core.semaphore`): workflows send the same ones from ASL
# (`arn:aws:states:::dynamodb:updateItem`), placed there by the stacks.


class DynamoDbSemaphore:
    """A counting semaphore of expiring leases in one item (`pk = name`, `leases` map, `lease_count`).

    Same rule as the pure `semaphore` core: a lease whose expiry <= now is reclaimable; an owner
    holding a lease renews it without taking a second slot. Unlike the core, a held lease that
    expired but was not reclaimed yet is renewed too (its slot was never handed on, so the count
    does not change; the two differ only when the limit was lowered below the leases held).
    The item has no TTL: it lives as long as the downstream it guards.
    """

    def __init__(self, table_name: str, *, client: DynamoDBClient, clock: Clock = SystemClock()) -> None:
        self.table_name = table_name
        self._client = client
        self._clock = clock

    def acquire(self, name: str, owner_id: str, *, limit: int, lease_sec: float) -> bool:
        """Take (or renew) a slot of `name` for `owner_id` until now + `lease_sec`; False when all `limit` are held."""
        check_name("name", name)
        check_name("owner_id", owner_id)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an int >= 0, got {limit!r}")
        if isinstance(lease_sec, bool) or not isinstance(lease_sec, (int, float)) or not math.isfinite(lease_sec) or lease_sec <= 0:
            raise ValueError(f"lease_sec must be a finite number > 0, got {lease_sec!r}; size it above the longest call it guards")
        now = self._clock.now()
        expiry = number(now + lease_sec)
        taken, stored = self._take(name, owner_id, expiry, limit)
        if taken:
            return True
        if stored is None:
            # The item (and so the map `SET leases.#owner` writes into) does not exist yet.
            self._create(name)
            taken, stored = self._take(name, owner_id, expiry, limit)
            if taken:
                return True
            if stored is None:
                raise RuntimeError(f"semaphore item {name!r} vanished right after it was created; is a TTL set on it?")
        leases = _leases_of(stored)
        if owner_id in leases:
            if self._renew(name, owner_id, expiry):
                return True
            # Reclaimed or released between the two writes: compete for a slot like anyone.
            taken, _ = self._take(name, owner_id, expiry, limit)
            return taken
        if not self._remove_expired(name, leases, now):
            return False
        taken, _ = self._take(name, owner_id, expiry, limit)
        return taken

    def release(self, name: str, owner_id: str) -> bool:
        """Give back `owner_id`'s slot; True if a lease was removed, False if it was not held (idempotent)."""
        check_name("name", name)
        check_name("owner_id", owner_id)
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": name}},
                UpdateExpression=SEMAPHORE_RELEASE_UPDATE,
                ConditionExpression=SEMAPHORE_RELEASE_CONDITION,
                ExpressionAttributeNames={"#owner": owner_id},
                ExpressionAttributeValues={":minus_one": {"N": "-1"}},
            )
        except ClientError as error:
            failed_condition_item(error)
            return False
        return True

    def reclaim_expired(self, name: str) -> list[str]:
        """Remove `name`'s expired leases; returns the owners whose leases this call removed."""
        check_name("name", name)
        response = self._client.get_item(
            TableName=self.table_name,
            Key={"pk": {"S": name}},
            ConsistentRead=True,
            ProjectionExpression="leases",
        )
        return self._remove_expired(name, _leases_of(response.get("Item", {})), self._clock.now())

    def reclaim_all_expired(self) -> dict[str, list[str]]:
        """Scan the table and remove every expired lease (what the cleanup function runs); name -> owners removed."""
        now = self._clock.now()
        reclaimed: dict[str, list[str]] = {}
        for item in self._scan():
            owners = self._remove_expired(item["pk"]["S"], _leases_of(item), now)
            if owners:
                reclaimed[item["pk"]["S"]] = owners
        return reclaimed

    def _take(self, name: str, owner_id: str, expiry: dict[str, str], limit: int) -> tuple[bool, dict[str, Any] | None]:
        """The acquire write; on a failed condition, the stored item it returned (None: no item yet)."""
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": name}},
                UpdateExpression=SEMAPHORE_ACQUIRE_UPDATE,
                ConditionExpression=SEMAPHORE_ACQUIRE_CONDITION,
                ExpressionAttributeNames={"#owner": owner_id},
                ExpressionAttributeValues={":expiry": expiry, ":one": {"N": "1"}, ":limit": {"N": str(limit)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error_code(error) == "ValidationException" and "document path" in str(error):
                return False, None
            return False, failed_condition_item(error) or {}
        return True, None

    def _create(self, name: str) -> None:
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item=new_semaphore_item(name),
                ConditionExpression=SEMAPHORE_CREATE_CONDITION,
            )
        except ClientError as error:
            failed_condition_item(error)  # another caller created it first: fine

    def _renew(self, name: str, owner_id: str, expiry: dict[str, str]) -> bool:
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": name}},
                UpdateExpression=SEMAPHORE_RENEW_UPDATE,
                ConditionExpression=SEMAPHORE_RENEW_CONDITION,
                ExpressionAttributeNames={"#owner": owner_id},
                ExpressionAttributeValues={":expiry": expiry},
            )
        except ClientError as error:
            failed_condition_item(error)
            return False
        return True

    def _remove_expired(self, name: str, leases: Mapping[str, dict[str, str]], now: float) -> list[str]:
        removed = []
        for owner_id, expiry in sorted(leases.items()):
            if float(expiry["N"]) > now:
                continue
            try:
                self._client.update_item(
                    TableName=self.table_name,
                    Key={"pk": {"S": name}},
                    UpdateExpression=SEMAPHORE_RECLAIM_UPDATE,
                    ConditionExpression=SEMAPHORE_RECLAIM_CONDITION,
                    ExpressionAttributeNames={"#owner": owner_id},
                    ExpressionAttributeValues={":minus_one": {"N": "-1"}, ":seen_expiry": expiry},
                )
            except ClientError as error:
                failed_condition_item(error)  # renewed, released or reclaimed by someone else meanwhile
                continue
            removed.append(owner_id)
        return removed

    def _scan(self) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"TableName": self.table_name, "ConsistentRead": True, "ProjectionExpression": "pk, leases"}
        while True:
            page = self._client.scan(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _leases_of(item: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    return dict(item.get("leases", {}).get("M", {}))

"""The control loop's DynamoDB adapter: the controller's state, one item per downstream, written under a version.

The item is flat (one number attribute per remembered value, each algorithm's memory beside the
shared fields); `state_to_item` and `state_from_item` are the mapping, kept here and not in the
state type.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from throttling.core.controller import AimdState, ControllerState, GradientState, Setting

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient
    from types_boto3_dynamodb.type_defs import AttributeValueTypeDef

__all__ = ["ControllerStateStore", "state_from_item", "state_to_item"]

_SHARED = ("clean_periods", "last_period_end", "last_decrease_at", "last_change_at")
_GRADIENT = ("baseline_latency_ms", "floor_latency_ms")
_AIMD = ("floor_p99_latency_ms",)


def state_to_item(state: ControllerState) -> dict[str, float | int]:
    """A flat dict of plain numbers (None fields left out), for a DynamoDB item."""
    values: dict[str, float | int | None] = {name: getattr(state, name) for name in _SHARED}
    values |= {name: getattr(state.gradient, name) for name in _GRADIENT}
    values |= {name: getattr(state.aimd, name) for name in _AIMD}
    values["estimated_limit"] = state.gradient.estimated_limit
    item = {name: value for name, value in values.items() if value is not None}
    if state.written is not None:
        item["written_max_concurrency"] = state.written.max_concurrency
        item["written_rate_per_sec"] = state.written.rate_per_sec
    return item


def state_from_item(item: Mapping[str, Any] | None) -> ControllerState:
    """The inverse of `state_to_item` (numbers may come back as Decimal); unknown keys are ignored."""
    if not item:
        return ControllerState()

    def number(name: str) -> float | None:
        value = item.get(name)
        return None if value is None else float(value)

    written = None
    if item.get("written_max_concurrency") is not None and item.get("written_rate_per_sec") is not None:
        written = Setting(int(item["written_max_concurrency"]), float(item["written_rate_per_sec"]))
    return ControllerState(
        clean_periods=int(item.get("clean_periods", 0)),
        last_period_end=number("last_period_end"),
        last_decrease_at=number("last_decrease_at"),
        last_change_at=number("last_change_at"),
        written=written,
        aimd=AimdState(floor_p99_latency_ms=number("floor_p99_latency_ms")),
        gradient=GradientState(baseline_latency_ms=number("baseline_latency_ms"),
                               floor_latency_ms=number("floor_latency_ms"),
                               estimated_limit=number("estimated_limit")),
    )


class ControllerStateStore:
    """One item per downstream (`pk`), with a `version` every write checks (a lost race skips the write)."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self._client = client

    def load(self, downstream: str) -> tuple[ControllerState, int | None]:
        """The downstream's state and the version to write it back under (None: no item yet)."""
        item = self._client.get_item(TableName=self.table_name, Key={"pk": {"S": downstream}},
                                     ConsistentRead=True).get("Item")
        if item is None:
            return ControllerState(), None
        plain = {key: Decimal(value["N"]) for key, value in item.items() if "N" in value}
        return state_from_item(plain), int(plain.get("version", 0))

    def save(self, downstream: str, state: ControllerState, version: int | None, now: float) -> bool:
        """Write `state` if the item is still at `version`; False when another run wrote it meanwhile."""
        item: dict[str, AttributeValueTypeDef] = {
            "pk": {"S": downstream}, "version": {"N": str((version or 0) + 1)},
            "updated_at": {"S": datetime.fromtimestamp(now, tz=timezone.utc).isoformat(timespec="seconds")}}
        for key, value in state_to_item(state).items():
            item[key] = {"N": _number(value)}
        try:
            if version is None:
                self._client.put_item(TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(pk)")
            else:
                self._client.put_item(TableName=self.table_name, Item=item, ConditionExpression="#version = :version",
                                      ExpressionAttributeNames={"#version": "version"},
                                      ExpressionAttributeValues={":version": {"N": str(version)}})
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True


def _number(value: float | int) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"cannot store {value!r} as a DynamoDB number")
    return str(value) if isinstance(value, int) else format(Decimal(repr(value)), "f")

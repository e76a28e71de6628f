"""The control loop's Lambda adapter: SQS event-source mappings follow a downstream's `max_concurrency`.

SQS consumers cannot read SSM for their concurrency: Lambda's poller is bounded by the mapping's
`ScalingConfig.MaximumConcurrency`, so the controller sets it from the tunables document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Lambda refuses an SQS mapping's MaximumConcurrency below 2 (and above 1,000).
from throttling.core.names import SQS_MAX_MAXIMUM_CONCURRENCY, SQS_MIN_MAXIMUM_CONCURRENCY

if TYPE_CHECKING:
    from types_boto3_lambda import LambdaClient
    from types_boto3_lambda.type_defs import EventSourceMappingConfigurationTypeDef

__all__ = ["EventSourceMappingReconciler", "mapping_concurrency"]



def mapping_concurrency(max_concurrency: int, reserved_concurrency: int | None) -> int:
    """The `MaximumConcurrency` an SQS mapping gets for a downstream's `max_concurrency`.

    Never below Lambda's minimum of 2, and never above the function's reserved concurrency: a
    mapping allowed more than the function may run gets throttled invocations, whose batches go
    back to the queue with a receive spent, and healthy messages end in the dead-letter queue.
    """
    desired = max(SQS_MIN_MAXIMUM_CONCURRENCY, min(max_concurrency, SQS_MAX_MAXIMUM_CONCURRENCY))
    if reserved_concurrency is not None:
        desired = min(desired, max(SQS_MIN_MAXIMUM_CONCURRENCY, reserved_concurrency))
    return desired


class EventSourceMappingReconciler:
    """Sets `ScalingConfig.MaximumConcurrency` of a function's SQS mappings from the tunables."""

    def __init__(self, client: LambdaClient) -> None:
        self._client = client

    def reconcile(self, function_name: str, max_concurrency: int) -> list[dict[str, Any]]:
        """The changes made: `[{"uuid", "from", "to"}]` (empty when every mapping already agrees)."""
        reserved = self._client.get_function_concurrency(FunctionName=function_name).get(
            "ReservedConcurrentExecutions")
        desired = mapping_concurrency(max_concurrency, reserved)
        changes = []
        for mapping in self._mappings(function_name):
            if ":sqs:" not in str(mapping.get("EventSourceArn", "")):
                continue  # only SQS mappings have a MaximumConcurrency
            current = (mapping.get("ScalingConfig") or {}).get("MaximumConcurrency")
            if current == desired:
                continue
            self._client.update_event_source_mapping(UUID=mapping["UUID"], ScalingConfig={"MaximumConcurrency": desired})
            changes.append({"uuid": mapping["UUID"], "function": function_name, "from": current, "to": desired,
                            "reserved_concurrency": reserved})
        return changes

    def _mappings(self, function_name: str) -> list[EventSourceMappingConfigurationTypeDef]:
        mappings: list[EventSourceMappingConfigurationTypeDef] = []
        marker: dict[str, str] = {}
        while True:
            response = self._client.list_event_source_mappings(FunctionName=function_name, **marker)
            mappings += response.get("EventSourceMappings", [])
            if not response.get("NextMarker"):
                return mappings
            marker = {"Marker": response["NextMarker"]}

"""Requests through the deployed API, as a client sends them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localcloud.drivers.legacy import legacy_outputs, wait_for_delivery
from localcloud.drivers.payments import (
    payment_execution_name,
    payment_orders,
    payment_outputs,
    seed_inventory,
)
from localcloud.drivers.common import layer_stack, wait_for_executions
from localcloud.emulator.api_gateway import LocalRestApi
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack

# The client whose key the demo and the tests send (cdk.json's `ingress.tiers.partner.api_keys`).
DEMO_CLIENT = "example-partner-client"


def local_api(cloud: LocalCloud, stacks: Mapping[str, DeployedStack]) -> LocalRestApi:
    ingress = layer_stack(stacks, "Ingress")
    return LocalRestApi(cloud, ingress.outputs["RestApiId"])


def api_key(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], client: str = DEMO_CLIENT) -> str:
    """The value of the key the stack created for `client`, as its owner reads it (`get-api-key --include-value`)."""
    ingress = layer_stack(stacks, "Ingress")
    key_id = ingress.outputs[f"ApiKeyId{''.join(part.capitalize() for part in client.split('-'))}"]
    return cloud.client("apigateway").get_api_key(apiKey=key_id, includeValue=True)["value"]


@dataclass(frozen=True)
class IngressRun:
    """What the API answered: a payment, its state once its workflow ended, its repeat, a malformed payment,
    and a legacy record with the status it reached."""

    first: Any
    state: Any
    repeat: Any
    malformed: Any
    queued: Any
    record_status: str | None


def run(cloud: LocalCloud, stacks: Mapping[str, DeployedStack]) -> IngressRun:
    """One valid payment, its repeat, one malformed payment and one legacy record through the API."""
    api = local_api(cloud, stacks)
    payments, legacy = payment_outputs(stacks), legacy_outputs(stacks)
    sku = f"demo-{uuid.uuid4().hex[:8]}"
    seed_inventory(cloud, payments["inventory_table"], {sku: 10})
    (order,) = payment_orders(1, prefix=f"api-{uuid.uuid4().hex[:8]}", skus=(sku,))
    headers = {"x-api-key": api_key(cloud, stacks)}
    first = api.request("POST", "/payments", body=order, headers=headers)
    wait_for_executions(cloud, payments["state_machine_arn"], [payment_execution_name(order["order_id"])],
                        timeout_sec=60)
    repeat = api.request("POST", "/payments", body=order, headers=headers)
    malformed = api.request("POST", "/payments", body={**order, "order_id": f"{order['order_id']}-x",
                                                       "amount": "lots"}, headers=headers)
    state = api.request("GET", f"/payments/{order['order_id']}", headers=headers)
    record: dict[str, Any] = {"record_id": f"api-{uuid.uuid4().hex[:8]}", "payload": {"account": "ACC00001"}}
    queued = api.request("POST", "/legacy-records", body=record, headers=headers)
    delivered = wait_for_delivery(cloud, legacy["records_table"], [record["record_id"]], timeout_sec=30)
    return IngressRun(first, state, repeat, malformed, queued, delivered.get(record["record_id"], {}).get("status"))

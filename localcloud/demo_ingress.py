"""Requests through the deployed API, as a client sends them: the ingress path of the demo and the tests."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from localcloud.api_gateway import LocalRestApi
from localcloud.cloud import LocalCloud
from localcloud.deployer import DeployedStack
from localcloud.demo_workflows import (
    legacy_outputs,
    payment_execution_name,
    payment_orders,
    payment_outputs,
    seed_inventory,
    wait_for_delivery,
    wait_for_executions,
)
from localcloud.downstream_simulator import DownstreamSimulator

# Any value: the emulated API checks that a key is present, not which plan holds it.
DEMO_API_KEY = "demo-partner-key"


def local_api(cloud: LocalCloud, stacks: Mapping[str, DeployedStack]) -> LocalRestApi:
    (ingress,) = [stack for name, stack in stacks.items() if name.endswith("-Ingress")]
    return LocalRestApi(cloud, ingress.outputs["RestApiId"])


def run_ingress(
    cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Mapping[str, DownstreamSimulator],
) -> str:
    """One valid payment, its repeat, one malformed payment and one legacy record through the API; one line."""
    api = local_api(cloud, stacks)
    payments, legacy = payment_outputs(stacks), legacy_outputs(stacks)
    sku = f"demo-{uuid.uuid4().hex[:8]}"
    seed_inventory(cloud, payments["inventory_table"], {sku: 10})
    (order,) = payment_orders(1, prefix=f"api-{uuid.uuid4().hex[:8]}", skus=(sku,))
    headers = {"x-api-key": DEMO_API_KEY}
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
    return (
        f"ingress: POST /payments {first.status} then {state.json().get('status')} at GET /payments/{{id}},"
        f" repeated {repeat.status} ({repeat.json().get('status')}), malformed {malformed.status};"
        f" POST /legacy-records {queued.status} then {delivered.get(record['record_id'], {}).get('status')}"
    )

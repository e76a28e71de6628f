"""The control loop driven on the emulator: caller metrics and AWS's events in, SSM tunables out.

moto runs no alarm actions and the handlers' EMF lines never reach its CloudWatch, so the metrics a
minute of calls would have produced are put directly, and the controller is invoked with the event
AWS would deliver (a `CloudWatch Alarm State Change`, or the minute schedule's `Scheduled Event`),
its time naming the minute the metrics were put in.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from localcloud.drivers.common import layer_stack, run_execution
from localcloud.drivers.crm_batch import crm_batch_outputs, seed_segment
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import DownstreamSimulator
from throttling.core import names
from throttling.core.controller import evaluated_period


def tunables_parameter(downstream: str, stage: str = "dev") -> str:
    return names.downstream_tunables_parameter(stage, downstream)


def put_caller_minute(cloud: LocalCloud, downstream: str, at: float, *, calls: float, throttled: float = 0,
                      unavailable: float = 0, latency_ms: float = 200, delay_sec: float = 30) -> None:
    """Put one minute of a caller's metrics, as its EMF lines would: the minute the controller judges at `at`."""
    start, _ = evaluated_period(at, 60, delay_sec)
    dimensions = [{"Name": names.DOWNSTREAM_DIMENSION, "Value": downstream},
                  {"Name": names.SERVICE_DIMENSION, "Value": f"{downstream}-caller"}]
    stamp = datetime.fromtimestamp(start + 5, tz=timezone.utc)
    data = [
        {"MetricName": names.DOWNSTREAM_CALLS, "Value": calls, "Unit": "Count"},
        {"MetricName": names.DOWNSTREAM_THROTTLED, "Value": throttled, "Unit": "Count"},
        {"MetricName": names.DOWNSTREAM_UNAVAILABLE, "Value": unavailable, "Unit": "Count"},
        {"MetricName": names.DOWNSTREAM_LATENCY, "Values": [latency_ms], "Counts": [max(1.0, calls - throttled)],
         "Unit": "Milliseconds"},
    ]
    cloud.client("cloudwatch").put_metric_data(
        Namespace=names.METRICS_NAMESPACE, MetricData=[{**d, "Dimensions": dimensions, "Timestamp": stamp} for d in data])


def iso(epoch_sec: float) -> str:
    return datetime.fromtimestamp(epoch_sec, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def alarm_state_change(alarm_name: str, state: str, at: float, *, account: str = "123456789012",
                       region: str = "us-east-1") -> dict[str, Any]:
    """The event EventBridge delivers for an alarm's state change."""
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch", "account": account, "time": iso(at), "region": region,
        "resources": [f"arn:aws:cloudwatch:{region}:{account}:alarm:{alarm_name}"],
        "detail": {"alarmName": alarm_name, "state": {"value": state, "reason": "Threshold Crossed",
                                                      "timestamp": iso(at)},
                   "previousState": {"value": "OK" if state == "ALARM" else "ALARM"}},
    }


def scheduled_event(at: float, *, account: str = "123456789012", region: str = "us-east-1") -> dict[str, Any]:
    """The event the controller's minute schedule delivers."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": account, "time": iso(at), "region": region,
            "resources": [f"arn:aws:events:{region}:{account}:rule/ControllerSchedule"], "detail": {}}


def invoke_controller(cloud: LocalCloud, function_name: str, event: dict[str, Any]) -> dict[str, Any]:
    response = cloud.client("lambda").invoke(FunctionName=function_name, Payload=json.dumps(event))
    payload = json.loads(response["Payload"].read())
    if "FunctionError" in response:
        raise RuntimeError(f"the controller failed: {payload}")
    return payload


def decision_for(result: dict[str, Any], downstream: str) -> dict[str, Any]:
    (found,) = [d for d in result["decisions"] if d["downstream"] == downstream]
    return found


@dataclass(frozen=True)
class ControlLoopRun:
    """The controller's decision on the CRM's 429 alarm, the document it left in SSM, and the calls in flight at
    the CRM in the batch before and the batch after."""

    decision: dict[str, Any]
    document: dict[str, Any]
    peak_in_flight_before: int
    peak_in_flight_after: int


def run(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], crm: DownstreamSimulator, *,
        users: int = 12) -> ControlLoopRun:
    """A CRM batch, a 429 alarm for the CRM (20 % of 600 calls) and the controller's answer, then the next batch.

    The CRM's document and the controller's memory of it are restored afterwards.
    """
    loop = layer_stack(stacks, "ControlLoop")
    controller = loop.outputs["ControllerName"]
    ssm = cloud.client("ssm")
    name = tunables_parameter("crm")
    seed = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    batch = crm_batch_outputs(stacks)

    def run_batch() -> int:
        segment_id = f"loop-{uuid.uuid4().hex[:8]}"
        seed_segment(cloud, batch["segments_table"], segment_id, [f"user-{i:03d}" for i in range(users)])
        crm.reset()
        result = run_execution(cloud, batch["state_machine_arn"], {"segment_id": segment_id})
        if result.status != "SUCCEEDED":
            raise RuntimeError(f"the CRM batch ended {result.status}: {result.error} {result.cause}")
        return crm.stats()["max_in_flight"]

    try:
        ssm.put_parameter(Name=name, Type="String", Overwrite=True, Value=json.dumps(
            {"rate_per_sec": 9.9, "burst": 5, "max_concurrency": 6, "mode": "auto"}))
        peak_before = run_batch()
        now = time.time()
        put_caller_minute(cloud, "crm", now, calls=600, throttled=120)
        result = invoke_controller(cloud, controller, alarm_state_change("Throttling-dev-crm-ThrottleRate",
                                                                         "ALARM", now))
        crm_decision = decision_for(result, "crm")
        document = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
        peak_after = run_batch()
    finally:
        ssm.put_parameter(Name=name, Value=seed, Type="String", Overwrite=True)
        cloud.client("dynamodb").delete_item(TableName=loop.outputs["ControllerStateTableName"],
                                             Key={"pk": {"S": "crm"}})
    return ControlLoopRun(crm_decision, document, peak_before, peak_after)

"""The deployed shared limits at work: the callers' limiter in front of a downstream, and the lease sweep."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.emulator

TUNABLES = "/throttling/dev/downstreams/crm"


def invoke(cloud, function_name: str, event: dict) -> tuple[dict, str | None]:
    response = cloud.client("lambda").invoke(FunctionName=function_name, Payload=json.dumps(event))
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def test_the_shared_limiter_refuses_before_the_downstream_sees_the_call(cloud, deployed, fresh_simulators):
    # GIVEN an operator who allows the CRM one call per 100 s
    caller = deployed["Throttling-dev-Workflows"].outputs["CrmCallerName"]
    cloud.client("ssm").put_parameter(Name=TUNABLES, Overwrite=True, Type="String", Value=json.dumps(
        {"rate_per_sec": 0.01, "burst": 1, "max_concurrency": 1, "mode": "manual"}))
    try:
        # WHEN two calls arrive
        first, first_error = invoke(cloud, caller, {"path": "/users/1"})
        second, second_error = invoke(cloud, caller, {"path": "/users/2"})
    finally:
        cloud.client("ssm").put_parameter(Name=TUNABLES, Overwrite=True, Type="String", Value=json.dumps(
            {"rate_per_sec": 9.9, "burst": 5, "max_concurrency": 2, "mode": "auto"}))
    # THEN the second is refused by our limiter with the wait, and never reached the CRM
    assert first_error is None
    assert (second_error, second["errorType"]) == ("Handled", "RateLimited")
    assert 90 <= json.loads(second["errorMessage"])["retry_after_sec"] <= 100
    assert [r.path for r in fresh_simulators["crm"].requests] == ["/users/1"]


def test_the_sweep_reclaims_leases_whose_owners_died(cloud, deployed):
    # GIVEN a semaphore holding one dead owner's lease (expired a minute ago) and one live lease
    shared = deployed["Throttling-dev-SharedLimits"].outputs
    dynamodb = cloud.client("dynamodb")
    now = time.time()
    dynamodb.put_item(TableName=shared["SemaphoreTableName"], Item={
        "pk": {"S": "crm"}, "lease_count": {"N": "2"},
        "leases": {"M": {"dead-owner": {"N": str(now - 60)}, "live-owner": {"N": str(now + 600)}}},
    })
    # WHEN the scheduled sweep runs (invoked here as its schedule would)
    result, error = invoke(cloud, shared["LeaseReclaimerName"], {"source": "aws.events"})
    # THEN only the dead owner's lease is gone, and the count agrees
    assert error is None, result
    assert result == {"reclaimed": {"crm": ["dead-owner"]}}
    item = dynamodb.get_item(TableName=shared["SemaphoreTableName"], Key={"pk": {"S": "crm"}},
                             ConsistentRead=True)["Item"]
    assert set(item["leases"]["M"]) == {"live-owner"}
    assert item["lease_count"] == {"N": "1"}

"""The emulator's Lambda runtime: real code, per-function environments, Lambda's error shape and limits."""

from __future__ import annotations

import io
import json
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.emulator

FIXTURES = Path(__file__).with_name("fixture_functions")
ROLE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
     "Action": "sts:AssumeRole"}]})


@pytest.fixture(scope="module")
def role_arn(cloud) -> str:
    return cloud.client("iam").create_role(RoleName="probe", AssumeRolePolicyDocument=ROLE_POLICY)["Role"]["Arn"]


@pytest.fixture(scope="module")
def make_function(cloud, role_arn):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(FIXTURES / "probe.py", "probe.py")
    code = buffer.getvalue()

    def make(name: str, handler: str, *, env: dict | None = None, timeout: int = 30,
             reserved: int | None = None) -> str:
        arn = cloud.client("lambda").create_function(
            FunctionName=name, Runtime="python3.13", Role=role_arn, Handler=f"probe.{handler}",
            Code={"ZipFile": code}, Timeout=timeout, Environment={"Variables": env or {}},
        )["FunctionArn"]
        if reserved is not None:
            cloud.client("lambda").put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=reserved)
        return arn

    return make


def invoke(cloud, name: str, event: dict) -> tuple[dict, str | None]:
    response = cloud.client("lambda").invoke(FunctionName=name, Payload=json.dumps(event))
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def test_each_function_sees_only_its_own_environment_while_both_run_concurrently(cloud, make_function):
    # GIVEN two functions of the same code whose MARKER differs
    make_function("blue", "echo_environment", env={"MARKER": "blue"})
    make_function("green", "echo_environment", env={"MARKER": "green"})
    # WHEN both are invoked eight times at once, each call holding its environment a little
    calls = [("blue" if i % 2 else "green", i) for i in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda c: invoke(cloud, c[0], {"item": c[1], "hold_sec": 0.2}), calls))
    # THEN every call saw its own function's variable and its own item
    for (name, item), (payload, error) in zip(calls, results, strict=True):
        assert error is None
        assert (payload["marker"], payload["item"], payload["function_name"]) == (name, item, name)
    # AND the two functions never shared a process
    blue_pids = {p["pid"] for (n, _), (p, _) in zip(calls, results, strict=True) if n == "blue"}
    green_pids = {p["pid"] for (n, _), (p, _) in zip(calls, results, strict=True) if n == "green"}
    assert blue_pids.isdisjoint(green_pids)


def test_errors_come_back_in_lambdas_shape(cloud, make_function):
    make_function("failing", "fail")
    payload, error = invoke(cloud, "failing", {"item": 3})
    assert error == "Handled"
    assert payload["errorType"] == "CustomThrottle"
    assert payload["errorMessage"] == "asked to fail for item 3"
    assert isinstance(payload["stackTrace"], list)


def test_a_handler_that_overruns_its_timeout_is_stopped(cloud, make_function):
    make_function("overrun", "sleep", timeout=1)
    payload, error = invoke(cloud, "overrun", {"sec": 30})
    assert error == "Handled"
    assert payload == {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 1.00 seconds"}


def test_reserved_concurrency_throttles_the_call_beyond_it(cloud, make_function):
    # GIVEN a function limited to one environment, busy with a slow call
    make_function("single", "sleep", reserved=1)
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(invoke, cloud, "single", {"sec": 3})
        _wait_until_busy(cloud, "single")
        # WHEN a second call arrives THEN Lambda's 429 is returned, not a queue
        with pytest.raises(ClientError) as throttled:
            cloud.client("lambda", config=_no_retries()).invoke(FunctionName="single", Payload=b'{"sec": 0}')
        assert throttled.value.response["Error"]["Code"] == "TooManyRequestsException"
        assert slow.result()[0] == {"slept": 3}


def test_step_functions_retries_and_catches_lambda_errors_by_name(cloud, make_function, role_arn):
    # GIVEN a workflow that retries CustomThrottle once and then catches it
    arn = make_function("flaky", "fail")
    definition = {
        "Comment": "probe: retry and catch a Lambda error by its errorType",
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task", "Resource": arn, "Comment": "always raises CustomThrottle",
                "Retry": [{"ErrorEquals": ["CustomThrottle"], "IntervalSeconds": 1, "MaxAttempts": 1,
                           "BackoffRate": 2, "JitterStrategy": "FULL", "MaxDelaySeconds": 2}],
                "Catch": [{"ErrorEquals": ["CustomThrottle"], "ResultPath": "$.error", "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "Comment": "the error is data now", "End": True},
        },
    }
    output = _run_state_machine(cloud, "retry-catch", definition, role_arn, {"item": 1})
    # THEN the error reached the Catch by name, after one retry (two invocations in all)
    assert output["error"]["Error"] == "CustomThrottle"
    assert json.loads(output["error"]["Cause"])["errorMessage"] == "asked to fail for item 1"
    assert len([r for r in cloud.lambda_runtime.invocations if r.function_name == "flaky"]) == 2


def test_map_iterations_run_concurrently_within_max_concurrency(cloud, make_function, role_arn):
    # GIVEN a Map of nine items capped at three concurrent iterations, each holding its environment
    arn = make_function("mapped", "echo_environment", env={"MARKER": "mapped"})
    definition = {
        "Comment": "probe: concurrent Map iterations over one function",
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map", "Comment": "at most three in flight", "ItemsPath": "$.items", "MaxConcurrency": 3,
                "ItemProcessor": {"StartAt": "Call", "States": {"Call": {
                    "Type": "Task", "Resource": arn, "Comment": "returns its item and environment",
                    "Parameters": {"item.$": "$", "hold_sec": 0.3}, "End": True}}},
                "End": True,
            }
        },
    }
    output = _run_state_machine(cloud, "map", definition, role_arn, {"items": list(range(9))})
    # THEN every iteration got its own item back, from the right function
    assert [o["item"] for o in output] == list(range(9))
    assert {o["marker"] for o in output} == {"mapped"}
    # AND no more than three environments were ever needed
    assert 1 <= len({o["pid"] for o in output}) <= 3


def _run_state_machine(cloud, name: str, definition: dict, role_arn: str, payload: dict) -> dict:
    sfn = cloud.client("stepfunctions")
    machine = sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=role_arn)
    execution = sfn.start_execution(stateMachineArn=machine["stateMachineArn"], input=json.dumps(payload))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if described["status"] != "RUNNING":
            assert described["status"] == "SUCCEEDED", described
            return json.loads(described["output"])
        time.sleep(0.1)
    raise AssertionError(f"{name} still RUNNING after 120 s")


def _wait_until_busy(cloud, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if cloud.lambda_runtime.busy_environments(name) >= 1:
            return
        time.sleep(0.02)
    raise AssertionError(f"{name} never became busy")


def _no_retries():
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 1})

"""Step Functions rules the emulator teaches moto, each shown with the fix and without it.

The payload quota (256 KiB of compact UTF-8 per state input, output and task result, under the name
`States.DataLimitExceeded`), the errors no `States.ALL` takes, what `MaxConcurrencyPath` accepts and
the range of `States.MathAdd`. Each probe is a state machine of a few Pass, Task and Map states, so
the module runs in seconds.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from localcloud.emulator import patches

pytestmark = pytest.mark.emulator

LIMIT = patches.STATE_PAYLOAD_LIMIT_BYTES


def run(cloud, definition: dict[str, Any], payload: Any) -> dict[str, Any]:
    """Create, start and wait for a probe state machine; its execution's description, whatever the status."""
    sfn = cloud.client("stepfunctions")
    arn = sfn.create_state_machine(name=f"probe-{uuid.uuid4().hex[:12]}", definition=json.dumps(definition),
                                   roleArn="arn:aws:iam::123456789012:role/probe")["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, name="probe", input=json.dumps(payload))["executionArn"]
    deadline = time.monotonic() + 30
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "probe still RUNNING after 30 s"
        time.sleep(0.05)
    return described


def outcome(described: dict[str, Any]) -> tuple[str, Any]:
    """("SUCCEEDED", output) or ("FAILED", error name)."""
    if described["status"] == "SUCCEEDED":
        return "SUCCEEDED", json.loads(described["output"])
    return described["status"], described.get("error")


@pytest.fixture
def without() -> Iterator[Callable[[str], None]]:
    """`without("state_payload_limit")` takes that fix out for the test; every fix is back afterwards."""
    removed: list[str] = []

    def remove(name: str) -> None:
        patches.remove(name)
        removed.append(name)

    yield remove
    for name in removed:
        patches.apply(name)


def catching_all(state: dict[str, Any]) -> dict[str, Any]:
    """A probe running `state`, whose Catch on States.ALL ends in `Caught` with the error's name."""
    return {"StartAt": "Probe", "States": {
        "Probe": {**state, "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
                  "End": True},
        "Caught": {"Type": "Pass", "Parameters": {"caught.$": "$.error.Error"}, "End": True}}}


@pytest.fixture(scope="module")
def big_item_table(cloud) -> str:
    """A table holding one item of 300 KB: under DynamoDB's 400 KB, over Step Functions' 256 KiB."""
    dynamodb = cloud.client("dynamodb")
    dynamodb.create_table(TableName="payload-probe", BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    dynamodb.put_item(TableName="payload-probe", Item={"pk": {"S": "big"}, "value": {"S": "q" * 300_000}})
    return "payload-probe"


# -- the payload quota --------------------------------------------------------------------------------
PASS_THROUGH = {"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "Parameters": {"s.$": "$.s"}, "End": True}}}


def test_the_quota_is_256_kib_of_compact_json_to_the_byte(cloud):
    # GIVEN outputs {"s":"..."} of exactly the quota, and one byte more (8 bytes of JSON around the string)
    exactly, over = "x" * (LIMIT - 8), "x" * (LIMIT - 7)
    assert patches.state_payload_bytes({"s": exactly}) == LIMIT
    # THEN the first passes and the second fails with AWS's name for it
    assert outcome(run(cloud, PASS_THROUGH, {"s": exactly}))[0] == "SUCCEEDED"
    assert outcome(run(cloud, PASS_THROUGH, {"s": over})) == ("FAILED", "States.DataLimitExceeded")


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_text_is_counted_in_utf8_bytes_not_as_escapes_only_with_the_fix(cloud, without, patched):
    # GIVEN 100,000 accented letters: 200,000 bytes of UTF-8, 600,000 as \u00e9 escapes
    accented = "é" * 100_000
    assert patches.state_payload_bytes({"s": accented}) < LIMIT
    if not patched:
        without("state_payload_limit")
    # WHEN a state outputs them
    status, _ = outcome(run(cloud, PASS_THROUGH, {"s": accented}))
    # THEN AWS's count lets them through; moto alone refuses them at three times their size
    assert status == ("SUCCEEDED" if patched else "FAILED")


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
@pytest.mark.parametrize("where", ["task-parameters", "item-selector"])
def test_an_input_made_too_large_by_parameters_fails_only_with_the_fix(cloud, big_item_table, without, where, patched):
    # GIVEN an input of 150 KB that Parameters (or ItemSelector) doubles, and whose result is small again
    doubled = {"a.$": "$.s", "b.$": "$.s"}
    if where == "task-parameters":
        state = {"Type": "Task", "Resource": "arn:aws:states:::dynamodb:putItem", "ResultPath": None,
                 "Parameters": {"TableName": big_item_table,
                                "Item": {"pk": {"S": "doubled"}, "a": {"S.$": "$.s"}, "b": {"S.$": "$.s"}}}}
    else:
        state = {"Type": "Map", "ItemsPath": "$.items", "ItemSelector": doubled, "ResultPath": None,
                 "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": "Small",
                                   "States": {"Small": {"Type": "Pass", "Result": 1, "End": True}}}}
    if not patched:
        without("state_payload_limit")
    # WHEN it runs, with a Catch on States.ALL
    result = outcome(run(cloud, catching_all(state), {"s": "y" * 150_000, "items": [1]}))
    # THEN on AWS the state's input after Parameters is over the quota: the execution fails, uncaught;
    # moto alone never looks at it
    if patched:
        assert result == ("FAILED", "States.DataLimitExceeded")
    else:
        assert result[0] == "SUCCEEDED" and "caught" not in result[1]


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_a_task_result_over_the_quota_is_data_limit_exceeded_whatever_the_integration(
    cloud, big_item_table, without, patched
):
    # GIVEN a dynamodb:getItem of a 300 KB item, with a Catch on States.ALL
    state = {"Type": "Task", "Resource": "arn:aws:states:::dynamodb:getItem",
             "Parameters": {"TableName": big_item_table, "Key": {"pk": {"S": "big"}}}}
    if not patched:
        without("state_payload_limit")
    # WHEN it runs
    result = outcome(run(cloud, catching_all(state), {}))
    # THEN AWS fails the execution with States.DataLimitExceeded, which States.ALL does not take;
    # moto alone names it after DynamoDB, and the Catch takes it as if the read had failed
    if patched:
        assert result == ("FAILED", "States.DataLimitExceeded")
    else:
        assert result == ("SUCCEEDED", {"caught": "DynamoDB.AmazonDynamoDBException"})


def test_a_catch_that_names_data_limit_exceeded_takes_it(cloud, big_item_table):
    state = {"Type": "Task", "Resource": "arn:aws:states:::dynamodb:getItem",
             "Parameters": {"TableName": big_item_table, "Key": {"pk": {"S": "big"}}},
             "Catch": [{"ErrorEquals": ["States.DataLimitExceeded"], "ResultPath": "$.error", "Next": "Caught"}],
             "End": True}
    definition = {"StartAt": "Probe", "States": {
        "Probe": state, "Caught": {"Type": "Pass", "Parameters": {"caught.$": "$.error.Error"}, "End": True}}}
    assert outcome(run(cloud, definition, {})) == ("SUCCEEDED", {"caught": "States.DataLimitExceeded"})


# -- errors States.ALL does not take -------------------------------------------------------------------
@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_states_all_does_not_take_a_runtime_error_only_with_the_fix(cloud, without, patched):
    # GIVEN a read whose ResultSelector parses text that is not JSON, with a Catch on States.ALL
    cloud.client("ssm").put_parameter(Name="/probe/not-json", Value="{oops", Type="String", Overwrite=True)
    state = {"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:ssm:getParameter",
             "Parameters": {"Name": "/probe/not-json"},
             "ResultSelector": {"document.$": "States.StringToJson($.Parameter.Value)"}}
    if not patched:
        without("terminal_errors_escape_states_all")
    # WHEN it runs
    result = outcome(run(cloud, catching_all(state), {}))
    # THEN the runtime error fails the execution, as AWS documents; moto alone catches it
    assert result == (("FAILED", "States.Runtime") if patched else ("SUCCEEDED", {"caught": "States.Runtime"}))


# -- MaxConcurrencyPath ------------------------------------------------------------------------------
def map_with_concurrency_path() -> dict[str, Any]:
    return {"StartAt": "Each", "States": {"Each": {
        "Type": "Map", "ItemsPath": "$.items", "MaxConcurrencyPath": "$.concurrency",
        "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": "Item",
                          "States": {"Item": {"Type": "Pass", "End": True}}},
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}], "End": True},
        "Caught": {"Type": "Pass", "Result": "caught", "End": True}}}


@pytest.mark.parametrize("value", [0, 1, 40, 1000])
def test_max_concurrency_path_takes_a_whole_number(cloud, value):
    assert outcome(run(cloud, map_with_concurrency_path(), {"concurrency": value, "items": [1, 2]})) == (
        "SUCCEEDED", [1, 2])


@pytest.mark.parametrize("value", [2.5, "3", 1e15, 2**31, -1], ids=["fraction", "string", "1e15", "2^31", "negative"])
def test_max_concurrency_path_refuses_anything_else_as_aws_does_and_no_catch_takes_it(cloud, value):
    result = outcome(run(cloud, map_with_concurrency_path(), {"concurrency": value, "items": [1, 2]}))
    assert result == ("FAILED", "States.Runtime")


@pytest.mark.parametrize("value", [2.5, "3"], ids=["fraction", "string"])
def test_without_the_fix_moto_runs_a_fraction_or_a_string_as_a_concurrency(cloud, without, value):
    without("strict_max_concurrency_path")
    without("terminal_errors_escape_states_all")
    assert outcome(run(cloud, map_with_concurrency_path(), {"concurrency": value, "items": [1, 2]})) == (
        "SUCCEEDED", [1, 2])


# -- States.MathAdd ----------------------------------------------------------------------------------
ADD_ZERO = {"StartAt": "Add", "States": {"Add": {
    "Type": "Pass", "Parameters": {"sum.$": "States.MathAdd($.value, 0)"}, "End": True}}}


@pytest.mark.parametrize(("value", "rounded"), [(2.5, 3), (2.4999, 2), (-2.5, -2), (-2.6, -3), (7, 7)])
def test_math_add_rounds_a_fraction_to_the_nearest_integer_half_up_as_java_does(cloud, value, rounded):
    assert outcome(run(cloud, ADD_ZERO, {"value": value})) == ("SUCCEEDED", {"sum": rounded})


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_math_add_refuses_numbers_outside_the_documented_range_only_with_the_fix(cloud, without, patched):
    if not patched:
        without("math_add_integer_range")
    result = outcome(run(cloud, ADD_ZERO, {"value": 1e15}))
    assert result == (("FAILED", "States.Runtime") if patched else ("SUCCEEDED", {"sum": 10**15}))

"""Injected AWS errors reach every kind of caller, as AWS's own would, and only the calls they name."""

from __future__ import annotations

import json
import time
import urllib.request

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import ClientError

from localcloud.emulator import patches

pytestmark = pytest.mark.emulator

NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


def test_a_throttled_parameter_is_refused_as_aws_refuses_it_and_others_are_not(cloud):
    # GIVEN two parameters, and GetParameter of one of them throttled
    ssm = cloud.client("ssm", config=NO_RETRIES)
    ssm.put_parameter(Name="/faults/hot", Value="1", Type="String", Overwrite=True)
    ssm.put_parameter(Name="/faults/cold", Value="2", Type="String", Overwrite=True)
    with cloud.faults.inject("ssm", "GetParameter", code="ThrottlingException", message="Rate exceeded",
                             matches=lambda request: request.get("Name") == "/faults/hot") as fault:
        # WHEN both are read
        with pytest.raises(ClientError) as refused:
            ssm.get_parameter(Name="/faults/hot")
        other = ssm.get_parameter(Name="/faults/cold")

    # THEN the throttled one fails with AWS's code, status and message; the other is read; the fault counted one
    assert refused.value.response["Error"] == {"Code": "ThrottlingException", "Message": "Rate exceeded"}
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert other["Parameter"]["Value"] == "2"
    assert fault.hits == 1
    # AND once the block ends, nothing is refused
    assert ssm.get_parameter(Name="/faults/hot")["Parameter"]["Value"] == "1"


def test_a_fault_with_times_refuses_that_many_calls_then_lets_them_through(cloud):
    dynamodb = cloud.client("dynamodb", config=NO_RETRIES)
    dynamodb.create_table(TableName="faults", BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    dynamodb.put_item(TableName="faults", Item={"pk": {"S": "a"}})
    with cloud.faults.inject("dynamodb", "GetItem", code="ProvisionedThroughputExceededException", times=2):
        outcomes = []
        for _ in range(3):
            try:
                dynamodb.get_item(TableName="faults", Key={"pk": {"S": "a"}})
                outcomes.append("read")
            except ClientError as error:
                outcomes.append(error.response["Error"]["Code"])
    assert outcomes == ["ProvisionedThroughputExceededException"] * 2 + ["read"]


def test_a_query_protocol_call_gets_the_error_in_the_query_protocol(cloud):
    # API Gateway's SQS integration speaks the query protocol (a form body with Action=...).
    url = cloud.client("sqs").create_queue(QueueName="faults-query")["QueueUrl"]
    body = f"Action=SendMessage&QueueUrl={url}&MessageBody=hello&Version=2012-11-05"
    request = AWSRequest(method="POST", url=cloud.endpoint_url, data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    credentials = botocore.session.Session().get_credentials()
    SigV4Auth(credentials, "sqs", cloud.region).add_auth(request)
    with cloud.faults.inject("sqs", "SendMessage", code="KmsThrottled", status=400):
        prepared = urllib.request.Request(cloud.endpoint_url, data=body.encode(), headers=dict(request.headers),
                                          method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(prepared, timeout=10)
    answer = refused.value.read().decode()
    assert refused.value.code == 400
    assert "<Code>KmsThrottled</Code>" in answer and "<ErrorResponse>" in answer
    assert cloud.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "0"


def run_throttled_parameter_read(cloud, machine_name: str) -> dict:
    """A workflow reads a parameter with an aws-sdk task while GetParameter is throttled; its output."""
    ssm = cloud.client("ssm")
    ssm.put_parameter(Name="/faults/workflow", Value="{}", Type="String", Overwrite=True)
    definition = {
        "StartAt": "Read",
        "States": {
            "Read": {"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:ssm:getParameter",
                     "Parameters": {"Name": "/faults/workflow"}, "ResultPath": "$.read",
                     "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
                     "End": True},
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    sfn = cloud.client("stepfunctions")
    machine = sfn.create_state_machine(name=machine_name, definition=json.dumps(definition),
                                       roleArn=f"arn:aws:iam::{cloud.account_id}:role/faults")["stateMachineArn"]
    with cloud.faults.inject("ssm", "GetParameter", code="ThrottlingException", message="Rate exceeded"):
        execution = sfn.start_execution(stateMachineArn=machine, input="{}")["executionArn"]
        for _ in range(400):
            described = sfn.describe_execution(executionArn=execution)
            if described["status"] != "RUNNING":
                break
            time.sleep(0.05)
    assert described["status"] == "SUCCEEDED", described
    return json.loads(described["output"])


def test_a_state_machine_task_meets_the_fault_under_its_step_functions_error_name(cloud):
    # GIVEN a workflow that catches whatever its aws-sdk read of a parameter fails with
    # WHEN GetParameter is throttled for the run
    output = run_throttled_parameter_read(cloud, "faults-named")
    # THEN it caught AWS's name for it: the service and the error, both in PascalCase
    assert output["error"]["Error"] == "Ssm.ThrottlingException"
    assert "Rate exceeded" in output["error"]["Cause"]


def test_without_the_fix_moto_names_the_error_in_lower_case(cloud):
    patches.remove("aws_sdk_error_names")
    try:
        output = run_throttled_parameter_read(cloud, "faults-unnamed")
    finally:
        patches.apply("aws_sdk_error_names")
    # A Retry or Catch on Ssm.ThrottlingException would not match this.
    assert output["error"]["Error"] == "ssm.ThrottlingException"

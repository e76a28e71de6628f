"""Each moto fix the emulator applies, shown with and without it where the limitation is observable."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from localcloud.emulator import patches

pytestmark = pytest.mark.emulator

TOKENS = 200
THREADS = 8
PAUSE_SEC = 0.5


@pytest.fixture
def pause_after_condition_check(monkeypatch):
    """Hold every request for PAUSE_SEC between moto's condition check and its write.

    The race is real but its natural window is narrow; widening it makes the limitation show every
    time. With the fix, the pause is inside the request lock and changes nothing but speed.
    """
    import moto.dynamodb.models as dynamodb_models

    original = dynamodb_models.create_condition_expression_parser

    def pausing_parser(*args, **kwargs):
        parser = original(*args, **kwargs)
        parse = parser.parse

        def parse_then_pause():
            op = parse()
            check = op.expr

            def expr(item):
                result = check(item)
                time.sleep(PAUSE_SEC)
                return result

            op.expr = expr
            return op

        parser.parse = parse_then_pause
        return parser

    monkeypatch.setattr(dynamodb_models, "create_condition_expression_parser", pausing_parser)


def create_bucket(cloud, table: str, tokens: int) -> None:
    dynamodb = cloud.client("dynamodb")
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "bucket"}, "tokens": {"N": str(tokens)}})


def take_token(dynamodb, table: str) -> bool:
    try:
        dynamodb.update_item(
            TableName=table, Key={"pk": {"S": "bucket"}},
            UpdateExpression="SET tokens = tokens - :one",
            ConditionExpression="tokens >= :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )
        return True
    except ClientError as error:
        if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise


def race_for_the_last_token(cloud, table: str) -> int:
    """Eight callers released together against a bucket holding one token; how many got it."""
    create_bucket(cloud, table, tokens=1)
    clients = [cloud.client("dynamodb") for _ in range(THREADS)]
    start = threading.Barrier(THREADS)

    def contend(dynamodb) -> bool:
        start.wait()
        return take_token(dynamodb, table)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return sum(pool.map(contend, clients))


def test_one_token_goes_to_exactly_one_of_eight_concurrent_callers(cloud, pause_after_condition_check):
    assert race_for_the_last_token(cloud, "last-token-atomic") == 1


def test_without_the_fix_moto_gives_the_last_token_to_several_callers(cloud, pause_after_condition_check):
    # GIVEN the fix removed
    patches.remove("atomic_dynamodb")
    try:
        granted = race_for_the_last_token(cloud, "last-token-racy")
    finally:
        patches.apply("atomic_dynamodb")
    # THEN callers that passed the condition together all "took" the one token: why the fix exists
    assert granted > 1


def test_a_bucket_drained_by_eight_threads_grants_exactly_its_tokens(cloud):
    create_bucket(cloud, "bucket-drain", tokens=TOKENS)

    def drain(_: int) -> int:
        dynamodb = cloud.client("dynamodb")
        granted = 0
        while take_token(dynamodb, "bucket-drain"):
            granted += 1
        return granted

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        assert sum(pool.map(drain, range(THREADS))) == TOKENS


def test_jsonata_and_variables_evaluate(cloud):
    # GIVEN a JSONata workflow that assigns a variable and computes its output from it
    definition = {
        "Comment": "probe: JSONata and Variables",
        "QueryLanguage": "JSONata",
        "StartAt": "Double",
        "States": {
            "Double": {"Type": "Pass", "Comment": "assign", "Assign": {"factor": 2}, "Next": "Answer"},
            "Answer": {"Type": "Pass", "Comment": "use the variable",
                       "Output": {"doubled": "{% $states.input.value * $factor %}",
                                  "ids": "{% $states.input.users.id %}"},
                       "End": True},
        },
    }
    output = run(cloud, "jsonata", definition, {"value": 21, "users": [{"id": "a"}, {"id": "b"}]})
    # THEN the expressions were evaluated
    assert output == {"doubled": 42, "ids": ["a", "b"]}


def test_state_machines_from_cloudformation_can_be_executed(cloud):
    # GIVEN a state machine created by a CloudFormation stack
    template = {"Resources": {
        "Role": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"},
                                "Action": "sts:AssumeRole"}]}}},
        "Machine": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
            "RoleArn": {"Fn::GetAtt": ["Role", "Arn"]},
            "DefinitionString": json.dumps({"StartAt": "Hello", "States": {
                "Hello": {"Type": "Pass", "Result": {"from": "cloudformation"}, "End": True}}})}},
    }, "Outputs": {"Arn": {"Value": {"Ref": "Machine"}}}}
    cfn = cloud.client("cloudformation")
    cfn.create_stack(StackName="machine", TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_IAM"])
    arn = cfn.describe_stacks(StackName="machine")["Stacks"][0]["Outputs"][0]["OutputValue"]
    # WHEN it is started THEN it runs (without the fix StartExecution finds no such machine)
    assert wait_for(cloud, arn, {}) == {"from": "cloudformation"}


def run(cloud, name: str, definition: dict, payload: dict):
    sfn = cloud.client("stepfunctions")
    role = "arn:aws:iam::123456789012:role/probe"
    arn = sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=role)["stateMachineArn"]
    return wait_for(cloud, arn, payload)


def wait_for(cloud, arn: str, payload: dict):
    sfn = cloud.client("stepfunctions")
    execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps(payload))["executionArn"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            assert described["status"] == "SUCCEEDED", described
            return json.loads(described["output"])
        time.sleep(0.05)
    raise AssertionError("execution still RUNNING after 60 s")


def put_latencies(cloud, metric: str, at, values: list[float]) -> None:
    cloud.client("cloudwatch").put_metric_data(Namespace="Probe", MetricData=[
        {"MetricName": metric, "Timestamp": at, "Values": values, "Unit": "Milliseconds"}])


def percentiles(cloud, metric: str, start, stats: tuple[str, ...]) -> dict[str, list[float]]:
    from datetime import timedelta

    answer = cloud.client("cloudwatch").get_metric_data(
        StartTime=start, EndTime=start + timedelta(seconds=60),
        MetricDataQueries=[{"Id": f"s{i}", "MetricStat": {"Metric": {"Namespace": "Probe", "MetricName": metric},
                                                          "Period": 60, "Stat": stat}}
                           for i, stat in enumerate(stats)])
    return {stats[int(r["Id"][1:])]: r["Values"] for r in answer["MetricDataResults"]}


def test_get_metric_data_answers_percentiles(cloud):
    from datetime import datetime, timedelta, timezone

    # GIVEN 100 latencies of 1..100 ms in one minute
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=2)
    put_latencies(cloud, "Latency", start + timedelta(seconds=5), [float(v) for v in range(1, 101)])
    # WHEN percentiles are asked for THEN they are the nearest-rank ones, beside the plain statistics
    assert percentiles(cloud, "Latency", start, ("p50", "p99", "p99.9", "Average")) == {
        "p50": [50.0], "p99": [99.0], "p99.9": [100.0], "Average": [50.5]}


def test_without_the_fix_a_percentile_fails_the_whole_request(cloud):
    from datetime import datetime, timedelta, timezone

    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=2)
    put_latencies(cloud, "LatencyRaw", start + timedelta(seconds=5), [10.0, 20.0])
    patches.remove("cloudwatch_percentiles")
    try:
        with pytest.raises(ClientError) as error:
            percentiles(cloud, "LatencyRaw", start, ("p99",))
    finally:
        patches.apply("cloudwatch_percentiles")
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


KEY_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*",
                                                     "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}


def alarm_stack(alarm_name: str) -> dict:
    return {"Resources": {
        "Key": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": KEY_POLICY,
                                                        "Tags": [{"Key": "stage", "Value": "dev"}]}},
        "Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmName": alarm_name, "Namespace": "Probe", "MetricName": "Errors", "Statistic": "Sum", "Period": 60,
            "EvaluationPeriods": 1, "Threshold": 3, "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching"}},
    }, "Outputs": {"AlarmArn": {"Value": {"Fn::GetAtt": ["Alarm", "Arn"]}},
                   "KeyArn": {"Value": {"Fn::GetAtt": ["Key", "Arn"]}}}}


def test_cloudformation_creates_alarms_and_tagged_kms_keys(cloud):
    # GIVEN a stack with a tagged KMS key and an alarm whose ARN is an output
    cfn = cloud.client("cloudformation")
    cfn.create_stack(StackName="alarms", TemplateBody=json.dumps(alarm_stack("probe-alarm")))
    # THEN it completes, and the alarm exists as declared
    stack = cfn.describe_stacks(StackName="alarms")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    (alarm,) = cloud.client("cloudwatch").describe_alarms(AlarmNames=["probe-alarm"])["MetricAlarms"]
    assert (alarm["Threshold"], alarm["AlarmArn"]) == (3.0, {o["OutputKey"]: o["OutputValue"]
                                                             for o in stack["Outputs"]}["AlarmArn"])


@pytest.mark.parametrize("remove", ["alarms", "kms_key_tags"])
def test_without_either_fix_such_a_stack_fails(cloud, remove):
    patches.remove({"alarms": "cloudwatch_alarms_from_cloudformation",
                    "kms_key_tags": "kms_key_tags_from_cloudformation"}[remove])
    try:
        with pytest.raises(Exception):  # noqa: B017 - moto answers a 500 whose body is not even XML
            cloud.client("cloudformation").create_stack(StackName=f"no-{remove.replace('_', '-')}",
                                                        TemplateBody=json.dumps(alarm_stack(f"probe-{remove}")))
    finally:
        patches.apply("cloudwatch_alarms_from_cloudformation")
        patches.apply("kms_key_tags_from_cloudformation")


def insight_rule_stack(rule_name: str) -> dict:
    body = {"Schema": {"Name": "CloudWatchLogRule", "Version": 1}, "LogGroupNames": ["/aws/lambda/probe"],
            "LogFormat": "JSON", "Contribution": {"Keys": ["$.tenant"], "Filters": []}, "AggregateOn": "Count"}
    return {"Resources": {"Rule": {"Type": "AWS::CloudWatch::InsightRule", "Properties": {
        "RuleName": rule_name, "RuleState": "ENABLED", "RuleBody": json.dumps(body)}}},
        "Outputs": {"RuleArn": {"Value": {"Fn::GetAtt": ["Rule", "Arn"]}}}}


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_cloudformation_creates_insight_rules_only_with_the_fix(cloud, patched):
    # GIVEN a stack with one Contributor Insights rule
    name = f"probe-rule-{'patched' if patched else 'alone'}"
    if not patched:
        patches.remove("cloudwatch_insight_rules_from_cloudformation")
    try:
        # WHEN CloudFormation creates it
        cloud.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(insight_rule_stack(name)))
    except Exception:  # noqa: BLE001 - moto alone may fail the stack on the rule's GetAtt
        created = False
    else:
        created = True
    finally:
        patches.apply("cloudwatch_insight_rules_from_cloudformation")
    rules = {r["Name"]: r for r in cloud.client("cloudwatch").describe_insight_rules()["InsightRules"]}
    # THEN only with the fix does the rule exist, with its definition as declared
    assert (name in rules) is patched
    if patched:
        assert created and rules[name]["State"] == "ENABLED"
        assert json.loads(rules[name]["Definition"])["Contribution"]["Keys"] == ["$.tenant"]
        cloud.client("cloudformation").delete_stack(StackName=name)
        assert name not in {r["Name"] for r in cloud.client("cloudwatch").describe_insight_rules()["InsightRules"]}


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_definition_substitutions_from_cloudformation_need_the_fix(cloud, patched):
    # GIVEN a template whose state machine has a placeholder filled by DefinitionSubstitutions
    template = {"Resources": {"Machine": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
        "RoleArn": "arn:aws:iam::123456789012:role/any",
        "DefinitionString": '{"StartAt": "A", "States": {"A": {"Type": "Pass", "Comment": "${Why}", "End": true}}}',
        "DefinitionSubstitutions": {"Why": "filled"}}}}}
    if not patched:
        patches.remove("definition_substitutions_from_cloudformation")
    try:
        # WHEN CloudFormation creates it
        stack_name = f"substitutions-{'patched' if patched else 'alone'}"
        cfn = cloud.client("cloudformation")
        cfn.create_stack(StackName=stack_name, TemplateBody=json.dumps(template))
    finally:
        patches.apply("definition_substitutions_from_cloudformation")
    arn = cfn.describe_stack_resource(StackName=stack_name, LogicalResourceId="Machine")["StackResourceDetail"][
        "PhysicalResourceId"]
    definition = json.loads(cloud.client("stepfunctions").describe_state_machine(stateMachineArn=arn)["definition"])
    # THEN only the fix fills the placeholder, as CloudFormation does on AWS
    assert definition["States"]["A"]["Comment"] == ("filled" if patched else "${Why}")


def distributed_map(*, tolerance: dict | None = None, result_writer: dict | None = None) -> dict:
    """A Distributed Map over `$.items`: a child fails for an item starting with `bad`, and succeeds otherwise."""
    each = {
        "Type": "Map", "Comment": "one child execution per item", "ItemsPath": "$.items",
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}, "StartAt": "Check",
            "States": {
                "Check": {"Type": "Choice", "Comment": "bad items fail",
                          "Choices": [{"Variable": "$", "StringMatches": "bad*", "Next": "Bad"}], "Default": "Good"},
                "Bad": {"Type": "Fail", "Comment": "a failed child", "Error": "BadItem", "CausePath": "$"},
                "Good": {"Type": "Pass", "Comment": "a child that succeeds", "Parameters": {"item.$": "$"},
                         "End": True}}},
        **(tolerance or {}), "End": True}
    if result_writer:
        each["ResultWriter"] = {"Resource": "arn:aws:states:::s3:putObject", "Parameters": result_writer}
    return {"Comment": "probe: a Distributed Map", "StartAt": "Each", "States": {"Each": each}}


def run_to_the_end(cloud, name: str, definition: dict, payload: dict) -> dict:
    """Create, start and wait for a state machine; its execution's description, whatever the status."""
    sfn = cloud.client("stepfunctions")
    arn = sfn.create_state_machine(name=name, definition=json.dumps(definition),
                                   roleArn="arn:aws:iam::123456789012:role/probe")["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps(payload))["executionArn"]
    deadline = time.monotonic() + 60
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "execution still RUNNING after 60 s"
        time.sleep(0.05)
    return described


def items(good: int, bad: int) -> dict:
    return {"items": [f"bad-{i}" for i in range(bad)] + [f"good-{i}" for i in range(good)]}


@pytest.mark.parametrize(("tolerance", "bad", "status"), [
    ({"ToleratedFailurePercentage": 10}, 2, "SUCCEEDED"),
    ({"ToleratedFailurePercentage": 10}, 3, "FAILED"),
    ({"ToleratedFailureCount": 2}, 2, "SUCCEEDED"),
    ({"ToleratedFailureCount": 2}, 3, "FAILED"),
    ({}, 1, "FAILED"),
], ids=["percent-within", "percent-past", "count-within", "count-past", "none-set"])
def test_a_distributed_map_fails_past_its_tolerated_failures(cloud, tolerance, bad, status):
    # GIVEN 20 items of which `bad` fail their child execution
    described = run_to_the_end(cloud, f"tolerance-{uuid.uuid4().hex[:8]}", distributed_map(tolerance=tolerance),
                               items(20 - bad, bad))
    # THEN the Map Run fails as AWS's does once the failures exceed the threshold (any failure when none is set)
    assert described["status"] == status
    if status == "FAILED":
        assert (described["error"], described["cause"]) == (
            "States.ExceedToleratedFailureThreshold", "The specified tolerated failure threshold was exceeded")


def test_without_the_fix_a_whole_percentage_is_refused_and_no_threshold_applies(cloud):
    patches.remove("distributed_map_failure_tolerance")
    try:
        # WHEN the percentage is written as AWS takes it THEN moto refuses the whole state machine
        with pytest.raises(ClientError, match="ToleratedFailurePercentage"):
            run_to_the_end(cloud, "tolerance-int", distributed_map(tolerance={"ToleratedFailurePercentage": 10}),
                           items(17, 3))
        # AND written as moto parses it, 3 of 20 failed children (15%) do not fail the Map Run, nor do any
        assert run_to_the_end(cloud, "tolerance-float", distributed_map(
            tolerance={"ToleratedFailurePercentage": 10.0}), items(17, 3))["status"] == "SUCCEEDED"
        assert run_to_the_end(cloud, "tolerance-none", distributed_map(), items(0, 20))["status"] == "SUCCEEDED"
    finally:
        patches.apply("distributed_map_failure_tolerance")


def written_results(cloud, bucket: str, output: dict) -> tuple[dict, dict[str, list[dict]]]:
    s3 = cloud.client("s3")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=output["ResultWriterDetails"]["Key"])["Body"].read())
    return manifest, {status: [e for f in files for e in json.loads(s3.get_object(Bucket=bucket, Key=f["Key"])[
        "Body"].read())] for status, files in manifest["ResultFiles"].items()}


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_result_writer_exports_each_child_execution_to_s3_only_with_the_fix(cloud, patched):
    # GIVEN a Distributed Map that tolerates failures and writes its results under runs/
    bucket = f"results-{'patched' if patched else 'alone'}"
    cloud.client("s3").create_bucket(Bucket=bucket)
    definition = distributed_map(tolerance={"ToleratedFailurePercentage": 50},
                                 result_writer={"Bucket": bucket, "Prefix": "runs"})
    if not patched:
        patches.remove("distributed_map_result_writer")
    try:
        # WHEN 3 items succeed and 1 fails
        described = run_to_the_end(cloud, f"writer-{bucket}", definition, items(3, 1))
    finally:
        patches.apply("distributed_map_result_writer")
    # THEN in both the state's output is where the results went, as on AWS
    output = json.loads(described["output"])
    map_run_id = output["MapRunArn"].split(":")[-1]
    assert output["ResultWriterDetails"] == {"Bucket": bucket, "Key": f"runs/{map_run_id}/manifest.json"}
    manifest, results = written_results(cloud, bucket, output)
    if not patched:
        # AND moto alone lists no result file, so nothing says what any child returned or why it failed
        assert manifest["ResultFiles"] == {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        return
    # AND with the fix each child execution is in the file of its outcome, with its output or its error
    assert manifest["ResultFiles"]["SUCCEEDED"][0]["Key"] == f"runs/{map_run_id}/SUCCEEDED_0.json"
    assert sorted(json.loads(e["Output"])["item"] for e in results["SUCCEEDED"]) == ["good-0", "good-1", "good-2"]
    (failed,) = results["FAILED"]
    assert (failed["Status"], failed["Error"], failed["Cause"], json.loads(failed["Input"])) == (
        "FAILED", "BadItem", "bad-0", "bad-0")
    assert failed["ExecutionArn"].startswith(output["MapRunArn"].split(":mapRun:")[0] + ":execution:")


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_aws_sdk_tasks_speak_pascal_case_only_with_the_fix(cloud, patched):
    # GIVEN a Task on Step Functions' own camelCase API, written as AWS documents it (PascalCase)
    definition = {"Comment": "probe: an aws-sdk Task", "StartAt": "Describe", "States": {"Describe": {
        "Type": "Task", "Comment": "describe this very state machine",
        "Resource": "arn:aws:states:::aws-sdk:sfn:describeStateMachine",
        "Parameters": {"StateMachineArn.$": "$$.StateMachine.Id"}, "End": True}}}
    if not patched:
        patches.remove("aws_sdk_pascal_case")
    try:
        described = run_to_the_end(cloud, f"sdk-{'patched' if patched else 'alone'}", definition, {})
    finally:
        patches.apply("aws_sdk_pascal_case")
    if not patched:
        # THEN moto alone hands `StateMachineArn` to botocore, which knows only `stateMachineArn`
        assert (described["status"], described["error"]) == ("FAILED", "States.Runtime")
        return
    # THEN with the fix the call is made and answered in PascalCase, its timestamps as text
    output = json.loads(described["output"])
    assert (output["Name"], output["Type"]) == ("sdk-patched", "STANDARD")
    assert isinstance(output["CreationDate"], str)


def waiting_machine(cloud, name: str) -> str:
    """A state machine whose executions wait a minute, so a test decides when each one ends (StopExecution)."""
    definition = {"Comment": "probe: a long wait", "StartAt": "Wait",
                  "States": {"Wait": {"Type": "Wait", "Comment": "held open by the test", "Seconds": 60, "End": True}}}
    return cloud.client("stepfunctions").create_state_machine(
        name=name, definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/probe")["stateMachineArn"]


def test_a_start_repeated_while_its_execution_runs_returns_that_execution_and_only_then(cloud):
    # Step Functions' own idempotency (Standard workflows), which POST /payments relies on; moto 5.2.5
    # keeps it without a fix, and this pins it down.
    sfn = cloud.client("stepfunctions")
    arn = waiting_machine(cloud, f"idempotent-{uuid.uuid4().hex[:6]}")
    # GIVEN a running execution
    first = sfn.start_execution(stateMachineArn=arn, name="order-1", input='{"amount": "19.99"}')
    # WHEN it is started again with the same name and input THEN the same execution is answered
    again = sfn.start_execution(stateMachineArn=arn, name="order-1", input='{"amount": "19.99"}')
    assert (again["executionArn"], again["startDate"]) == (first["executionArn"], first["startDate"])
    # AND the same name with another input is refused
    with pytest.raises(ClientError, match="ExecutionAlreadyExists"):
        sfn.start_execution(stateMachineArn=arn, name="order-1", input='{"amount": "20.00"}')
    # AND once the execution has ended, even the same input is refused
    sfn.stop_execution(executionArn=first["executionArn"])
    # (moto's execution thread may still be unwinding the Wait it was stopped in: wait until it reports the end)
    deadline = time.monotonic() + 5
    while sfn.describe_execution(executionArn=first["executionArn"])["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the stopped execution never ended"
        time.sleep(0.01)
    with pytest.raises(ClientError, match="ExecutionAlreadyExists"):
        sfn.start_execution(stateMachineArn=arn, name="order-1", input='{"amount": "19.99"}')
    assert [e["name"] for e in sfn.list_executions(stateMachineArn=arn)["executions"]] == ["order-1"]


# (An empty name or one past 80 characters never leaves botocore, which checks the lengths itself.)
BAD_EXECUTION_NAMES = ["order-abc\n", "order abc", "order/abc", "order:abc", "order-\x7f", "tab\there", "a{b}",
                       "50%", "\u0085next-line"]


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_an_execution_name_step_functions_refuses_is_refused_only_with_the_fix(cloud, patched):
    sfn = cloud.client("stepfunctions")
    arn = waiting_machine(cloud, f"names-{'patched' if patched else 'alone'}")
    if not patched:
        patches.remove("execution_name_rules")
    try:
        outcomes = {}
        for name in BAD_EXECUTION_NAMES:
            try:
                started = sfn.start_execution(stateMachineArn=arn, name=name, input="{}")
                outcomes[name] = "started"
                sfn.stop_execution(executionArn=started["executionArn"])
            except ClientError as error:
                outcomes[name] = error.response["Error"]["Code"]
        # A name within the rules starts either way: letters, digits, '-' and '_', 80 characters
        good = sfn.start_execution(stateMachineArn=arn, name="order-" + "A_9-" * 18 + "zz", input="{}")
        sfn.stop_execution(executionArn=good["executionArn"])
    finally:
        patches.apply("execution_name_rules")
    # THEN moto alone starts every one of them, though AWS refuses each; with the fix each is refused
    # as AWS refuses it, and nothing starts
    assert outcomes == dict.fromkeys(BAD_EXECUTION_NAMES, "InvalidName" if patched else "started")
@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_dynamodb_numbers_keep_38_digits_and_refuse_more_only_with_the_fix(cloud, patched):
    # GIVEN a table holding a number of 28 significant digits (a limiter's TAT on its time grid has as many)
    dynamodb = cloud.client("dynamodb")
    table = f"numbers-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "n"}, "tat": {"N": "1700000000.123456789012345678"}})
    if not patched:
        patches.remove("dynamodb_number_precision")
    try:
        # WHEN a sum needs 29 digits, and an item holds a number of 39
        dynamodb.update_item(TableName=table, Key={"pk": {"S": "n"}}, UpdateExpression="ADD tat :tiny",
                             ExpressionAttributeValues={":tiny": {"N": "0.0000000000000000001"}})
        stored = dynamodb.get_item(TableName=table, Key={"pk": {"S": "n"}}, ConsistentRead=True)["Item"]["tat"]["N"]
        try:
            dynamodb.put_item(TableName=table, Item={"pk": {"S": "long"}, "n": {"N": "1" * 39}})
            refused = None
        except ClientError as error:
            refused = error.response["Error"]
    finally:
        patches.apply("dynamodb_number_precision")
    if not patched:
        # THEN moto alone rounds the sum to 28 digits (the ADD is lost) and stores the 39 digits
        assert stored == "1700000000.123456789012345678"
        assert refused is None
        return
    # THEN with the fix the sum is exact, as DynamoDB keeps it, and 39 digits are refused as DynamoDB refuses them
    assert stored == "1700000000.1234567890123456781"
    assert refused == {"Code": "ValidationException", "Message": patches.DYNAMODB_TOO_MANY_DIGITS}


def attributes(count: int) -> dict:
    return {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(count)}


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_sqs_refuses_an_eleventh_attribute_and_a_message_over_its_size_with_its_attributes_only_with_the_fix(
    cloud, patched
):
    # GIVEN a queue taking messages of at most 1,024 bytes (SQS's smallest MaximumMessageSize)
    sqs = cloud.client("sqs")
    url = sqs.create_queue(QueueName=f"limits-{uuid.uuid4().hex[:8]}", Attributes={"MaximumMessageSize": "1024"})[
        "QueueUrl"]
    # ten one-letter attributes: 2 + 6 + 1 bytes each, 90 in all
    exactly_full = "x" * (1024 - 90)
    refused_sends = {
        "eleven attributes": {"MessageBody": "x", "MessageAttributes": attributes(11)},
        "a body that fits, with its attribute, does not": {"MessageBody": "x" * 1020,
                                                           "MessageAttributes": attributes(1)},
        "600 characters of 2 bytes each": {"MessageBody": "\u00e9" * 600},
    }
    if not patched:
        patches.remove("sqs_message_limits")
    try:
        outcomes = {}
        for name, send in refused_sends.items():
            try:
                sqs.send_message(QueueUrl=url, **send)
                outcomes[name] = "queued"
            except ClientError as error:
                outcomes[name] = error.response["Error"]["Message"]
        # WHEN a message exactly at the limit with ten attributes is sent THEN it is queued either way
        sqs.send_message(QueueUrl=url, MessageBody=exactly_full, MessageAttributes=attributes(10))
    finally:
        patches.apply("sqs_message_limits")
    queued = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    if not patched:
        # THEN moto alone queues all three, though SQS refuses each
        assert outcomes == dict.fromkeys(refused_sends, "queued")
        assert queued["ApproximateNumberOfMessages"] == "4"
        return
    # THEN with the fix each is refused with SQS's message, and only the message at the limit is queued
    assert outcomes == {
        "eleven attributes": "Number of message attributes [11] exceeds the allowed maximum [10].",
        "a body that fits, with its attribute, does not":
            "One or more parameters are invalid. Reason: Message must be shorter than 1024 bytes.",
        "600 characters of 2 bytes each":
            "One or more parameters are invalid. Reason: Message must be shorter than 1024 bytes.",
    }
    assert queued["ApproximateNumberOfMessages"] == "1"


MIXED_QUERY_LANGUAGES = {
    "StartAt": "Stamp",
    "States": {
        "Stamp": {"Type": "Pass", "QueryLanguage": "JSONata", "Comment": "a JSONata state in a JSONPath machine",
                  "Output": "{% {'at': $millis() > 0} %}", "Next": "Keep"},
        "Keep": {"Type": "Pass", "Comment": "a JSONPath state after it", "Parameters": {"at.$": "$.at"}, "End": True},
    },
}


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_a_parse_reads_only_its_own_query_language_scopes_only_with_the_fix(cloud, patched):
    from moto.stepfunctions.parser.asl.component.common.query_language import QueryLanguage, QueryLanguageMode
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

    if not patched:
        patches.remove("query_language_scopes_per_parse")
    try:
        # GIVEN a parse in another thread that is inside a JSONata state (its scope open) ...
        elsewhere = Preprocessor()
        elsewhere._query_language_per_scope.append(QueryLanguage(query_language_mode=QueryLanguageMode.JSONata))
        # WHEN a machine mixing JSONPath and JSONata states is parsed meanwhile
        try:
            AmazonStateLanguageParser.parse(json.dumps(MIXED_QUERY_LANGUAGES))
            outcome = "parsed"
        except ValueError as error:
            outcome = str(error)
        elsewhere._query_language_per_scope.clear()
    finally:
        patches.apply("query_language_scopes_per_parse")
    # THEN moto alone reads the other parse's scope and refuses a valid machine (an execution doing so hangs);
    # with the fix each parse has its own scopes
    assert outcome == "parsed" if patched else "Unsupported declaration in QueryLanguage=JSONPath block" in outcome


def test_executions_of_a_mixed_query_language_machine_started_together_all_end(cloud):
    # GIVEN a machine with a JSONata state in a JSONPath machine
    sfn = cloud.client("stepfunctions")
    arn = sfn.create_state_machine(name=f"mixed-{uuid.uuid4().hex[:8]}", definition=json.dumps(MIXED_QUERY_LANGUAGES),
                                   roleArn="arn:aws:iam::123456789012:role/sfn")["stateMachineArn"]
    # WHEN 20 executions start at once
    with ThreadPoolExecutor(max_workers=20) as pool:
        started = list(pool.map(lambda i: sfn.start_execution(stateMachineArn=arn, name=f"run-{i}", input="{}"),
                                range(20)))
    # THEN every one of them ends, with the output its states computed
    outputs = []
    for execution in started:
        for _ in range(200):
            described = sfn.describe_execution(executionArn=execution["executionArn"])
            if described["status"] != "RUNNING":
                break
            time.sleep(0.05)
        outputs.append((described["status"], described.get("output")))
    assert outputs == [("SUCCEEDED", '{"at": true}')] * 20


def slow_children(seconds: int, max_concurrency: int) -> dict:
    """A Distributed Map whose every child waits `seconds`, at most `max_concurrency` of them at once to begin with."""
    return {"Comment": "probe: a Map Run to retune", "StartAt": "Each", "States": {"Each": {
        "Type": "Map", "Comment": "one slow child per item", "ItemsPath": "$.items", "MaxConcurrency": max_concurrency,
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}, "StartAt": "Work",
                          "States": {"Work": {"Type": "Wait", "Comment": "a child at work", "Seconds": seconds,
                                              "End": True}}},
        "End": True}}}


def running_children_after_update(cloud, name: str, *, start: int, update_to: int, items: int) -> tuple[int, int]:
    """Start a Map Run of `items` one-second children at `start`, set `update_to` once they run, and answer
    (the most children running before the update, the most running from 1.5 s after it until the end)."""
    sfn = cloud.client("stepfunctions")
    arn = sfn.create_state_machine(name=name, definition=json.dumps(slow_children(1, start)),
                                   roleArn="arn:aws:iam::123456789012:role/probe")["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps({"items": list(range(items))}))[
        "executionArn"]
    deadline = time.monotonic() + 60
    while not (runs := sfn.list_map_runs(executionArn=execution)["mapRuns"]):
        assert time.monotonic() < deadline, "no Map Run started"
        time.sleep(0.05)
    (map_run,) = runs

    def running() -> int:
        return sfn.describe_map_run(mapRunArn=map_run["mapRunArn"])["itemCounts"]["running"]

    before = 0
    while before < min(start, items):
        assert time.monotonic() < deadline, f"never {start} children at once (seen {before})"
        before = max(before, running())
        time.sleep(0.02)
    sfn.update_map_run(mapRunArn=map_run["mapRunArn"], maxConcurrency=update_to)
    assert sfn.describe_map_run(mapRunArn=map_run["mapRunArn"])["maxConcurrency"] == update_to
    time.sleep(1.5)  # the children already running finish
    after = 0
    while sfn.describe_execution(executionArn=execution)["status"] == "RUNNING":
        assert time.monotonic() < deadline, "execution still RUNNING after 60 s"
        after = max(after, running())
        time.sleep(0.02)
    assert sfn.describe_execution(executionArn=execution)["status"] == "SUCCEEDED"
    return before, after


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_update_map_run_lowers_the_children_a_running_map_run_runs_at_once_only_with_the_fix(cloud, patched):
    # GIVEN a running Map Run of 24 one-second children, 6 at once
    if not patched:
        patches.remove("distributed_map_run_follows_update")
    try:
        # WHEN UpdateMapRun sets its maxConcurrency to 2
        before, after = running_children_after_update(cloud, f"retune-down-{'patched' if patched else 'alone'}",
                                                      start=6, update_to=2, items=24)
    finally:
        patches.apply("distributed_map_run_follows_update")
    # THEN with the fix, once the 6 running finish, never more than 2 run at once, as on AWS; moto alone keeps 6
    assert before == 6
    assert after <= 2 if patched else after > 2, (before, after)


def test_update_map_run_raises_the_children_a_running_map_run_runs_at_once(cloud):
    # GIVEN a running Map Run of 16 one-second children, 1 at a time
    # WHEN UpdateMapRun sets its maxConcurrency to 4
    before, after = running_children_after_update(cloud, "retune-up", start=1, update_to=4, items=16)
    # THEN more children start: 4 run at once
    assert (before, after) == (1, 4)


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_map_runs_are_answered_while_an_execution_starts_only_with_the_fix(cloud, patched):
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    sfn = cloud.client("stepfunctions")
    arn = sfn.create_state_machine(name=f"starting-{'patched' if patched else 'alone'}",
                                   definition=json.dumps(slow_children(1, 2)),
                                   roleArn="arn:aws:iam::123456789012:role/probe")["stateMachineArn"]
    # GIVEN a Map Run in progress, and another execution caught in the instant StartExecution has listed it
    # but its interpreter does not exist yet
    running = sfn.start_execution(stateMachineArn=arn, name="running", input=json.dumps({"items": list(range(4))}))[
        "executionArn"]
    deadline = time.monotonic() + 30
    while not (runs := sfn.list_map_runs(executionArn=running)["mapRuns"]):
        assert time.monotonic() < deadline, "no Map Run started"
        time.sleep(0.05)
    starting = sfn.start_execution(stateMachineArn=arn, name="starting", input=json.dumps({"items": []}))["executionArn"]
    backend = stepfunctions_parser_backends[cloud.account_id][cloud.region]
    execution = backend.describe_execution(execution_arn=starting)
    worker, execution.exec_worker = execution.exec_worker, None
    if not patched:
        patches.remove("map_runs_while_an_execution_starts")
    try:
        # WHEN a controller lists the starting execution's Map Runs and describes the running one
        outcomes = []
        for call in (lambda: sfn.list_map_runs(executionArn=starting)["mapRuns"],
                     lambda: sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"])["status"]):
            try:
                outcomes.append(call())
            except ClientError as error:
                outcomes.append(error.response["ResponseMetadata"]["HTTPStatusCode"])
    finally:
        execution.exec_worker = worker
        patches.apply("map_runs_while_an_execution_starts")
    # THEN AWS's answers (no Map Run yet; the running one found) with the fix; moto alone fails the listing (and
    # the description too when it meets the starting execution first in its search)
    if patched:
        assert outcomes == [[], "RUNNING"], outcomes
    else:
        assert outcomes[0] == 500, outcomes


SECRET_STACK = {"Resources": {
    "ApiKey": {"Type": "AWS::SecretsManager::Secret", "Properties": {
        "Description": "a downstream's API key", "GenerateSecretString": {
            "SecretStringTemplate": "{}", "GenerateStringKey": "api_key", "ExcludePunctuation": True,
            "PasswordLength": 40}}},
}, "Outputs": {"SecretArn": {"Value": {"Ref": "ApiKey"}}}}


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_secrets_from_cloudformation_need_the_fix(cloud, patched):
    # GIVEN a stack with a secret whose value CloudFormation generates, and whose ARN is an output
    stack_name = f"secret-{'patched' if patched else 'alone'}"
    cfn = cloud.client("cloudformation")
    if not patched:
        patches.remove("secrets_from_cloudformation")
    secrets = cloud.client("secretsmanager")
    try:
        # WHEN CloudFormation creates it (moto creates a resource when something first reads it: read it here)
        cfn.create_stack(StackName=stack_name, TemplateBody=json.dumps(SECRET_STACK))
        outputs = cfn.describe_stacks(StackName=stack_name)["Stacks"][0].get("Outputs")
        names = [s["Name"] for s in secrets.list_secrets()["SecretList"]]
    finally:
        patches.apply("secrets_from_cloudformation")
    if not patched:
        # THEN moto alone creates no secret, and the stack has no ARN to give its callers
        assert [n for n in names if n.startswith(stack_name)] == [] and outputs is None
        cfn.delete_stack(StackName=stack_name)
        return
    (output,) = outputs
    # THEN with the fix Ref answers the ARN of a secret named after its stack and logical id, whose value is the template
    # with a generated 40-character key, as CloudFormation makes it
    described = secrets.describe_secret(SecretId=output["OutputValue"])
    assert described["ARN"] == output["OutputValue"] and described["Name"].startswith(f"{stack_name}-ApiKey-")
    value = json.loads(secrets.get_secret_value(SecretId=output["OutputValue"])["SecretString"])
    assert list(value) == ["api_key"] and len(value["api_key"]) == 40 and value["api_key"].isalnum()
    # AND deleting the stack deletes the secret
    cfn.delete_stack(StackName=stack_name)
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.describe_secret(SecretId=output["OutputValue"])

"""Use case 1 for large segments in the Workflows stack: the segments bucket, the Distributed Map workflow, its
grants and its trigger. The contract tests check the grants against the ASL file; these pin the resources."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template

from stacks.app_stacks import add_stacks

from tests.infra.cloudformation import referenced_ids


@pytest.fixture(scope="module")
def workflows(dev_assembly) -> Template:
    stacks, _ = dev_assembly
    return Template.from_stack(stacks["workflows"])


@pytest.fixture(scope="module")
def machine(workflows) -> tuple[str, dict]:
    return by_prefix(workflows, "AWS::StepFunctions::StateMachine", "CrmSegmentLarge")


def by_prefix(template: Template, resource_type: str, prefix: str) -> tuple[str, dict]:
    (found,) = [(i, r) for i, r in template.find_resources(resource_type).items() if i.startswith(prefix)]
    return found


def described(resource) -> str:
    """A granted resource as text: logical ids without their hash, pseudo parameters dropped, an import as the
    exported resource (`SegmentsBucket.Arn/runs/*`, `arn::ssm:us-east-1::parameter<TunablesDownstreamsCrm>`)."""
    if isinstance(resource, dict) and "Fn::Join" in resource:
        return "".join(described(part) for part in resource["Fn::Join"][1])
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        return f"{re.sub(r'[0-9A-F]{8}$', '', resource['Fn::GetAtt'][0])}.{resource['Fn::GetAtt'][1]}"
    if isinstance(resource, dict) and "Fn::ImportValue" in resource:
        generated = re.search(r"ExportsOutput(?:Ref|FnGetAtt)([A-Za-z]+?)[0-9A-F]{8}", resource["Fn::ImportValue"])
        return f"<{generated.group(1) if generated else resource['Fn::ImportValue']}>"  # a named export as named
    if isinstance(resource, dict) and "Ref" in resource:
        return "" if resource["Ref"].startswith("AWS::") else re.sub(r"[0-9A-F]{8}$", "", resource["Ref"])
    return str(resource)


def test_segments_are_kept_encrypted_private_tls_only_for_a_month_and_notify_eventbridge(workflows):
    bucket_id, bucket = by_prefix(workflows, "AWS::S3::Bucket", "SegmentsBucket")
    properties = bucket["Properties"]
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert set(properties["PublicAccessBlockConfiguration"].values()) == {True}
    assert properties["LifecycleConfiguration"]["Rules"] == [{"ExpirationInDays": 30, "Status": "Enabled"}]
    assert properties["NotificationConfiguration"] == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    (policy,) = [p["Properties"] for p in workflows.find_resources("AWS::S3::BucketPolicy").values()
                 if p["Properties"]["Bucket"] == {"Ref": bucket_id}]
    assert {"Bool": {"aws:SecureTransport": "false"}} in [s.get("Condition") for s in
                                                          policy["PolicyDocument"]["Statement"]]


def test_the_large_segment_workflow_is_a_standard_one_from_its_file_with_the_inline_batch_caller_and_dlq(
    workflows, machine
):
    _, resource = machine
    properties = resource["Properties"]
    assert properties["StateMachineType"] == "STANDARD"
    assert json.loads(properties["DefinitionString"])["States"]["EmailEachUser"]["ItemProcessor"][
        "ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert (properties["TracingConfiguration"], properties["LoggingConfiguration"]["Level"]) == ({"Enabled": True},
                                                                                                 "ALL")
    (inline,) = [r["Properties"]["DefinitionSubstitutions"] for i, r in
                 workflows.find_resources("AWS::StepFunctions::StateMachine").items() if i.startswith("CrmBatchEmail")]
    substitutions = properties["DefinitionSubstitutions"]
    for shared in ("CrmCallerFunctionArn", "DeadLetterQueueUrl", "CrmTunablesParameterName"):
        assert substitutions[shared] == inline[shared], shared
    (bucket_id, _) = by_prefix(workflows, "AWS::S3::Bucket", "SegmentsBucket")
    assert referenced_ids(substitutions["SegmentsBucketName"]) == {bucket_id}


def test_the_role_may_do_exactly_what_the_file_does_each_on_its_prefix_or_its_own_runs(workflows, machine):
    machine_id, resource = machine
    (role_id,) = referenced_ids(resource["Properties"]["RoleArn"])
    granted = sorted(
        (described(r), sorted(s["Action"] if isinstance(s["Action"], list) else [s["Action"]]))
        for p in workflows.find_resources("AWS::IAM::Policy").values() if {"Ref": role_id} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"] if s["Resource"] != "*"
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    )
    machine_name = re.sub(r"[0-9A-F]{8}$", "", machine_id)
    assert granted == sorted([
        ("CrmCallerFunction.Arn", ["lambda:InvokeFunction"]),
        ("CrmBatchEmailDeadLetterQueue.Arn", ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"]),
        ("SegmentsBucket.Arn/segments/*", ["s3:GetObject"]),
        ("SegmentsBucket.Arn/runs/*", ["s3:AbortMultipartUpload", "s3:GetObject", "s3:ListMultipartUploadParts",
                                       "s3:PutObject"]),
        (machine_name, ["states:StartExecution"]),
        (f"arn::states:us-east-1::execution:{machine_name}.Name:*", ["states:DescribeExecution",
                                                                      "states:StopExecution"]),
        (f"arn::states:us-east-1::execution:{machine_name}.Name/*", ["states:DescribeExecution",
                                                                      "states:StopExecution"]),
        # redriving a run redrives the children its Map Run failed or never started
        (f"arn::states:us-east-1::execution:{machine_name}.Name/*", ["states:RedriveExecution"]),
        (f"arn::states:us-east-1::mapRun:{machine_name}.Name/*", ["states:DescribeMapRun"]),
        ("arn::ssm:us-east-1::parameter<TunablesDownstreamsCrm>", ["ssm:DescribeParameters", "ssm:GetParameter",
                                                                  "ssm:GetParameterHistory", "ssm:GetParameters"]),
    ])


def test_every_segment_export_created_under_segments_starts_one_run_with_its_key(workflows, machine):
    machine_id, _ = machine
    bucket_id, _ = by_prefix(workflows, "AWS::S3::Bucket", "SegmentsBucket")
    (rule,) = [r for r in workflows.find_resources("AWS::Events::Rule").values()
               if referenced_ids(r["Properties"]["Targets"]) & {machine_id}]
    assert rule["Properties"]["EventPattern"] == {
        "source": ["aws.s3"], "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [{"Ref": bucket_id}]}, "object": {"key": [{"prefix": "segments/"}]}}}
    (target,) = rule["Properties"]["Targets"]
    assert target["InputTransformer"] == {"InputPathsMap": {"detail-object-key": "$.detail.object.key"},
                                          "InputTemplate": '{"segment_key":<detail-object-key>}'}


def test_the_stack_outputs_what_operators_and_the_demo_need(workflows):
    assert {"CrmSegmentLargeStateMachineArn", "SegmentsBucketName"} <= set(workflows.to_json()["Outputs"])


def test_the_distributed_map_batches_users_by_the_crms_max_batch_size_with_the_run_as_batch_input(
    machine, dev_config
):
    # GIVEN the deployed definition and the CRM's batch size in the stage's config
    _, resource = machine
    properties = resource["Properties"]
    states = json.loads(properties["DefinitionString"])["States"]
    crm = dev_config.downstream("crm")
    # THEN the ItemBatcher reads its batch size from the state PlanBatches fills from that config value, ...
    each = states["EmailEachUser"]
    assert each["ItemBatcher"] == {
        "MaxItemsPerBatchPath": "$.batching.max_items_per_batch",
        "BatchInput": {"segment_id.$": "$.segment_key", "tenant.$": "$.tenant",
                       "execution_name.$": "$$.Execution.Name"}}
    assert states["PlanBatches"]["Parameters"] == {
        "max_items_per_batch.$": "States.StringToJson('${CrmMaxBatchSize}')"}
    assert properties["DefinitionSubstitutions"]["CrmMaxBatchSize"] == str(crm.max_batch_size) == "50"
    # ... each item carries its own idempotency key, and a child sends its items in one batch request
    assert each["ItemSelector"]["idempotency_key.$"] == "States.Format('{}/{}', $$.Execution.Name, $$.Map.Item.Value.user_id)"
    payload = each["ItemProcessor"]["States"]["SendBatch"]["Parameters"]["Payload"]
    assert (payload["method"], payload["path"], payload["body"]["recipients.$"]) == ("POST", "/emails/batch", "$.Items")


def test_a_crm_without_a_batch_endpoint_fails_synth_saying_what_to_set(dev_config):
    # GIVEN the dev config with the CRM's max_batch_size removed
    config = dataclasses.replace(dev_config, downstreams=tuple(
        dataclasses.replace(d, max_batch_size=None) if d.name == "crm" else d for d in dev_config.downstreams))
    # WHEN the app is built THEN it refuses, naming the downstream and the setting
    with pytest.raises(ValueError, match=r"downstream 'crm' has no max_batch_size.*downstreams\.crm\.max_batch_size"):
        add_stacks(App(), config)


def test_the_controller_may_retune_exactly_the_running_map_runs_of_the_segment_workflow(dev_assembly, workflows,
                                                                                         machine):
    # GIVEN the control loop as synthesized
    stacks, _ = dev_assembly
    loop = Template.from_stack(stacks["control_loop"])
    (controller_role,) = [i for i in loop.find_resources("AWS::IAM::Role") if i.startswith("ControllerRole")]
    # WHEN its policy for Map Runs is read
    (policy,) = [p["Properties"] for i, p in loop.find_resources("AWS::IAM::Policy").items()
                 if i.startswith("ControllerRetunesMapRuns")]
    # THEN it is the controller's, and each action is granted on the one resource type it authorizes against:
    # the workflow, its executions, its Map Runs (named through the export of the workflow's name)
    assert policy["Roles"] == [{"Ref": controller_role}]
    granted = {(tuple(s["Action"]) if isinstance(s["Action"], list) else (s["Action"],), described(s["Resource"]))
               for s in policy["PolicyDocument"]["Statement"]}
    name_export = "Throttling-dev-Workflows:CrmSegmentLargeStateMachineName"
    assert granted == {
        (("states:ListExecutions",), "<CrmSegmentLargeStateMachine>"),
        (("states:ListMapRuns",), f"arn::states:us-east-1::execution:<{name_export}>:*"),
        (("states:DescribeMapRun", "states:UpdateMapRun"), f"arn::states:us-east-1::mapRun:<{name_export}>/*"),
    }
    machine_id, _ = machine
    (exported,) = [o["Value"] for o in workflows.to_json()["Outputs"].values()
                   if o.get("Export", {}).get("Name") == name_export]
    assert exported == {"Fn::GetAtt": [machine_id, "Name"]}
    # AND the CRM's plan names the workflow, so the controller knows whose Map Runs follow the CRM's setting
    (plan,) = [p["Properties"]["Value"] for i, p in loop.find_resources("AWS::SSM::Parameter").items()
               if i.startswith("CrmControllerPlan")]
    assert '"map_run_workflows":["' in json.dumps(plan).replace('\\"', '"')
    assert described(plan["Fn::Join"][1][1]) == "<CrmSegmentLargeStateMachine>"

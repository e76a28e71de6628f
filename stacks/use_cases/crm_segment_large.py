"""Use case 1 for large segments: a CSV object per segment, one child execution per batch of users, same CRM limits.

A segment too large for one execution (`crm_batch_email.INLINE_SEGMENT_MAX_USERS`) is a CSV object in
the segments bucket, e-mailed by a Distributed Map (`statemachines/crm_segment_large.asl.json`) whose
ItemBatcher groups up to the CRM's `max_batch_size` users per child, each sent in one request to the
CRM's batch endpoint through the same caller, tunables and dead-letter queue as the inline batch, which
must be registered first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Acknowledgment, ArnFormat, CfnOutput, Stack, Token, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn

from stacks.app_assets import statemachine_file
from stacks.patterns import AslStateMachine
from stacks.patterns.secure_defaults import encrypted_bucket
from stacks.shared_limits_stack import downstream_tunables_key
from stacks.use_cases.base import Layer, UseCase, UseCaseContext
from stacks.use_cases.crm_batch_email import CrmBatchEmail
from throttling.core import names

# Where segment exports are read from and where each run writes its users' outcomes.
SEGMENT_OBJECTS_PREFIX = "segments/"
SEGMENT_RUN_RESULTS_PREFIX = "runs/"
# Segment exports and run results name users: kept long enough to audit a run and redrive it (a failed
# execution can be redriven for 14 days), then deleted.
SEGMENT_OBJECTS_RETENTION_DAYS = 30


@dataclass(frozen=True)
class CrmSegmentLargeProps:
    """:param downstream: the configured downstream that sends the e-mails (the inline batch's, as a rule)."""

    downstream: str


class CrmSegmentLarge(UseCase[CrmSegmentLargeProps]):
    """The segments bucket, the Distributed Map workflow, its map-run grants and its trigger on a new export."""

    layer = Layer.WORKFLOWS

    def build(self, scope: Stack, context: UseCaseContext, props: CrmSegmentLargeProps) -> None:
        config, shared_limits, removal_policy = context.config, context.shared_limits, context.removal_policy
        crm = config.downstream(props.downstream)
        if crm.max_batch_size is None:
            raise ValueError(
                f"downstream {crm.name!r} has no max_batch_size: the large-segment workflow e-mails through its batch"
                f" endpoint; set stages.<stage>.downstreams.{crm.name}.max_batch_size in cdk.json to the most"
                " recipients one of its requests takes")
        crm_caller = context.caller(crm.name)
        # Users it could not e-mail go where the inline batch's go: one place to read and redrive them.
        dead_letters = context.use_case(CrmBatchEmail).dead_letter_queue
        crm_tunables = shared_limits.tunables.parameter(downstream_tunables_key(crm))

        self.segments_bucket = encrypted_bucket(
            scope, "SegmentsBucket", removal_policy=removal_policy,
            audited_by="segment exports are written by the CRM's export job and each one is read by the execution it"
            " starts, which writes every user's outcome back under runs/",
            expire_after_days=SEGMENT_OBJECTS_RETENTION_DAYS,
        )
        # EventBridge notifications through the bucket's own property, as for the uploads bucket.
        self.segments_bucket.node.default_child.add_property_override(
            "NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True)

        self.workflow = AslStateMachine(
            scope,
            "CrmSegmentLarge",
            definition_file=statemachine_file("crm_segment_large.asl.json"),
            definition_substitutions={
                "CrmTunablesParameterName": crm_tunables.parameter_name,
                "SegmentsBucketName": self.segments_bucket.bucket_name,
                "CrmCallerFunctionArn": crm_caller.function_arn,
                "DeadLetterQueueUrl": dead_letters.queue_url,
                "CrmMaxBatchSize": str(crm.max_batch_size),
                "DefaultTenant": names.DEFAULT_TENANT,
                "CampaignPriority": names.PRIORITY_BATCH,
            },
            log_retention=context.log_retention,
            removal_policy=removal_policy,
        )
        machine = self.workflow.state_machine
        # Exactly what the file's Tasks, its ItemReader and its ResultWriter do, each on its one resource.
        role = self.workflow.role
        shared_limits.tunables.grant_read(role, downstream_tunables_key(crm))
        # The unqualified ARN only: grant_invoke would add `<arn>:*` (every version and alias) as well.
        iam.Grant.add_to_principal(grantee=role, actions=["lambda:InvokeFunction"],
                                   resource_arns=[crm_caller.function_arn])
        dead_letters.grant_send_messages(role)
        # The Distributed Map runs its children as executions of this very state machine, and the role names
        # the machine: a policy of its own, since the machine already depends on the role's default policy.
        stack = Stack.of(scope)
        segments = self.segments_bucket.arn_for_objects(f"{SEGMENT_OBJECTS_PREFIX}*")
        results = self.segments_bucket.arn_for_objects(f"{SEGMENT_RUN_RESULTS_PREFIX}*")
        # The machine's own executions are `execution:<machine>:<name>`; the children of its map runs
        # `execution:<machine>/<map run label>:<id>`, and the map runs `mapRun:<machine>/<label>:<id>`.
        own_executions, child_executions, map_runs = (
            stack.format_arn(service="states", resource=resource, resource_name=f"{machine.state_machine_name}{tail}",
                             arn_format=ArnFormat.COLON_RESOURCE_NAME)
            for resource, tail in (("execution", ":*"), ("execution", "/*"), ("mapRun", "/*")))
        map_run_policy = iam.Policy(scope, "CrmSegmentLargeMapRunPolicy", roles=[role], statements=[
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[segments]),
            # The actions AWS documents for ResultWriter, which uploads a large result file in parts.
            iam.PolicyStatement(actions=["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts",
                                         "s3:AbortMultipartUpload"], resources=[results]),
            iam.PolicyStatement(actions=["states:StartExecution"], resources=[machine.state_machine_arn]),
            iam.PolicyStatement(actions=["states:DescribeExecution", "states:StopExecution"],
                                resources=[own_executions, child_executions]),
            # Redriving a failed run redrives its Map Run, which redrives the children that failed or never
            # started (the README's promise): AWS documents RedriveExecution on the child executions.
            iam.PolicyStatement(actions=["states:RedriveExecution"], resources=[child_executions]),
            iam.PolicyStatement(actions=["states:DescribeMapRun"], resources=[map_runs]),
        ])
        bucket_id = stack.get_logical_id(self.segments_bucket.node.default_child)
        machine_id = stack.get_logical_id(machine.node.default_child)
        region = "<AWS::Region>" if Token.is_unresolved(scope.region) else scope.region  # as cdk-nag prints it
        own_runs = f"arn:<AWS::Partition>:states:{region}:<AWS::AccountId>"
        Validations.of(map_run_policy).acknowledge(*(
            Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{resource}]", reason=reason)
            for resource, reason in (
                (f"<{bucket_id}.Arn>/{SEGMENT_OBJECTS_PREFIX}*",
                 "the segment to read is the run's input; any export under the segments prefix, nothing else"),
                (f"<{bucket_id}.Arn>/{SEGMENT_RUN_RESULTS_PREFIX}*",
                 "ResultWriter names its files after the map run's id, made at run time, under the results prefix"),
                (f"{own_runs}:execution:<{machine_id}.Name>:*",
                 "this state machine's own executions, which the Distributed Map describes and stops"),
                (f"{own_runs}:execution:<{machine_id}.Name>/*",
                 "the child executions of this state machine's own map runs, whose names are made at run time"),
                (f"{own_runs}:mapRun:<{machine_id}.Name>/*",
                 "this state machine's own map runs, whose ids are made at run time"),
            )
        ))

        # One run per segment export created under segments/, started with the object's key.
        self.segment_created_rule = events.Rule(
            scope,
            "SegmentCreatedRule",
            description="E-mail every segment export created in the segments bucket",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={"bucket": {"name": [self.segments_bucket.bucket_name]},
                        "object": {"key": [{"prefix": SEGMENT_OBJECTS_PREFIX}]}},
            ),
            targets=[
                targets.SfnStateMachine(
                    machine,
                    input=events.RuleTargetInput.from_object(
                        {"segment_key": events.EventField.from_path("$.detail.object.key")}),
                )
            ],
        )

        CfnOutput(scope, "CrmSegmentLargeStateMachineArn", value=machine.state_machine_arn)
        CfnOutput(scope, "SegmentsBucketName", value=self.segments_bucket.bucket_name)

    @property
    def distributed_map_workflows(self) -> Mapping[str, Sequence[sfn.IStateMachine]]:
        """Its Distributed Map reads the CRM's `max_concurrency` once per run: the controller retunes running ones."""
        return {self.props.downstream: (self.workflow.state_machine,)}

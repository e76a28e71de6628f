"""Use case 1: a daily e-mail to every user of a CRM segment, within the CRM's limits.

`statemachines/crm_batch_email.asl.json` reads the day's segment from the segments table and e-mails
each user through the CRM's caller; a user it could not e-mail goes to the dead-letter queue, which
the large-segment workflow (`crm_segment_large`) shares.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam

from stacks.app_assets import statemachine_file
from stacks.patterns import AslStateMachine
from stacks.patterns.secure_defaults import dead_letter_queue, encrypted_table
from stacks.shared_limits_stack import downstream_tunables_key
from stacks.use_cases.base import Layer, UseCase, UseCaseContext
from throttling.core import names

# The largest segment one execution e-mails: its history (25,000 events, 14 per user sent without a retry) and its
# state (256 KiB, the segment's ids in it until the Map) must hold it with room for retries and waits; the ASL's
# CheckSegmentSize refuses a larger one, and the segment format keeps each user id within the bytes below.
INLINE_SEGMENT_MAX_USERS = 1_000
SEGMENT_USER_ID_MAX_BYTES = 128


@dataclass(frozen=True)
class CrmBatchEmailProps:
    """:param downstream: the configured downstream that sends the e-mails (its caller and tunables are used)."""

    downstream: str


class CrmBatchEmail(UseCase[CrmBatchEmailProps]):
    """The segments table, the workflow, its dead-letter queue and its daily schedule (06:00 UTC)."""

    layer = Layer.WORKFLOWS

    def build(self, scope: Stack, context: UseCaseContext, props: CrmBatchEmailProps) -> None:
        config, shared_limits, removal_policy = context.config, context.shared_limits, context.removal_policy
        crm = config.downstream(props.downstream)
        crm_caller = context.caller(crm.name)
        crm_tunables = shared_limits.tunables.parameter(downstream_tunables_key(crm))

        # One item per segment: {pk: segment_id, user_ids: [user id strings]} (see the ASL's ReadSegment).
        self.segments_table = encrypted_table(scope, "SegmentsTable", removal_policy=removal_policy)
        self.dead_letter_queue = dead_letter_queue(
            scope, "CrmBatchEmailDeadLetterQueue", removal_policy=removal_policy,
            holds="the users the CRM batch could not e-mail, sent by its RecordFailure state",
        )

        self.workflow = AslStateMachine(
            scope,
            "CrmBatchEmail",
            definition_file=statemachine_file("crm_batch_email.asl.json"),
            definition_substitutions={
                "CrmTunablesParameterName": crm_tunables.parameter_name,
                "SegmentsTableName": self.segments_table.table_name,
                "CrmCallerFunctionArn": crm_caller.function_arn,
                "DeadLetterQueueUrl": self.dead_letter_queue.queue_url,
                "DefaultTenant": names.DEFAULT_TENANT,
                # A campaign is the first work shed when the CRM is saturated: its users wait, nobody's order does.
                "CampaignPriority": names.PRIORITY_BATCH,
            },
            log_retention=context.log_retention,
            removal_policy=removal_policy,
        )
        # Exactly what the file's Tasks do, each on its one resource.
        role = self.workflow.role
        shared_limits.tunables.grant_read(role, downstream_tunables_key(crm))
        self.segments_table.grant(role, "dynamodb:GetItem")
        # The unqualified ARN only: grant_invoke would add `<arn>:*` (every version and alias) as well.
        iam.Grant.add_to_principal(grantee=role, actions=["lambda:InvokeFunction"],
                                   resource_arns=[crm_caller.function_arn])
        self.dead_letter_queue.grant_send_messages(role)

        self.schedule = events.Rule(
            scope,
            "CrmBatchEmailSchedule",
            description="E-mail the daily CRM segment at 06:00 UTC",
            schedule=events.Schedule.cron(minute="0", hour="6"),
            targets=[
                targets.SfnStateMachine(
                    self.workflow.state_machine,
                    input=events.RuleTargetInput.from_object({"segment_id": "daily", "tenant": names.DEFAULT_TENANT}),
                )
            ],
        )

        CfnOutput(scope, "CrmBatchEmailStateMachineArn", value=self.workflow.state_machine.state_machine_arn)
        CfnOutput(scope, "SegmentsTableName", value=self.segments_table.table_name)
        CfnOutput(scope, "CrmBatchEmailDeadLetterQueueUrl", value=self.dead_letter_queue.queue_url)

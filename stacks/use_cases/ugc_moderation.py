"""Use case 3: moderate every object uploaded to a bucket with several AI models, within the model API's limits.

`statemachines/ugc_moderation.asl.json` scores each upload with several models through the model
API's caller, decides from their scores (`handlers.decide_moderation`, with the stage's thresholds),
and stores and publishes the decision. Each model call holds a lease of the model's in-flight
semaphore (its `max_in_flight`), taken and released by the workflow's own DynamoDB tasks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment, CfnOutput, Stack, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns

from stacks.app_assets import lambda_code, statemachine_file
from stacks.patterns import AslStateMachine, HandlerFunction, alarm_on_errors, longest_run_sec
from stacks.patterns.secure_defaults import encrypted_table
from stacks.shared_limits_stack import downstream_tunables_key
from stacks.use_cases.base import Layer, UseCase, UseCaseContext
from throttling.core import names, semaphore

DEFINITION_FILE = "ugc_moderation.asl.json"


def model_call_lease_sec(definition: Mapping[str, Any]) -> int:
    """How long a model call's lease lasts: as long as the call's Task can hold it, with every retry, and
    the release's own retries (`longest_run_sec`), so a live holder's lease never expires under it."""
    states = definition["States"]["ModerateWithEachModel"]["ItemProcessor"]["States"]
    return math.ceil(longest_run_sec(states["CallModel"]) + longest_run_sec(states["ReleaseAfterAnswer"]))


@dataclass(frozen=True)
class UgcModerationProps:
    """:param model: the configured downstream that scores uploads (the AI model API; its caller and tunables)."""

    model: str


class UgcModeration(UseCase[UgcModerationProps]):
    """The uploads bucket, the results table and topic, the decider, the workflow and its trigger on each upload."""

    layer = Layer.WORKFLOWS

    def build(self, scope: Stack, context: UseCaseContext, props: UgcModerationProps) -> None:
        config, shared_limits, removal_policy = context.config, context.shared_limits, context.removal_policy
        model = config.downstream(props.model)
        model_caller = context.caller(model.name)
        model_tunables = shared_limits.tunables.parameter(downstream_tunables_key(model))
        if model.max_in_flight is None:
            raise ValueError(
                f"ugc moderation holds a lease of {model.name}'s in-flight semaphore for every call, got no limit:"
                f" set stages.<stage>.downstreams.{model.name}.max_in_flight (the calls it takes at once)")
        lease_sec = model_call_lease_sec(json.loads(statemachine_file(DEFINITION_FILE).read_text()))

        # No auto_delete_objects and no `event_bridge_enabled=True`: both add a Lambda-backed custom resource.
        self.uploads_bucket = s3.Bucket(
            scope,
            "UploadsBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            versioned=True,
            removal_policy=removal_policy,
        )
        # EventBridge notifications through the bucket's own CloudFormation property. CDK's
        # `event_bridge_enabled=True` sets them with a Lambda-backed custom resource instead (an extra
        # function and role to deploy and secure, which the embedded emulator could not run either).
        cfn_bucket = self.uploads_bucket.node.default_child
        cfn_bucket.add_property_override("NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True)
        Validations.of(self.uploads_bucket).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-S1",
                reason="uploads are written by the application and each one is traced by its moderation execution"
                " (Step Functions logs and the results table); CloudTrail data events, not a log bucket, are the"
                " place to audit object access if a stage needs it",
            )
        )

        # {pk: object key, bucket, decision: approved|needs_review|rejected, reason, verdicts: JSON string,
        # execution_name}.
        self.moderation_results_table = encrypted_table(scope, "ModerationResultsTable", removal_policy=removal_policy)
        # Encrypted with the AWS managed key, as the customer notifications are.
        self.moderation_results_topic = sns.Topic(
            scope,
            "ModerationResultsTopic",
            master_key=kms.Alias.from_alias_name(scope, "ModerationSnsManagedKey", "alias/aws/sns"),
            enforce_ssl=True,
        )

        # JSONPath cannot take the highest score over a model's categories: this decides, with the stage's thresholds.
        decider = HandlerFunction(
            scope,
            "ModerationDecider",
            code=lambda_code(),
            handler="handlers.decide_moderation.handler",
            service="moderation-decider",
            description="Decides an upload's moderation from the AI models' scores",
            log_retention=context.log_retention,
            removal_policy=removal_policy,
            timeout_sec=10,
            environment={
                names.ENV_MODERATION_REVIEW_SCORE: str(config.moderation.review_score),
                names.ENV_MODERATION_REJECT_SCORE: str(config.moderation.reject_score),
            },
        )
        self.moderation_decider = decider.function
        alarm_on_errors(decider.function, reason="every upload it could not decide went to human review instead"
                        " (the workflow's safe outcome), so reviewers are doing the models' work")

        self.workflow = AslStateMachine(
            scope,
            "UgcModeration",
            definition_file=statemachine_file(DEFINITION_FILE),
            definition_substitutions={
                # An upload waits on a person, not on money: standard, below a payment and above a campaign.
                "ModerationPriority": names.PRIORITY_STANDARD,
                "SemaphoreTableName": shared_limits.semaphores.table.table_name,
                "AiModelSemaphoreName": names.in_flight_semaphore_name(model.name),
                "AiModelMaxInFlight": str(model.max_in_flight),
                "AiModelLeaseSec": str(lease_sec),
                "SemaphoreAcquireUpdate": semaphore.SEMAPHORE_ACQUIRE_UPDATE,
                "SemaphoreAcquireCondition": semaphore.SEMAPHORE_ACQUIRE_CONDITION,
                "SemaphoreReleaseUpdate": semaphore.SEMAPHORE_RELEASE_UPDATE,
                "SemaphoreReleaseCondition": semaphore.SEMAPHORE_RELEASE_CONDITION,
                "SemaphoreCreateCondition": semaphore.SEMAPHORE_CREATE_CONDITION,
                "AiModelTunablesParameterName": model_tunables.parameter_name,
                "AiModelCallerFunctionArn": model_caller.function_arn,
                "ModerationDeciderFunctionArn": decider.function.function_arn,
                "ResultsTableName": self.moderation_results_table.table_name,
                "ModerationResultsTopicArn": self.moderation_results_topic.topic_arn,
            },
            log_retention=context.log_retention,
            removal_policy=removal_policy,
        )
        # Exactly what the file's Tasks do, each on its one resource.
        role = self.workflow.role
        shared_limits.tunables.grant_read(role, downstream_tunables_key(model))
        self.moderation_results_table.grant(role, "dynamodb:PutItem")
        shared_limits.semaphores.grant_leases_from_workflow(role)
        self.moderation_results_topic.grant_publish(role)
        # The unqualified ARN only: grant_invoke would add `<arn>:*` (every version and alias) as well.
        iam.Grant.add_to_principal(grantee=role, actions=["lambda:InvokeFunction"],
                                   resource_arns=[model_caller.function_arn, decider.function.function_arn])

        # One execution per object created in the uploads bucket, started with the event itself.
        self.upload_created_rule = events.Rule(
            scope,
            "UploadCreatedRule",
            description="Moderate every object created in the uploads bucket",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={"bucket": {"name": [self.uploads_bucket.bucket_name]}},
            ),
            targets=[targets.SfnStateMachine(self.workflow.state_machine)],
        )

        CfnOutput(scope, "UgcModerationStateMachineArn", value=self.workflow.state_machine.state_machine_arn)
        CfnOutput(scope, "UploadsBucketName", value=self.uploads_bucket.bucket_name)
        CfnOutput(scope, "ModerationResultsTableName", value=self.moderation_results_table.table_name)
        CfnOutput(scope, "ModerationResultsTopicArn", value=self.moderation_results_topic.topic_arn)
        CfnOutput(scope, "ModerationDeciderName", value=decider.function.function_name)
        CfnOutput(scope, "AiModelSemaphoreName", value=names.in_flight_semaphore_name(model.name))
        CfnOutput(scope, "AiModelLeaseSec", value=str(lease_sec))

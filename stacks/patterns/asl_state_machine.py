"""A Step Functions state machine defined by an ASL file with `${Placeholders}`.

The ASL stays a reviewable file (validated by asl-validator, readable in the console) and the
template carries it verbatim as `DefinitionString`, with every ARN and name filled in by
CloudFormation from `DefinitionSubstitutions`. Every state machine of the app gets the same
defaults: its own log group with a retention, every event logged, and X-Ray tracing. The
construct grants nothing the file needs; the stack grants each resource explicitly (the contract
tests check that the role may do every Task of the file).

The log group is named under `/aws/vendedlogs/states/`: for any other name, `CreateStateMachine`
adds the group to the account's CloudWatch Logs resource policy, which holds 5,120 characters, so
in an account with other vended logs the deploy fails; groups under `/aws/vendedlogs/` need no entry.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import Acknowledgment, Aws, Fn, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
# Where Step Functions' logs go without an entry in the account's CloudWatch Logs resource policy.
VENDED_LOGS_PREFIX = "/aws/vendedlogs/states/"


def placeholders_in(definition: str) -> set[str]:
    """The `${Name}` placeholders of an ASL text (the names CloudFormation substitutes)."""
    return set(PLACEHOLDER.findall(definition))


def longest_run_sec(state: Mapping[str, Any]) -> float:
    """The longest a Task state can run: every attempt its `TimeoutSeconds` (0 for a task without one, such as a
    DynamoDB write, which answers in milliseconds), and between attempts every retrier's longest delays.

    What a lease held across the state must outlast; `JitterStrategy: FULL` only ever shortens a delay.
    """
    attempts, delays = 1, 0.0
    for retrier in state.get("Retry", []):
        interval = retrier.get("IntervalSeconds", 1)
        cap = retrier.get("MaxDelaySeconds", float("inf"))
        for retry in range(retrier.get("MaxAttempts", 3)):
            delays += min(interval * retrier.get("BackoffRate", 2.0) ** retry, cap)
            attempts += 1
    return attempts * state.get("TimeoutSeconds", 0) + delays


class AslStateMachine(Construct):
    """One state machine from one ASL file.

    :param definition_file: the ASL file's path, e.g. `statemachines/crm_batch_email.asl.json`.
    :param definition_substitutions: placeholder -> value (usually a token: an ARN, a name, a URL);
        must name exactly the file's placeholders, or synth fails saying which are missing or unused.
    :param removal_policy: of the log group and the state machine.
    :param log_retention: of the state machine's log group; default two years (CDK's default for a log group).
    :param state_machine_type: default STANDARD (waits are free, executions last up to a year).
    :param include_execution_data: log states' input and output; default False, because the
        payloads may hold personal data that the execution history already keeps under access control.
    :param fail_states_are_outcomes: its `Fail` states are business outcomes (a declined card), so a
        failed execution is not a fault: the control loop then alarms on its timed-out executions
        instead of its failed ones. Default False.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        definition_file: str | os.PathLike[str],
        definition_substitutions: Mapping[str, str],
        removal_policy: RemovalPolicy,
        log_retention: logs.RetentionDays = logs.RetentionDays.TWO_YEARS,
        state_machine_type: sfn.StateMachineType = sfn.StateMachineType.STANDARD,
        include_execution_data: bool = False,
        fail_states_are_outcomes: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.fail_states_are_outcomes = fail_states_are_outcomes
        self.definition_path = Path(definition_file)
        if not self.definition_path.is_file():
            raise ValueError(f"definition_file must be the path of an ASL file, got {str(definition_file)!r}, which is"
                             f" not a file (relative paths are read from {Path.cwd()})")
        definition = self.definition_path.read_text()
        self.placeholders = placeholders_in(definition)
        missing = sorted(self.placeholders - set(definition_substitutions))
        unused = sorted(set(definition_substitutions) - self.placeholders)
        if missing or unused:
            raise ValueError(
                f"definition_substitutions must name exactly the placeholders of {self.definition_path.name}:"
                f" missing {missing}, unused {unused}; add the missing ones or drop the unused ones"
            )

        self.log_group = logs.LogGroup(
            self, "LogGroup", log_group_name=vended_log_group_name(self, construct_id),
            retention=log_retention, removal_policy=removal_policy,
        )
        # from_string, not from_file: from_file uploads the file as an S3 asset (DefinitionS3Location),
        # which hides the definition from the template, from cfn diffs and from the contract tests.
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_string(definition),
            definition_substitutions=dict(definition_substitutions),
            state_machine_type=state_machine_type,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=include_execution_data
            ),
            tracing_enabled=True,
            removal_policy=removal_policy,
        )
        self.role: iam.IRole = self.state_machine.role
        Validations.of(self.state_machine).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason="X-Ray's PutTraceSegments/PutTelemetryRecords/GetSampling* and CloudWatch Logs' log-delivery"
                " actions (CreateLogDelivery, PutResourcePolicy, ...) do not support resource-level permissions",
            )
        )


def vended_log_group_name(scope: Construct, machine_name: str) -> str:
    """`/aws/vendedlogs/states/<stack>-<machine>-<8 hex digits of the stack's id>`.

    The stack's name holds the stage, the machine's construct id tells the machines of a stack apart,
    and the stack id's first 8 hex digits (fixed for the stack's life, new for each creation) keep a
    stage that is destroyed and deployed again from colliding with a group its retain policy kept.
    """
    stack_id_suffix = Fn.select(0, Fn.split("-", Fn.select(2, Fn.split("/", Aws.STACK_ID))))
    return f"{VENDED_LOGS_PREFIX}{Stack.of(scope).stack_name}-{machine_name}-{stack_id_suffix}"

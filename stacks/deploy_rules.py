"""Synth-time rules for what AWS refuses or breaks on deploy, checked on the synthesized templates.

moto deploys templates that AWS would not (see the emulator notes), so each rule here makes synth
fail instead of the first real deploy. `DeployRules` is a CDK policy-validation plugin
(`Validations.of(app).add_plugins(DeployRules())`, always on, nag or not): `cdk synth` and
`app.synth()` fail with a report naming the template, the resource and the fix. `check_templates`
is the same check on plain template dicts, so tests can show each rule catching its mistake.

Rules:
- `state-machine-log-group`: a state machine logs to a group under `/aws/vendedlogs/states/`
  (any other group takes room in the account's 5,120-character CloudWatch Logs resource policy).
- `lambda-environment-size`: a function's environment, measured as Lambda measures it (the JSON of
  the variables), stays within 3.5 KB of Lambda's 4 KB, leaving room for one more downstream or a
  longer stage name.
- `ssm-parameter-size`: a String parameter's value fits its tier (4 KB standard, 8 KB advanced).
- `alarm-evaluation`: an alarm's `DatapointsToAlarm` is at most its `EvaluationPeriods`, and its
  periods times their length stay within what PutMetricAlarm takes (one day under an hour's period,
  seven days otherwise): the sustained alarms ("2 of 3 minutes") depend on both, and moto takes any.
- `powertools-layer`: every function of the shared asset (handler `handlers.*`, which import
  Powertools; the runtime does not ship it) gets the Powertools release `requirements-lambda.txt` pins,
  resolved at deploy from Powertools' public SSM parameter for its runtime and architecture; never a
  layer by number (layer 27 is 3.23.0, which lacks modules the handlers import).

Sizes are estimated before CloudFormation resolves the values: each token counts as the longest
value CloudFormation can give it (`estimated_length`): a resource's own name when the template
sets it, else the longest name AWS allows for that resource type (64 characters for a function,
80 for a queue, 255 for a table), inside its ARN or URL with a partition, region and account
of their longest; a cross-stack import as the value its exporting template gives; anything else
as `UNKNOWN_TOKEN_LENGTH` characters. So an estimate is never below what the deploy will measure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import (
    IPolicyValidationContext,
    IPolicyValidationPlugin,
    PolicyValidationPluginReport,
    PolicyViolatingResource,
    PolicyViolation,
)

from stacks.patterns.asl_state_machine import VENDED_LOGS_PREFIX
from stacks.app_assets import pinned_version
from stacks.patterns.handler_function import POWERTOOLS_PACKAGE, POWERTOOLS_PARAMETER_PREFIX, powertools_layer_parameter

__all__ = [
    "LAMBDA_ENVIRONMENT_BUDGET_BYTES",
    "LAMBDA_ENVIRONMENT_LIMIT_BYTES",
    "RULES",
    "DeployRules",
    "Finding",
    "check_templates",
    "environment_json",
    "estimated_environment_bytes",
    "estimated_length",
    "leading_literal",
]

Template = Mapping[str, Any]


@dataclass(frozen=True)
class Finding:
    """One resource breaking one rule: where it is, what AWS would do, and what to change."""

    rule: str
    template: str
    logical_id: str
    location: str
    message: str
    fix: str


RULES: dict[str, str] = {
    "state-machine-log-group": "state machines log under /aws/vendedlogs/states/",
    "lambda-environment-size": "a function's environment stays within 3.5 KB of Lambda's 4 KB",
    "ssm-parameter-size": "a String parameter fits its tier (4 KB standard, 8 KB advanced)",
    "alarm-evaluation": "an alarm's datapoints fit its evaluation periods, and its window PutMetricAlarm's limits",
    "insight-rule-size": "a Contributor Insights rule's definition fits PutInsightRule's 8,192 characters",
    "powertools-layer": "functions get the Powertools release requirements-lambda.txt pins, resolved from its SSM parameter",
}

# Lambda refuses an environment whose JSON exceeds 4 KB; the app keeps 512 bytes of it in reserve.
LAMBDA_ENVIRONMENT_LIMIT_BYTES = 4_096
LAMBDA_ENVIRONMENT_BUDGET_BYTES = 3_584
SSM_VALUE_LIMIT_BYTES = {"Standard": 4_096, "Advanced": 8_192, "Intelligent-Tiering": 8_192}
# A token whose resolved length the rules cannot bound from the template.
UNKNOWN_TOKEN_LENGTH = 1_024


def check_templates(templates: Mapping[str, Template], *, powertools_version: str | None = None) -> list[Finding]:
    """Every finding of every rule over the app's templates (template name or path -> template).

    :param powertools_version: the release the functions must get; default the one requirements-lambda.txt pins.
    """
    findings: list[Finding] = []
    powertools_version = powertools_version or pinned_version(POWERTOOLS_PACKAGE)
    for name, template in templates.items():
        findings += _state_machine_log_groups(name, template)
        findings += _lambda_environment_sizes(name, template, templates)
        findings += _ssm_parameter_sizes(name, template, templates)
        findings += _insight_rule_sizes(name, template, templates)
        findings += _alarm_evaluations(name, template)
        findings += _powertools_layers(name, template, powertools_version)
    return findings


def environment_json(variables: Mapping[str, str]) -> str:
    """The text Lambda measures against its 4 KB limit ("String measured:" in its error): compact JSON."""
    return json.dumps(dict(variables), separators=(",", ":"))


def estimated_environment_bytes(variables: Mapping[str, Any], template: Template,
                                templates: Mapping[str, Template]) -> int:
    """An upper bound of the environment's size once CloudFormation has resolved every token in it."""
    rendered = {name: _render(value, template, templates) for name, value in variables.items()}
    return len(environment_json(rendered).encode())


@jsii.implements(IPolicyValidationPlugin)
class DeployRules:
    """The rules above as a CDK validation plugin: a finding fails synth.

    :param powertools_version: the Powertools release functions must get; default the one requirements-lambda.txt pins.
    """

    def __init__(self, *, powertools_version: str | None = None) -> None:
        self.powertools_version = powertools_version

    @property
    def name(self) -> str:
        return "throttling-deploy-rules"

    @property
    def version(self) -> str:
        return "1.0.0"

    @property
    def rule_ids(self) -> list[str]:
        return list(RULES)

    def validate(self, context: IPolicyValidationContext) -> PolicyValidationPluginReport:
        templates = {path: json.loads(Path(path).read_text()) for path in context.template_paths}
        findings = check_templates(templates, powertools_version=self.powertools_version)
        return PolicyValidationPluginReport(
            success=not findings,
            violations=[
                PolicyViolation(
                    rule_name=finding.rule,
                    description=finding.message,
                    fix=finding.fix,
                    violating_resources=[PolicyViolatingResource(
                        resource_logical_id=finding.logical_id, template_path=finding.template,
                        locations=[finding.location])],
                )
                for finding in findings
            ],
        )


# -- powertools-layer ----------------------------------------------------------------------------


def _powertools_layers(name: str, template: Template, version: str) -> Iterator[Finding]:
    parameters = template.get("Parameters") or {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        properties = resource.get("Properties") or {}
        if resource.get("Type") != "AWS::Lambda::Function" or not str(properties.get("Handler", "")).startswith(
                "handlers."):
            continue
        runtime = str(properties.get("Runtime", ""))
        architecture = str((properties.get("Architectures") or ["x86_64"])[0])
        expected = powertools_layer_parameter(version, architecture=architecture, runtime=runtime)
        fix = f"resolve the layer from {expected} (HandlerFunction does, from the pin in requirements-lambda.txt)"
        found = False
        for index, layer in enumerate(properties.get("Layers") or []):
            location = f"Properties/Layers/{index}"
            reference = layer.get("Ref") if isinstance(layer, dict) and len(layer) == 1 else None
            parameter = parameters.get(reference) if isinstance(reference, str) else None
            if parameter is not None and str(parameter.get("Default", "")).startswith(POWERTOOLS_PARAMETER_PREFIX):
                found = True
                resolved = str(parameter["Default"])
                if resolved != expected or not str(parameter.get("Type", "")).startswith("AWS::SSM::Parameter::Value"):
                    yield Finding(
                        "powertools-layer", name, logical_id, location,
                        f"function {logical_id} gets the Powertools layer of {resolved!r}, but the tests run"
                        f" {version} for {runtime} on {architecture} (requirements-lambda.txt): on AWS its handler"
                        " would import a release the tests never ran", fix)
            elif "AWSLambdaPowertoolsPython" in json.dumps(layer):
                found = True
                yield Finding(
                    "powertools-layer", name, logical_id, location,
                    f"function {logical_id} pins a Powertools layer by number ({_shown(layer)}): a"
                    f" number is one release (27 is 3.23.0), not the {version} the tests run, and an older one fails"
                    " with an ImportError on AWS", fix)
        if not found:
            yield Finding(
                "powertools-layer", name, logical_id, "Properties/Layers",
                f"function {logical_id} has no Powertools layer: its handler imports aws_lambda_powertools, which the"
                f" {runtime or 'Lambda'} runtime does not ship (Runtime.ImportModuleError on every invocation)", fix)


# -- state-machine-log-group ----------------------------------------------------------------------


def _state_machine_log_groups(name: str, template: Template) -> Iterator[Finding]:
    resources = template.get("Resources") or {}
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::StepFunctions::StateMachine":
            continue
        logging = (resource.get("Properties") or {}).get("LoggingConfiguration") or {}
        for index, destination in enumerate(logging.get("Destinations") or []):
            arn = (destination.get("CloudWatchLogsLogGroup") or {}).get("LogGroupArn")
            group = _log_group_name(arn, resources)
            if group is not None and group.startswith(VENDED_LOGS_PREFIX):
                continue
            shown = "a name CloudFormation generates" if group is None else repr(group + "...")
            yield Finding(
                rule="state-machine-log-group",
                template=name,
                logical_id=logical_id,
                location=f"Properties/LoggingConfiguration/Destinations/{index}",
                message=f"state machine {logical_id} logs to {shown}, not under {VENDED_LOGS_PREFIX}: CreateStateMachine"
                " adds such a group to the account's CloudWatch Logs resource policy, which holds 5,120 characters,"
                " and fails in an account that already has other vended logs",
                fix=f"name its log group under {VENDED_LOGS_PREFIX} (AslStateMachine does:"
                " stacks.patterns.asl_state_machine.vended_log_group_name)",
            )


def _log_group_name(arn: Any, resources: Mapping[str, Any]) -> str | None:
    """The log group's name as far as synth knows it (its literal start); None when CloudFormation names it."""
    if isinstance(arn, dict) and "Fn::GetAtt" in arn:
        target = resources.get(arn["Fn::GetAtt"][0]) or {}
        if target.get("Type") != "AWS::Logs::LogGroup":
            return None
        given = (target.get("Properties") or {}).get("LogGroupName")
        return None if given is None else leading_literal(given)
    text = leading_literal(arn)
    _, found, rest = text.partition(":log-group:")
    return rest.split(":", 1)[0] if found else None


# -- lambda-environment-size and ssm-parameter-size ------------------------------------------------


def _lambda_environment_sizes(name: str, template: Template, templates: Mapping[str, Template]) -> Iterator[Finding]:
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Lambda::Function":
            continue
        variables = (((resource.get("Properties") or {}).get("Environment") or {}).get("Variables")) or {}
        size = estimated_environment_bytes(variables, template, templates)
        if size <= LAMBDA_ENVIRONMENT_BUDGET_BYTES:
            continue
        largest = sorted(variables, key=lambda v: -len(environment_json({v: _render(variables[v], template, templates)})))
        yield Finding(
            rule="lambda-environment-size",
            template=name,
            logical_id=logical_id,
            location="Properties/Environment/Variables",
            message=f"function {logical_id}'s environment may reach {size:,} bytes once deployed (tokens counted at"
            f" their longest), over the app's budget of {LAMBDA_ENVIRONMENT_BUDGET_BYTES:,} of Lambda's"
            f" {LAMBDA_ENVIRONMENT_LIMIT_BYTES:,}; largest: {', '.join(largest[:3])}",
            fix="move large or growing values out of the environment: an SSM parameter the function reads with a"
            " cache (as the controller reads its plans), or a file in the code asset",
        )


def _ssm_parameter_sizes(name: str, template: Template, templates: Mapping[str, Template]) -> Iterator[Finding]:
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::SSM::Parameter":
            continue
        properties = resource.get("Properties") or {}
        tier = properties.get("Tier", "Standard")
        limit = SSM_VALUE_LIMIT_BYTES.get(tier, SSM_VALUE_LIMIT_BYTES["Standard"])
        size = len(_render(properties.get("Value", ""), template, templates).encode())
        if size > limit:
            yield Finding(
                rule="ssm-parameter-size",
                template=name,
                logical_id=logical_id,
                location="Properties/Value",
                message=f"parameter {logical_id}'s value may reach {size:,} bytes once deployed, over the"
                f" {limit:,} its {tier} tier holds",
                fix="split the document (one parameter per downstream, as the controller's plans are) or use the"
                " Advanced tier (charged per parameter)",
            )


# PutMetricAlarm: Period x EvaluationPeriods at most one day for periods under an hour, else seven days.
ALARM_WINDOW_LIMIT_SEC = {"under an hour": 86_400, "an hour or more": 604_800}


def _alarm_evaluations(name: str, template: Template) -> Iterator[Finding]:
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        properties = resource.get("Properties") or {}
        periods = properties.get("EvaluationPeriods")
        datapoints = properties.get("DatapointsToAlarm")
        if isinstance(periods, int) and isinstance(datapoints, int) and not 1 <= datapoints <= periods:
            yield Finding(
                rule="alarm-evaluation", template=name, logical_id=logical_id, location="Properties/DatapointsToAlarm",
                message=f"alarm {logical_id} needs {datapoints} breaching datapoints of {periods} evaluation periods;"
                " PutMetricAlarm refuses more datapoints than periods",
                fix="lower DatapointsToAlarm to at most EvaluationPeriods, or evaluate more periods",
            )
        lengths = [properties.get("Period")] + [(m.get("MetricStat") or {}).get("Period", m.get("Period"))
                                                for m in properties.get("Metrics") or []]
        length = max((value for value in lengths if isinstance(value, int)), default=None)
        if isinstance(periods, int) and length is not None:
            limit = ALARM_WINDOW_LIMIT_SEC["under an hour" if length < 3_600 else "an hour or more"]
            if periods * length > limit:
                yield Finding(
                    rule="alarm-evaluation", template=name, logical_id=logical_id, location="Properties/EvaluationPeriods",
                    message=f"alarm {logical_id} evaluates {periods} periods of {length} s ({periods * length:,} s);"
                    f" PutMetricAlarm takes at most {limit:,} s for that period",
                    fix="evaluate fewer periods, or longer ones",
                )


# PutInsightRule's RuleDefinition: at most 8,192 characters (the rule body CloudFormation sends it).
INSIGHT_RULE_DEFINITION_LIMIT_CHARS = 8_192


def _insight_rule_sizes(name: str, template: Template, templates: Mapping[str, Template]) -> Iterator[Finding]:
    """A rule over many log groups (one per caller, each name up to 512 characters once CloudFormation names
    it) can pass the limit; CloudFormation would then fail the stack mid-deploy, and moto takes any size."""
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::CloudWatch::InsightRule":
            continue
        size = len(_render((resource.get("Properties") or {}).get("RuleBody", ""), template, templates))
        if size > INSIGHT_RULE_DEFINITION_LIMIT_CHARS:
            yield Finding(
                rule="insight-rule-size",
                template=name,
                logical_id=logical_id,
                location="Properties/RuleBody",
                message=f"rule {logical_id}'s definition may reach {size:,} characters once deployed, over the"
                f" {INSIGHT_RULE_DEFINITION_LIMIT_CHARS:,} PutInsightRule takes",
                fix="split the rule (one per caller's log group) or name the log groups so their length is known",
            )


def _render(value: Any, template: Template, templates: Mapping[str, Template]) -> str:
    """`value` with each token replaced by a placeholder as long as the longest value it can resolve to."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return json.dumps(value)
    return "x" * estimated_length(value, template, templates)


def estimated_length(token: Any, template: Template, templates: Mapping[str, Template]) -> int:
    """The longest string CloudFormation can resolve `token` to (see the module's docstring)."""
    if isinstance(token, str):
        return len(token)
    if not isinstance(token, dict) or len(token) != 1:
        return UNKNOWN_TOKEN_LENGTH
    (function, argument), = token.items()
    if function == "Fn::Join" and isinstance(argument, list) and len(argument) == 2:
        separator, parts = argument
        if isinstance(separator, str) and isinstance(parts, list):
            return len(separator) * max(0, len(parts) - 1) + sum(
                estimated_length(part, template, templates) for part in parts)
    if function == "Ref" and isinstance(argument, str):
        if argument in _PSEUDO_PARAMETER_LENGTHS:
            return _PSEUDO_PARAMETER_LENGTHS[argument]
        return _attribute_length(argument, "Ref", template)
    if function == "Fn::GetAtt" and isinstance(argument, list) and len(argument) == 2:
        return _attribute_length(argument[0], argument[1], template)
    if function == "Fn::ImportValue" and isinstance(argument, str):
        for other in templates.values():
            for output in (other.get("Outputs") or {}).values():
                if (output.get("Export") or {}).get("Name") == argument:
                    return estimated_length(output.get("Value"), other, templates)
    return UNKNOWN_TOKEN_LENGTH


# The longest value of each pseudo parameter: `aws-us-gov`, a 12-digit account, region names with room.
_PSEUDO_PARAMETER_LENGTHS = {
    "AWS::Partition": 10, "AWS::Region": 20, "AWS::AccountId": 12, "AWS::URLSuffix": 20, "AWS::StackName": 128,
    "AWS::StackId": 256, "AWS::NoValue": 0,
}


def _arn(service: str, resource: int) -> int:
    """`arn:<partition>:<service>:<region>:<account>:<resource>` at its longest."""
    lengths = _PSEUDO_PARAMETER_LENGTHS
    return len(f"arn::{service}:::") + lengths["AWS::Partition"] + lengths["AWS::Region"] + lengths["AWS::AccountId"] \
        + resource


def _queue_url(name: int) -> int:
    lengths = _PSEUDO_PARAMETER_LENGTHS
    return len("https://sqs.../") + lengths["AWS::Region"] + lengths["AWS::URLSuffix"] + lengths["AWS::AccountId"] + 1 \
        + name


# Resource type -> (the property that names it, the longest name AWS accepts, attribute -> length from the name's).
_NAMED_RESOURCES: dict[str, tuple[str, int, dict[str, Any]]] = {
    "AWS::Lambda::Function": ("FunctionName", 64, {
        "Ref": lambda n: n, "Arn": lambda n: _arn("lambda", len("function:") + n)}),
    "AWS::DynamoDB::Table": ("TableName", 255, {
        "Ref": lambda n: n, "Arn": lambda n: _arn("dynamodb", len("table/") + n),
        "StreamArn": lambda n: _arn("dynamodb", len("table//stream/2026-01-01T00:00:00.000") + n)}),
    "AWS::SQS::Queue": ("QueueName", 80, {
        "Ref": _queue_url, "QueueUrl": _queue_url, "QueueName": lambda n: n, "Arn": lambda n: _arn("sqs", n)}),
    "AWS::SNS::Topic": ("TopicName", 256, {
        "Ref": lambda n: _arn("sns", n), "TopicArn": lambda n: _arn("sns", n), "TopicName": lambda n: n}),
    "AWS::StepFunctions::StateMachine": ("StateMachineName", 80, {
        "Ref": lambda n: _arn("states", len("stateMachine:") + n),
        "Arn": lambda n: _arn("states", len("stateMachine:") + n), "Name": lambda n: n}),
    "AWS::S3::Bucket": ("BucketName", 63, {
        "Ref": lambda n: n, "Arn": lambda n: _arn("s3", n)}),
    "AWS::SSM::Parameter": ("Name", 2_048, {"Ref": lambda n: n}),
    "AWS::Logs::LogGroup": ("LogGroupName", 512, {
        "Ref": lambda n: n, "Arn": lambda n: _arn("logs", len("log-group::*") + n)}),
    "AWS::IAM::Role": ("RoleName", 64, {
        "Ref": lambda n: n, "Arn": lambda n: _arn("iam", len("role/") + 512 + n)}),
    "AWS::Events::Rule": ("Name", 64, {
        "Ref": lambda n: n, "Arn": lambda n: _arn("events", len("rule/") + n)}),
    "AWS::KMS::Key": ("", 36, {"Ref": lambda n: n, "KeyId": lambda n: n, "Arn": lambda n: _arn("kms", len("key/") + n)}),
}


def _attribute_length(logical_id: Any, attribute: Any, template: Template) -> int:
    resource = (template.get("Resources") or {}).get(logical_id) if isinstance(logical_id, str) else None
    known = _NAMED_RESOURCES.get((resource or {}).get("Type"))
    if known is None or attribute not in known[2]:
        return UNKNOWN_TOKEN_LENGTH
    name_property, longest_name, attributes = known
    given = ((resource or {}).get("Properties") or {}).get(name_property) if name_property else None
    name_length = len(given) if isinstance(given, str) else longest_name
    return attributes[attribute](name_length)


def _shown(value: Any) -> str:
    """A template value as text, each token written `${...}` (for messages)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_shown(part) for part in parts)
    if isinstance(value, dict) and "Ref" in value:
        return "${" + str(value["Ref"]) + "}"
    return "${...}"


def leading_literal(value: Any) -> str:
    """The start of a CloudFormation string value that is known at synth (up to its first token)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        known: list[str] = []
        for part in parts:
            if not isinstance(part, str):
                return separator.join(known) + (separator if known else "")
            known.append(part)
        return separator.join(known)
    return ""

"""Synth-time rules for what AWS refuses or breaks on deploy, checked on the synthesized templates.

moto deploys templates that AWS would not (see the emulator notes), so each rule here makes synth
fail instead of the first real deploy. `DeployRules` is a CDK policy-validation plugin
(`Validations.of(app).add_plugins(DeployRules())`, always on, nag or not): `cdk synth` and
`app.synth()` fail with a report naming the template, the resource and the fix. `check_templates`
is the same check on plain template dicts, so tests can show each rule catching its mistake.

Rules:
- `state-machine-log-group`: a state machine logs to a group under `/aws/vendedlogs/states/`
  (any other group takes room in the account's 5,120-character CloudWatch Logs resource policy).
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

__all__ = ["RULES", "DeployRules", "Finding", "check_templates", "leading_literal"]

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
}


def check_templates(templates: Mapping[str, Template]) -> list[Finding]:
    """Every finding of every rule over the app's templates (template name or path -> template)."""
    findings: list[Finding] = []
    for name, template in templates.items():
        findings += _state_machine_log_groups(name, template)
    return findings


@jsii.implements(IPolicyValidationPlugin)
class DeployRules:
    """The rules above as a CDK validation plugin: a finding fails synth."""

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
        findings = check_templates(templates)
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

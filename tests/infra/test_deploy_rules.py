"""Synth-time rules for what AWS refuses on deploy: the app keeps them, and each rule catches its mistake."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Template

from stacks.deploy_rules import DeployRules, check_templates, leading_literal
from stacks.patterns.asl_state_machine import VENDED_LOGS_PREFIX, vended_log_group_name


def templates_of(stacks: dict[str, Stack]) -> dict[str, dict[str, Any]]:
    return {stack.stack_name: Template.from_stack(stack).to_json() for stack in stacks.values()}


def synth_with_rules(build) -> None:
    """Synthesize a one-stack app built by `build(stack)` with the rules on (raises when one fails)."""
    app = App()
    build(Stack(app, "Probe"))
    Validations.of(app).add_plugins(DeployRules())
    app.synth()


# -- state-machine-log-group ----------------------------------------------------------------------


def test_every_state_machine_logs_under_the_vended_logs_prefix_one_group_per_stage_and_machine(dev_assembly):
    # GIVEN the dev stage's templates
    stacks, _ = dev_assembly
    names = []
    for stack_name, template in templates_of(stacks).items():
        resources = template["Resources"]
        for logical_id, machine in resources.items():
            if machine["Type"] != "AWS::StepFunctions::StateMachine":
                continue
            # THEN each machine's log group is named under the prefix, after its stack (the stage) and itself
            (destination,) = machine["Properties"]["LoggingConfiguration"]["Destinations"]
            group = resources[destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]]
            name = leading_literal(group["Properties"]["LogGroupName"])
            assert name.startswith(f"{VENDED_LOGS_PREFIX}{stack_name}-"), (logical_id, name)
            assert logical_id.startswith(name.removeprefix(f"{VENDED_LOGS_PREFIX}{stack_name}-").rstrip("-"))
            names.append(name)
    # AND no two machines share one
    assert len(names) == 5 and len(set(names)) == len(names)
    # AND the rules find nothing in the app
    assert [f for f in check_templates(templates_of(stacks)) if f.rule == "state-machine-log-group"] == []


def test_the_name_ends_with_the_stack_ids_first_hex_digits_so_a_recreated_stage_never_collides():
    stack = Stack(App(), "Throttling-dev-Workflows")
    name = stack.resolve(vended_log_group_name(stack, "CrmBatchEmail"))
    separator, parts = name["Fn::Join"]
    assert separator == "" and parts[0] == "/aws/vendedlogs/states/Throttling-dev-Workflows-CrmBatchEmail-"
    assert "AWS::StackId" in str(parts[1])


@pytest.mark.parametrize("log_group_name", [None, "/throttling/dev/crm-batch-email"])
def test_the_rule_catches_a_state_machine_logging_anywhere_else(log_group_name):
    # GIVEN a state machine logging to a group CloudFormation names, or one named outside the prefix
    group: dict[str, Any] = {"Type": "AWS::Logs::LogGroup", "Properties": {}}
    if log_group_name:
        group["Properties"]["LogGroupName"] = log_group_name
    template = {"Resources": {"Group": group, "Machine": {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {"LoggingConfiguration": {"Destinations": [
            {"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": ["Group", "Arn"]}}}]}}}}}
    # WHEN the rules run
    (finding,) = check_templates({"Probe.template.json": template})
    # THEN they name the machine, the rule and the remedy
    assert (finding.rule, finding.logical_id) == ("state-machine-log-group", "Machine")
    assert "5,120" in finding.message and VENDED_LOGS_PREFIX in finding.fix


def test_synth_fails_for_a_state_machine_whose_log_group_lacks_the_prefix():
    def machine(log_group_name: str | None):
        def build(stack: Stack) -> None:
            group = logs.LogGroup(stack, "Group", log_group_name=log_group_name)
            sfn.StateMachine(stack, "Machine", definition_body=sfn.DefinitionBody.from_chainable(sfn.Pass(stack, "P")),
                             logs=sfn.LogOptions(destination=group, level=sfn.LogLevel.ALL))
        return build

    # WHEN a state machine logs to a group CloudFormation names THEN synth fails
    with pytest.raises(RuntimeError, match="throttling-deploy-rules::state-machine-log-group"):
        synth_with_rules(machine(None))
    # AND under the prefix it passes
    synth_with_rules(machine(f"{VENDED_LOGS_PREFIX}Probe-Machine"))

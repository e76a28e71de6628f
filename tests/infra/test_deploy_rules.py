"""Synth-time rules for what AWS refuses on deploy: the app keeps them, and each rule catches its mistake."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Template

from stacks.deploy_rules import (
    LAMBDA_ENVIRONMENT_BUDGET_BYTES,
    LAMBDA_ENVIRONMENT_LIMIT_BYTES,
    DeployRules,
    check_templates,
    environment_json,
    estimated_environment_bytes,
    estimated_length,
    leading_literal,
)
from stacks.patterns.asl_state_machine import VENDED_LOGS_PREFIX, vended_log_group_name
from stacks.app_assets import pinned_version


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


# -- lambda-environment-size and ssm-parameter-size ------------------------------------------------


def test_every_function_of_the_app_stays_within_the_environment_budget_and_the_controller_far_below(dev_assembly):
    # GIVEN the dev stage's templates, each token counted at its longest
    stacks, _ = dev_assembly
    templates = templates_of(stacks)
    sizes = {}
    for template in templates.values():
        for logical_id, resource in template["Resources"].items():
            if resource["Type"] == "AWS::Lambda::Function":
                variables = resource["Properties"]["Environment"]["Variables"]
                sizes[logical_id] = estimated_environment_bytes(variables, template, templates)
    # THEN every function fits the budget, and the controller (whose plans filled 4 KB in prod) has room to grow
    assert sizes and max(sizes.values()) <= LAMBDA_ENVIRONMENT_BUDGET_BYTES
    (controller,) = [size for logical_id, size in sizes.items() if logical_id.startswith("ControllerFunction")]
    assert controller < 1_500
    assert [f for f in check_templates(templates) if f.rule in ("lambda-environment-size", "ssm-parameter-size")] == []


def function_template(variables: dict[str, Any], **resources: Any) -> dict[str, Any]:
    return {"Resources": {**resources, "Fn": {"Type": "AWS::Lambda::Function",
                                              "Properties": {"Environment": {"Variables": variables}}}}}


def test_the_rule_catches_an_environment_over_the_budget_though_under_lambdas_limit():
    # GIVEN a function whose environment is 3.6 KB of literal text: Lambda would still take it
    variables = {"PLANS": "x" * 3_600}
    assert len(environment_json(variables)) < LAMBDA_ENVIRONMENT_LIMIT_BYTES
    # WHEN the rules run THEN they refuse it, naming the variable to move
    (finding,) = check_templates({"Probe.template.json": function_template(variables)})
    assert finding.rule == "lambda-environment-size" and "PLANS" in finding.message
    assert "SSM parameter" in finding.fix


def test_tokens_count_at_the_longest_value_cloudformation_can_give_them():
    # GIVEN a table CloudFormation names, a table named in the template, a queue, and one imported from another stack
    exporter = {"Resources": {"Imported": {"Type": "AWS::DynamoDB::Table", "Properties": {}}},
                "Outputs": {"Out": {"Value": {"Ref": "Imported"}, "Export": {"Name": "Other:Imported"}}}}
    template = function_template({}, Generated={"Type": "AWS::DynamoDB::Table", "Properties": {}},
                                 Named={"Type": "AWS::DynamoDB::Table", "Properties": {"TableName": "orders"}},
                                 Queue={"Type": "AWS::SQS::Queue", "Properties": {}})
    templates = {"Other": exporter, "Probe": template}
    # THEN each counts as the longest name AWS allows, or as its own name, or as the exporter's value
    assert estimated_length({"Ref": "Generated"}, template, templates) == 255
    assert estimated_length({"Ref": "Named"}, template, templates) == len("orders")
    assert estimated_length({"Fn::ImportValue": "Other:Imported"}, template, templates) == 255
    # AND a queue URL as `https://sqs.<region>.<suffix>/<account>/<80-character name>`
    assert estimated_length({"Ref": "Queue"}, template, templates) == len("https://sqs.../") + 20 + 20 + 12 + 1 + 80
    # AND a join adds its parts, and what the rules cannot bound counts 1 KB
    assert estimated_length({"Fn::Join": ["-", ["ab", {"Ref": "Named"}]]}, template, templates) == 9
    assert estimated_length({"Fn::Sub": "${AWS::Region}"}, template, templates) == 1_024


def test_a_few_tokens_are_enough_to_break_the_budget_when_counted_at_their_longest():
    # GIVEN twenty variables each naming a table CloudFormation will name: under 1 KB of template text
    resources = {f"Table{i}": {"Type": "AWS::DynamoDB::Table", "Properties": {}} for i in range(20)}
    variables = {f"TABLE_{i}": {"Ref": f"Table{i}"} for i in range(20)}
    template = function_template(variables, **resources)
    # WHEN the rules run THEN the function is refused: 20 names of up to 255 characters
    (finding,) = [f for f in check_templates({"Probe": template}) if f.rule == "lambda-environment-size"]
    assert "5," in finding.message


def test_synth_fails_for_a_function_whose_environment_exceeds_the_budget():
    def function(size: int):
        def build(stack: Stack) -> None:
            lambda_.Function(stack, "Fn", runtime=lambda_.Runtime.PYTHON_3_13, handler="index.handler",
                             code=lambda_.Code.from_inline("def handler(event, context): pass"),
                             environment={"PLANS": "x" * size})
        return build

    with pytest.raises(RuntimeError, match="throttling-deploy-rules::lambda-environment-size"):
        synth_with_rules(function(3_600))
    synth_with_rules(function(3_000))


def test_the_rule_catches_an_ssm_parameter_over_its_tier():
    template = {"Resources": {"Plan": {"Type": "AWS::SSM::Parameter", "Properties": {
        "Type": "String", "Value": {"Fn::Join": ["", ["x" * 4_000, {"Ref": "AWS::StackName"}]]}}}}}
    (finding,) = check_templates({"Probe": template})
    assert finding.rule == "ssm-parameter-size" and "4,096" in finding.message
    template["Resources"]["Plan"]["Properties"]["Tier"] = "Advanced"
    assert check_templates({"Probe": template}) == []


# -- alarm-evaluation ----------------------------------------------------------------------------


def test_every_alarm_of_the_app_evaluates_a_window_put_metric_alarm_takes(dev_assembly):
    # GIVEN the dev stage's templates, whose sustained alarms need 2 of 3 minutes
    stacks, _ = dev_assembly
    templates = {key: Template.from_stack(stack).to_json() for key, stack in stacks.items()}
    alarms = [r for t in templates.values() for r in t["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert any(a["Properties"].get("DatapointsToAlarm") == 2 for a in alarms)
    # THEN none breaks the rule
    assert [f for f in check_templates(templates) if f.rule == "alarm-evaluation"] == []


@pytest.mark.parametrize(("properties", "said"), [
    ({"EvaluationPeriods": 3, "DatapointsToAlarm": 4, "Period": 60}, "4 breaching datapoints of 3"),
    ({"EvaluationPeriods": 1441, "Period": 60}, "1441 periods of 60 s (86,460 s)"),
    ({"EvaluationPeriods": 1441, "Metrics": [{"Id": "m", "MetricStat": {"Period": 60}}, {"Id": "e", "Expression": "m"}]},
     "at most 86,400 s"),
    ({"EvaluationPeriods": 169, "Period": 3600}, "at most 604,800 s"),
])
def test_the_rule_catches_an_alarm_put_metric_alarm_would_refuse(properties, said):
    # GIVEN an alarm with more datapoints than periods, or a window too long for its period
    template = {"Resources": {"Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": properties}}}
    # WHEN the rules run THEN it is found, saying why
    (finding,) = check_templates({"t": template})
    assert finding.rule == "alarm-evaluation" and said in finding.message


# -- insight-rule-size ---------------------------------------------------------------------------


def test_every_contributor_insights_rule_of_the_app_fits_put_insight_rule(dev_assembly):
    # GIVEN the app's rules, their log groups' names counted at their longest (CloudFormation names them)
    stacks, _ = dev_assembly
    templates = templates_of(stacks)
    rules = [r for t in templates.values() for r in t["Resources"].values() if r["Type"] == "AWS::CloudWatch::InsightRule"]
    # THEN there are some, and none breaks the limit
    assert rules and [f for f in check_templates(templates) if f.rule == "insight-rule-size"] == []


def test_the_rule_catches_a_contributor_insights_rule_over_many_log_groups():
    # GIVEN a rule over 20 log groups CloudFormation names (up to 512 characters each)
    groups = {f"Group{i}": {"Type": "AWS::Logs::LogGroup", "Properties": {}} for i in range(20)}
    body = {"Fn::Join": ["", ['{"LogGroupNames":["', {"Fn::Join": ['","', [{"Ref": g} for g in groups]]}, '"]}']]}
    template = {"Resources": {**groups, "Rule": {"Type": "AWS::CloudWatch::InsightRule", "Properties": {
        "RuleName": "probe", "RuleState": "ENABLED", "RuleBody": body}}}}
    # THEN the rule is found over PutInsightRule's limit
    (finding,) = check_templates({"Probe": template})
    assert finding.rule == "insight-rule-size" and "8,192" in finding.message
    # AND two such groups fit
    template["Resources"]["Rule"]["Properties"]["RuleBody"] = {"Fn::Join": ["", ['{"LogGroupNames":["', {
        "Fn::Join": ['","', [{"Ref": "Group0"}, {"Ref": "Group1"}]]}, '"]}']]}
    assert check_templates({"Probe": template}) == []


# -- powertools-layer ----------------------------------------------------------------------------


def test_every_function_gets_the_powertools_release_the_tests_install_and_run(dev_assembly):
    # GIVEN the release requirements-lambda.txt pins, and the one installed in this environment (what the tests import)
    pinned = pinned_version("aws-lambda-powertools")
    assert importlib.metadata.version("aws-lambda-powertools") == pinned, "the venv is stale: run make setup"
    # WHEN the dev stage is synthesized
    stacks, _ = dev_assembly
    functions = 0
    for template in templates_of(stacks).values():
        for resource in template["Resources"].values():
            if resource["Type"] != "AWS::Lambda::Function":
                continue
            functions += 1
            # THEN each function's one layer is resolved at deploy from Powertools' parameter for that release
            (layer,) = resource["Properties"]["Layers"]
            parameter = template["Parameters"][layer["Ref"]]
            assert parameter["Type"] == "AWS::SSM::Parameter::Value<String>"
            assert parameter["Default"] == f"/aws/service/powertools/python/x86_64/python3.13/{pinned}"
    assert functions >= 8
    assert [f for f in check_templates(templates_of(stacks)) if f.rule == "powertools-layer"] == []


def test_the_rule_catches_a_template_whose_powertools_differs_from_the_pin(dev_assembly):
    # GIVEN the dev stage's templates, and a pin that says another release (requirements-lambda.txt changed alone)
    stacks, _ = dev_assembly
    # WHEN the rules check them against it THEN every function is named, with both releases
    findings = [f for f in check_templates(templates_of(stacks), powertools_version="3.38.0")
                if f.rule == "powertools-layer"]
    assert len(findings) >= 8
    assert all("3.37.0" in f.message and "3.38.0" in f.message for f in findings)


def test_the_rule_catches_a_layer_pinned_by_number_and_a_function_without_powertools():
    # GIVEN the layer as today's templates carried it (number 27, Powertools 3.23.0), and a function with no layer
    numbered = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":lambda:", {"Ref": "AWS::Region"},
                                  ":017000801446:layer:AWSLambdaPowertoolsPythonV3-python313-x86_64:27"]]}
    template = {"Resources": {
        "Numbered": {"Type": "AWS::Lambda::Function", "Properties": {
            "Handler": "handlers.controller.handler", "Runtime": "python3.13", "Layers": [numbered]}},
        "Bare": {"Type": "AWS::Lambda::Function", "Properties": {
            "Handler": "handlers.controller.handler", "Runtime": "python3.13"}}}}
    # WHEN the rules run THEN both are refused, each with its reason
    findings = {f.logical_id: f for f in check_templates({"Probe": template})}
    assert "by number" in findings["Numbered"].message and ":27" in findings["Numbered"].message
    assert "ImportModuleError" in findings["Bare"].message


def test_the_pin_is_read_from_the_requirements_line_with_extras_and_a_missing_pin_is_an_error(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# runtime\naws-lambda-powertools[tracer]==3.23.0  # layer 27\nboto3==1.44.*\n")
    assert pinned_version("aws-lambda-powertools", requirements) == "3.23.0"
    requirements.write_text("aws-lambda-powertools>=3\n")
    with pytest.raises(ValueError, match="pins no exact version of aws-lambda-powertools"):
        pinned_version("aws-lambda-powertools", requirements)

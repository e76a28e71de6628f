"""The CDK side and the controller agree: its environment and plans parse, the plans cover every caller, its alarms exist."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from aws_cdk.assertions import Template

from stacks.control_loop_stack import CONFIGURED_POLICY_FIELDS, controller_policy
from tests.contract.handler_environment import required_variables
from throttling.core.controller import ControllerPolicy, Setting
from throttling.core.controller.plan import Plans, parse_plan_documents
from throttling.core.tunables import parse_tunables

ROOT = Path(__file__).resolve().parents[2]


def rendered(value: Any) -> str:
    """A template string value with each CloudFormation token replaced by a placeholder."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(part if isinstance(part, str) else "TOKEN" for part in parts)
    return "TOKEN"


def controller_environment(stacks) -> dict[str, str]:
    (function,) = Template.from_stack(stacks["control_loop"]).find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "handlers.controller.handler"}}).values()
    return {name: rendered(value) for name, value in function["Properties"]["Environment"]["Variables"].items()}


def controller_plans(stacks) -> Plans:
    """The plan parameters the stack writes under the controller's path, as the controller parses them."""
    path = controller_environment(stacks)["CONTROLLER_PLANS_PATH"]
    documents = {}
    for parameter in Template.from_stack(stacks["control_loop"]).find_resources("AWS::SSM::Parameter").values():
        name = parameter["Properties"]["Name"]
        if name.startswith(path + "/"):
            documents[name.removeprefix(path + "/")] = rendered(parameter["Properties"]["Value"])
    return parse_plan_documents(documents)


def test_the_controller_environment_and_plans_parse_on_the_lambda_side(dev_assembly, dev_config):
    stacks, _ = dev_assembly
    env = controller_environment(stacks)
    plans = controller_plans(stacks)
    policy = ControllerPolicy.from_document(json.loads(env["CONTROLLER_POLICY"]))
    assert plans.refused == {}
    assert set(plans.downstreams) == {d.name for d in dev_config.downstreams}
    assert policy.mode == dev_config.control_loop.mode
    assert {route.downstream for route in plans.alarms.values()} == set(plans.downstreams)
    # AND the SQS consumer's mapping is the one to reconcile, and the large segment's the Map Runs to retune
    assert plans.downstreams["legacy_mainframe"].consumer_functions == ("TOKEN",)
    assert plans.downstreams["crm"].map_run_workflows == ("TOKEN",)
    assert {name for name, plan in plans.downstreams.items() if plan.map_run_workflows} == {"crm"}


def test_every_seed_is_inside_the_controller_bounds_so_its_first_run_changes_nothing(dev_assembly):
    stacks, _ = dev_assembly
    plans = controller_plans(stacks).downstreams
    seeds = {p["Properties"]["Name"]: p["Properties"]["Value"]
             for p in Template.from_stack(stacks["shared_limits"]).find_resources("AWS::SSM::Parameter").values()}
    for plan in plans.values():
        seed = parse_tunables(seeds[plan.parameter_name], ceiling_rate_per_sec=plan.contract_rate_per_sec).tunables
        assert plan.bounds.contains(Setting(seed.max_concurrency, seed.rate_per_sec)), plan.name
        assert plan.bounds.burst_for(seed.rate_per_sec) == seed.burst, plan.name
        assert plan.breaker_parameter_name in seeds


def test_every_function_that_calls_a_downstream_is_counted_in_its_plan(dev_assembly):
    # GIVEN every function of the app that names a downstream (its metrics carry its service)
    stacks, _ = dev_assembly
    plans = controller_plans(stacks).downstreams
    seen = set()
    for stack in stacks.values():
        for function in Template.from_stack(stack).find_resources("AWS::Lambda::Function").values():
            env = function["Properties"].get("Environment", {}).get("Variables", {})
            if "DOWNSTREAM_NAME" in env:
                # THEN the controller reads that service's metrics for that downstream
                assert env["POWERTOOLS_SERVICE_NAME"] in plans[env["DOWNSTREAM_NAME"]].services
                seen.add((env["DOWNSTREAM_NAME"], env["POWERTOOLS_SERVICE_NAME"]))
    # AND no plan lists a service nobody runs
    assert seen == {(name, service) for name, plan in plans.items() for service in plan.services}


def test_every_routed_alarm_exists_and_reaches_the_controller(dev_assembly):
    stacks, _ = dev_assembly
    template = Template.from_stack(stacks["control_loop"])
    routes = controller_plans(stacks).alarms
    names = {a["Properties"]["AlarmName"] for a in template.find_resources("AWS::CloudWatch::Alarm").values()}
    assert set(routes) <= names
    (rule,) = [r for r in template.find_resources("AWS::Events::Rule").values() if "EventPattern" in r["Properties"]]
    assert set(rule["Properties"]["EventPattern"]["detail"]["alarmName"]) == set(routes)


def test_every_environment_variable_the_controller_requires_is_set(dev_assembly):
    source = (ROOT / "lambdas" / "handlers" / "controller.py").read_text()
    required = required_variables(source)
    stacks, _ = dev_assembly
    assert required and required <= set(controller_environment(stacks))


def test_the_stack_hands_the_controller_its_own_types_and_they_come_back_equal(dev_assembly, dev_config):
    # GIVEN the policy and plans the stack built with the Lambda package's own dataclasses
    stacks, _ = dev_assembly
    built = stacks["control_loop"].controller_plans
    # WHEN the controller reads their documents back from its environment and the plan parameters
    env = controller_environment(stacks)
    policy = ControllerPolicy.from_document(json.loads(env["CONTROLLER_POLICY"]))
    read = controller_plans(stacks).downstreams
    # THEN it reads the very policy and plans the stack built (function names and workflow ARNs are tokens until
    # deploy)
    assert policy == controller_policy(dev_config.control_loop, tunables_cache_sec=dev_config.tunables_cache_sec)
    assert policy.setting_propagation_sec == dev_config.tunables_cache_sec
    # AND the deployed controller leaves the rate to the limiter's inner loop unless the config says otherwise
    assert policy.adjust_rate is dev_config.control_loop.adjust_rate is False
    with_rate = dataclasses.replace(dev_config.control_loop, adjust_rate=True)
    assert ControllerPolicy.from_document(controller_policy(with_rate).to_document(CONFIGURED_POLICY_FIELDS)).adjust_rate
    assert set(read) == set(built)
    for name, plan in built.items():
        deployed = {"consumer_functions": (), "map_run_workflows": ()}
        assert dataclasses.replace(read[name], **deployed) == dataclasses.replace(plan, **deployed)
        assert len(read[name].consumer_functions) == len(plan.consumer_functions)
        assert len(read[name].map_run_workflows) == len(plan.map_run_workflows)

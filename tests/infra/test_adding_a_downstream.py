"""Adding a downstream is one edit of cdk.json: its caller, tunables, controller plan and alarms follow.

(The emulator needs its simulator profile too, `localcloud.referee.downstream_simulator.PROFILES`.) Nothing
else lists the downstreams: the stacks, the control loop and the tests all derive them from the config.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from aws_cdk.assertions import Template

from stacks.app_stacks import synthesize
from stacks.config import load_config
from tests.contract.test_control_loop_contract import controller_plans
from throttling.core.controller import Bounds
from throttling.core import names, planning
from throttling.core.tunables import DownstreamTunables, parse_tunables

NEW = "geo_api"
NEW_DOWNSTREAM = {"base_url": "https://geo.example.com", "rate_limit_per_sec": 3, "burst": 3,
                  "expected_latency_ms": 250}


@pytest.fixture(scope="module")
def fifth(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory):
    # GIVEN a copy of the config with one more downstream (in the defaults every stage shares), nothing else changed
    context = copy.deepcopy(cdk_context)
    context["defaults"]["downstreams"][NEW] = NEW_DOWNSTREAM
    config = load_config(context["stages"], "dev", defaults=context["defaults"])
    # WHEN the app is synthesized from it
    stacks, _ = synthesize(config, tmp_path_factory.mktemp("cdk.out.fifth"), context)
    return config, stacks


def test_the_config_has_five_downstreams(fifth, dev_config):
    config, _ = fifth
    assert [d.name for d in config.downstreams] == [*(d.name for d in dev_config.downstreams), NEW]


def test_a_fifth_downstream_gets_its_own_caller(fifth):
    config, stacks = fifth
    functions = Template.from_stack(stacks["workflows"]).find_resources("AWS::Lambda::Function").values()
    # THEN one function calls it, with its contract in the environment
    (caller,) = [f for f in functions
                 if f["Properties"]["Environment"]["Variables"].get(names.ENV_DOWNSTREAM_NAME) == NEW]
    variables = caller["Properties"]["Environment"]["Variables"]
    assert caller["Properties"]["Handler"] == "handlers.call_downstream.handler"
    assert variables[names.ENV_DOWNSTREAM_BASE_URL] == NEW_DOWNSTREAM["base_url"]
    assert float(variables[names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC]) == NEW_DOWNSTREAM["rate_limit_per_sec"]
    assert variables[names.ENV_POWERTOOLS_SERVICE_NAME] == f"{NEW}-caller"


def test_a_fifth_downstream_gets_tunables_seeded_by_its_plan(fifth):
    config, stacks = fifth
    parameters = Template.from_stack(stacks["shared_limits"]).find_resources("AWS::SSM::Parameter").values()
    seeds = {p["Properties"]["Name"]: p["Properties"]["Value"] for p in parameters}
    # THEN its tunables document is seeded with the planned rate, burst and concurrency,
    # which the callers' parser takes unclamped under its contract
    plan = planning.plan_capacity(NEW_DOWNSTREAM["rate_limit_per_sec"], NEW_DOWNSTREAM["expected_latency_ms"],
                                  burst=NEW_DOWNSTREAM["burst"])
    seeded = parse_tunables(seeds[f"{config.ssm_prefix}/downstreams/{NEW}"],
                            ceiling_rate_per_sec=NEW_DOWNSTREAM["rate_limit_per_sec"],
                            ceiling_burst=NEW_DOWNSTREAM["burst"])
    assert seeded.clamped_fields == ()
    assert seeded.tunables == DownstreamTunables(rate_per_sec=plan.limiter_rate_per_sec, burst=plan.limiter_burst,
                                                 max_concurrency=plan.map_concurrency)
    # AND its breaker has a policy document too
    assert f"{config.ssm_prefix}/breakers/{NEW}" in seeds


def test_a_fifth_downstream_is_in_the_controllers_plans_with_its_alarms(fifth):
    config, stacks = fifth
    plans = controller_plans(stacks)
    # THEN the controller parses a plan for it, bounded as planned, reading its caller's metrics
    assert plans.refused == {}
    plan = plans.downstreams[NEW]
    assert plan.bounds == Bounds.from_document(planning.controller_bounds(
        NEW_DOWNSTREAM["rate_limit_per_sec"], NEW_DOWNSTREAM["burst"], NEW_DOWNSTREAM["expected_latency_ms"]))
    assert plan.services == (f"{NEW}-caller",)
    # AND its four alarms exist and are routed to it, each with its kind
    alarm_names = {a["Properties"]["AlarmName"]
                   for a in Template.from_stack(stacks["control_loop"]).find_resources("AWS::CloudWatch::Alarm").values()}
    routed = {name: route.kind for name, route in plans.alarms.items() if route.downstream == NEW}
    assert routed == {
        f"{config.stack_prefix}-{NEW}-ThrottleRate": names.ALARM_THROTTLED,
        f"{config.stack_prefix}-{NEW}-ErrorRate": names.ALARM_ERRORS,
        f"{config.stack_prefix}-{NEW}-ErrorRateSustained": names.ALARM_BREAKER,
        f"{config.stack_prefix}-{NEW}-LatencyP99": names.ALARM_LATENCY,
    }
    assert set(routed) <= alarm_names

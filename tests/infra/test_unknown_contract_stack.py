"""A downstream known only by a ceiling, as the stacks build it: its callers clamp to the ceiling, its tunables
document starts the inner loop at the seed, the controller plans from the ceiling."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from aws_cdk.assertions import Template

from stacks.app_stacks import synthesize
from stacks.config import load_config
from stacks.diagram import mermaid
from tests.contract.test_control_loop_contract import controller_plans
from throttling.core import names, planning
from throttling.core.adaptive_rate import AdaptiveRatePolicy
from throttling.core.controller import Bounds
from throttling.core.tunables import parse_tunables

NEW = "geo_api"
CEILING = 40
# All its owner knows: below 40 req/s. Discovery starts a fifth of the way up and may fall to a tenth.
UNKNOWN = {"base_url": "https://geo.example.com", "rate_ceiling_per_sec": CEILING, "burst": 8,
           "expected_latency_ms": 250, "discovery_seed_fraction": 0.2, "discovery_floor_fraction": 0.1}


@pytest.fixture(scope="module")
def unknown(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory):
    # GIVEN a copy of the config with one more downstream, configured with a ceiling instead of a limit
    context = copy.deepcopy(cdk_context)
    context["defaults"]["downstreams"][NEW] = UNKNOWN
    config = load_config(context["stages"], "dev", defaults=context["defaults"])
    # WHEN the app is synthesized from it
    stacks, _ = synthesize(config, tmp_path_factory.mktemp("cdk.out.unknown"), context)
    return config, stacks


def test_its_caller_clamps_to_the_ceiling(unknown):
    _, stacks = unknown
    functions = Template.from_stack(stacks["workflows"]).find_resources("AWS::Lambda::Function").values()
    (caller,) = [f for f in functions
                 if f["Properties"]["Environment"]["Variables"].get(names.ENV_DOWNSTREAM_NAME) == NEW]
    # THEN the rate no tunables document may pass, in its caller's environment, is the ceiling
    variables = caller["Properties"]["Environment"]["Variables"]
    assert float(variables[names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC]) == CEILING
    # AND the deploy-time defaults it falls back on are the seeded document, discovery included
    assert json.loads(variables[names.ENV_TUNABLES_DEFAULTS])[names.TUNABLE_SEED_FRACTION] == 0.2


def test_its_tunables_document_is_planned_from_the_ceiling_and_starts_the_loop_at_the_seed(unknown):
    config, stacks = unknown
    parameters = Template.from_stack(stacks["shared_limits"]).find_resources("AWS::SSM::Parameter").values()
    seeds = {p["Properties"]["Name"]: p["Properties"]["Value"] for p in parameters}
    # THEN the document is the plan a contract of 40 req/s would get, with the discovery's seed and floor
    plan = planning.plan_capacity(CEILING, UNKNOWN["expected_latency_ms"], burst=UNKNOWN["burst"])
    seeded = parse_tunables(seeds[f"{config.ssm_prefix}/downstreams/{NEW}"], ceiling_rate_per_sec=CEILING,
                            ceiling_burst=UNKNOWN["burst"])
    assert seeded.clamped_fields == ()
    assert (seeded.tunables.rate_per_sec, seeded.tunables.burst, seeded.tunables.max_concurrency) == (
        plan.limiter_rate_per_sec, plan.limiter_burst, plan.map_concurrency)
    assert seeded.tunables.adaptive == AdaptiveRatePolicy(seed_fraction=0.2, floor_fraction=0.1)


def test_the_controller_plans_it_from_the_ceiling_with_its_alarms(unknown):
    config, stacks = unknown
    plans = controller_plans(stacks)
    assert plans.refused == {}
    plan = plans.downstreams[NEW]
    # THEN no rate above the ceiling is believed, and the bounds are the ceiling's
    assert plan.contract_rate_per_sec == CEILING
    assert plan.bounds == Bounds.from_document(planning.controller_bounds(
        CEILING, UNKNOWN["burst"], UNKNOWN["expected_latency_ms"]))
    # AND its alarms are routed to it, as any downstream's
    assert {route.kind for route in plans.alarms.values() if route.downstream == NEW} == {
        names.ALARM_THROTTLED, names.ALARM_ERRORS, names.ALARM_BREAKER, names.ALARM_LATENCY}


def test_the_diagram_says_its_limit_is_unknown(unknown):
    config, stacks = unknown
    assert f'ds_{NEW}[["{NEW}<br/>limit unknown, below 40 req/s, burst 8"]]' in mermaid(stacks, config)

"""The CDK side and the Lambda side agree: every seeded tunable parses, and every variable a handler reads is set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from aws_cdk.assertions import Template

from throttling.tunables import parse_breaker_policy, parse_tunables

ROOT = Path(__file__).resolve().parents[2]


def test_every_seeded_tunable_parses_on_the_lambda_side_unclamped(dev_assembly, dev_config):
    stacks, _ = dev_assembly
    parameters = Template.from_stack(stacks["shared_limits"]).find_resources("AWS::SSM::Parameter")
    kinds = set()
    for parameter in parameters.values():
        name, value = parameter["Properties"]["Name"], parameter["Properties"]["Value"]
        kind, downstream_name = name.removeprefix("/throttling/dev/").split("/")
        downstream = dev_config.downstream(downstream_name)
        kinds.add(kind)
        # THEN it parses, within range, under its downstream's ceiling
        if kind == "downstreams":
            result = parse_tunables(value, ceiling_rate_per_sec=downstream.rate_limit_per_sec)
        else:
            result = parse_breaker_policy(value)
        assert result.clamped_fields == (), name
    # AND no kind of document was left unchecked
    assert kinds == {"downstreams", "breakers"}


def test_the_defaults_each_function_carries_equal_its_seed(dev_assembly):
    stacks, _ = dev_assembly
    seeds = {
        p["Properties"]["Name"]: p["Properties"]["Value"]
        for p in Template.from_stack(stacks["shared_limits"]).find_resources("AWS::SSM::Parameter").values()
    }
    functions = Template.from_stack(stacks["workflows"]).find_resources("AWS::Lambda::Function")
    carrying = [f["Properties"]["Environment"]["Variables"] for f in functions.values()
                if "TUNABLES_DEFAULTS" in f["Properties"]["Environment"]["Variables"]]
    assert carrying
    for env in carrying:
        seed = seeds[f"/throttling/dev/downstreams/{env['DOWNSTREAM_NAME']}"]
        assert parse_tunables(env["TUNABLES_DEFAULTS"]).tunables == parse_tunables(seed).tunables
        if "BREAKER_TUNABLES_DEFAULTS" in env:  # the payment authorizer also asks the breaker
            breaker_seed = seeds[f"/throttling/dev/breakers/{env['DOWNSTREAM_NAME']}"]
            assert parse_breaker_policy(env["BREAKER_TUNABLES_DEFAULTS"]) == parse_breaker_policy(breaker_seed)


@pytest.mark.parametrize("handler_module", ["call_downstream", "authorize_payment", "start_payment"])
def test_every_environment_variable_a_handler_requires_is_set(dev_assembly, handler_module):
    # GIVEN the variables the handler reads with os.environ[...] (a missing one fails at import)
    source = (ROOT / "lambdas" / "handlers" / f"{handler_module}.py").read_text()
    required = set(re.findall(r'os\.environ\["([A-Z_]+)"\]', source))
    assert required
    # THEN every function running that handler sets them
    stacks, _ = dev_assembly
    functions = Template.from_stack(stacks["workflows"]).find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": f"handlers.{handler_module}.handler"}}
    )
    assert functions
    for function in functions.values():
        assert required <= set(function["Properties"]["Environment"]["Variables"]), json.dumps(function)[:200]

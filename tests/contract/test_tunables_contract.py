"""The CDK side and the Lambda side agree: every seeded tunable parses, and every variable a handler reads is set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk.assertions import Template

from tests.contract.handler_environment import required_variables
from throttling.core.tunables import parse_breaker_policy, parse_tunables

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
            result = parse_tunables(value, ceiling_rate_per_sec=downstream.rate_limit_per_sec,
                                    ceiling_burst=downstream.burst)
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


@pytest.mark.parametrize("handler_module", ["call_downstream", "authorize_payment", "start_payment", "legacy_consumer",
                                            "decide_moderation"])
def test_every_environment_variable_a_handler_requires_is_set(dev_assembly, handler_module):
    # GIVEN the variables the handler reads with environ[...] (a missing one fails its first invocation)
    source = (ROOT / "lambdas" / "handlers" / f"{handler_module}.py").read_text()
    required = required_variables(source)
    assert required
    # THEN every function running that handler, in whichever stack, sets them
    functions = [f for f in _functions(dev_assembly) if f["Properties"]["Handler"] == f"handlers.{handler_module}.handler"]
    assert functions
    for function in functions:
        assert required <= set(function["Properties"]["Environment"]["Variables"]), json.dumps(function)[:200]


def _functions(dev_assembly) -> list[dict]:
    stacks, _ = dev_assembly
    return [function for stack in stacks.values()
            for function in Template.from_stack(stack).find_resources("AWS::Lambda::Function").values()]


def contract_gaps(functions: list[dict], config) -> list[str]:
    """Functions that read a downstream's tunables without that downstream's contract (rate and burst) to clamp to."""
    gaps = []
    for function in functions:
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        if "TUNABLES_PARAMETER_NAME" not in variables:
            continue
        name = variables.get("DOWNSTREAM_NAME")
        downstream = next((d for d in config.downstreams if d.name == name), None)
        if downstream is None:
            gaps.append(f"{function['Properties'].get('Handler')}: reads tunables but names no known DOWNSTREAM_NAME ({name!r})")
            continue
        expected = {"DOWNSTREAM_RATE_LIMIT_PER_SEC": str(downstream.rate_limit_per_sec),
                    "DOWNSTREAM_BURST": str(downstream.burst)}
        carried = {key: variables.get(key) for key in expected}
        if carried != expected:
            gaps.append(f"{function['Properties'].get('Handler')} ({name}): carries {carried}, its contract is {expected}")
    return gaps


def test_every_function_that_reads_a_downstream_s_tunables_carries_its_contract(dev_assembly, dev_config):
    # GIVEN every function of the app / THEN each one reading a downstream's tunables can clamp to its contract
    readers = [f for f in _functions(dev_assembly) if "TUNABLES_PARAMETER_NAME" in f["Properties"]["Environment"]["Variables"]]
    assert {f["Properties"]["Handler"] for f in readers} >= {
        "handlers.call_downstream.handler", "handlers.authorize_payment.handler", "handlers.legacy_consumer.handler"}
    assert contract_gaps(readers, dev_config) == []


def test_the_contract_guard_catches_a_function_without_the_burst(dev_config):
    # GIVEN the legacy consumer as it was deployed before, with the rate and no burst
    consumer = {"Properties": {"Handler": "handlers.legacy_consumer.handler", "Environment": {"Variables": {
        "DOWNSTREAM_NAME": "legacy_mainframe", "TUNABLES_PARAMETER_NAME": "/throttling/dev/downstreams/legacy_mainframe",
        "DOWNSTREAM_RATE_LIMIT_PER_SEC": "1.0"}}}}
    # WHEN the guard reads it THEN it names the function and the missing burst
    (gap,) = contract_gaps([consumer], dev_config)
    assert "handlers.legacy_consumer.handler (legacy_mainframe)" in gap and "'DOWNSTREAM_BURST': None" in gap


@pytest.fixture
def call_downstream_dependencies(import_handler):
    module = import_handler("handlers.call_downstream", {"POWERTOOLS_METRICS_NAMESPACE": "Test"})
    return module.build_dependencies({
        "DOWNSTREAM_NAME": "crm", "DOWNSTREAM_BASE_URL": "http://127.0.0.1:9", "DOWNSTREAM_RATE_LIMIT_PER_SEC": "10",
        "DOWNSTREAM_BURST": "10", "TUNABLES_PARAMETER_NAME": "/t", "RATE_LIMITER_TABLE_NAME": "l"})


@pytest.fixture
def authorize_payment_dependencies(import_handler):
    module = import_handler("handlers.authorize_payment", {"POWERTOOLS_METRICS_NAMESPACE": "Test"})
    return module.build_dependencies({
        "DOWNSTREAM_NAME": "payment_gateway", "DOWNSTREAM_BASE_URL": "http://127.0.0.1:9",
        "DOWNSTREAM_RATE_LIMIT_PER_SEC": "2", "DOWNSTREAM_BURST": "2", "TUNABLES_PARAMETER_NAME": "/t",
        "BREAKER_TUNABLES_PARAMETER_NAME": "/b", "RATE_LIMITER_TABLE_NAME": "l", "BREAKER_TABLE_NAME": "b",
        "IDEMPOTENCY_TABLE_NAME": "i"})


@pytest.fixture
def legacy_consumer_dependencies(legacy_consumer_module, legacy_consumer_environment):
    return legacy_consumer_module.build_dependencies(legacy_consumer_environment)


@pytest.mark.parametrize("dependencies_fixture", ["call_downstream_dependencies", "authorize_payment_dependencies",
                                                  "legacy_consumer_dependencies"])
def test_each_handler_clamps_a_burst_above_its_contract(request, dependencies_fixture, monkeypatch):
    # GIVEN a handler as deployed, and a document asking for 40 more than its downstream's burst
    deps = request.getfixturevalue(dependencies_fixture)
    document = json.dumps({"rate_per_sec": 0.5, "burst": deps.contract.burst + 40, "max_concurrency": 1,
                           "mode": "manual"})
    monkeypatch.setattr(deps.tunables, "_fetch", lambda name: document)
    # WHEN it reads its tunables THEN the contract's burst is in force
    assert deps.tunables.get().burst == deps.contract.burst

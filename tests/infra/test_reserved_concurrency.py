"""Reserved concurrency is a stage setting: a stage that reserves gets 9 in all, one that does not gets none."""

from __future__ import annotations

from dataclasses import replace

import pytest
from aws_cdk.assertions import Template

from stacks.app_stacks import synthesize
from stacks.use_cases.payments import payment_authorizer_concurrency


@pytest.fixture(scope="module")
def reserving_stacks(tmp_path_factory, dev_config, cdk_context):
    stacks, _ = synthesize(replace(dev_config, reserve_concurrency=True), tmp_path_factory.mktemp("cdk.out"),
                           cdk_context)
    return stacks


def reservations(stacks) -> dict[str, int]:
    found = {}
    for stack in stacks.values():
        for function in Template.from_stack(stack).find_resources("AWS::Lambda::Function").values():
            reserved = function["Properties"].get("ReservedConcurrentExecutions")
            if reserved is not None:
                found[function["Properties"]["Handler"]] = reserved
    return found


def test_a_stage_that_reserves_gives_each_function_its_share(reserving_stacks, dev_config):
    # THEN the controller and the sweep reserve 1, the authorizer its gateway's calls and waiters, the consumer its
    # mapping's concurrency: 9 in all, more than a new account (limit 10, 100 kept unreserved) can give
    assert reservations(reserving_stacks) == {
        "handlers.controller.handler": 1,
        "handlers.reclaim_leases.handler": 1,
        "handlers.authorize_payment.handler": payment_authorizer_concurrency(dev_config.downstream("payment_gateway")),
        "handlers.legacy_consumer.handler": 2,
    }
    assert sum(reservations(reserving_stacks).values()) == 9


def test_dev_reserves_nothing_and_its_calls_stay_bounded(dev_assembly):
    stacks, _ = dev_assembly
    assert reservations(stacks) == {}
    # AND the consumer's mapping still takes at most 2 batches at once
    Template.from_stack(stacks["buffers"]).has_resource_properties(
        "AWS::Lambda::EventSourceMapping", {"ScalingConfig": {"MaximumConcurrency": 2}})


def test_prod_reserves(cdk_stages):
    from stacks.config import load_config

    assert load_config(cdk_stages, "prod").reserve_concurrency is True
    assert load_config(cdk_stages, "dev").reserve_concurrency is False


def test_the_account_settings_a_stage_needs_travel_with_its_templates(dev_assembly, reserving_stacks):
    # GIVEN dev (which does not ask for Parameter Store's higher throughput) THEN its shared-limits template says so,
    # where `throttlectl preflight` reads it
    from stacks.app_stacks import ACCOUNT_SETTINGS_METADATA

    stacks, _ = dev_assembly
    metadata = Template.from_stack(stacks["shared_limits"]).to_json()["Metadata"]
    assert metadata[ACCOUNT_SETTINGS_METADATA] == {"ParameterStoreHighThroughput": False}


def test_prod_asks_for_parameter_stores_higher_throughput(cdk_stages):
    from stacks.config import load_config

    assert load_config(cdk_stages, "prod").parameter_store_high_throughput is True
    assert load_config(cdk_stages, "dev").parameter_store_high_throughput is False

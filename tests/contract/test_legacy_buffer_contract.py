"""Use case 4's three worlds agree: the buffers stack, the legacy consumer's code, and the publishing ASL file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk.assertions import Template

from tests.contract.handler_environment import required_variables
from throttling.core.backoff import postpone_for_sec
from throttling.core.tunables import parse_tunables

ROOT = Path(__file__).resolve().parents[2]
ASL = ROOT / "statemachines" / "legacy_publish.asl.json"
HANDLER_SOURCE = ROOT / "lambdas" / "handlers" / "legacy_consumer.py"


@pytest.fixture(scope="module")
def buffers(dev_assembly) -> Template:
    stacks, _ = dev_assembly
    return Template.from_stack(stacks["buffers"])


@pytest.fixture(scope="module")
def consumer_env(buffers) -> dict:
    (function,) = buffers.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "handlers.legacy_consumer.handler"}}).values()
    return function["Properties"]["Environment"]["Variables"]


def test_every_environment_variable_the_consumer_requires_is_set(consumer_env):
    required = required_variables(HANDLER_SOURCE.read_text())
    assert {"QUEUE_URL", "RECORDS_TABLE_NAME", "RATE_LIMITER_TABLE_NAME"} <= required
    assert required <= set(consumer_env)


def test_the_defaults_the_consumer_carries_equal_the_mainframe_seed(dev_assembly, consumer_env):
    stacks, _ = dev_assembly
    (seed,) = [p["Properties"]["Value"]
               for p in Template.from_stack(stacks["shared_limits"]).find_resources("AWS::SSM::Parameter").values()
               if p["Properties"]["Name"].endswith("/downstreams/legacy_mainframe")]
    assert parse_tunables(consumer_env["TUNABLES_DEFAULTS"]).tunables == parse_tunables(seed).tunables


def test_every_state_says_why_and_every_task_retries_with_jitter():
    definition = json.loads(ASL.read_text())
    states = dict(definition["States"])
    for state in list(states.values()):
        states.update(state.get("ItemProcessor", {}).get("States", {}))
    for name, state in states.items():
        assert state.get("Comment"), name
        if state["Type"] == "Task":
            assert state["Retry"] and all(r.get("JitterStrategy") == "FULL" for r in state["Retry"]), name


def test_what_the_workflow_sends_is_what_the_consumer_parses(legacy_consumer_module):
    # GIVEN a record as the workflow's input holds it, turned into a body as its Task does (States.JsonToString)
    module = legacy_consumer_module
    record = {"record_id": "r-1", "payload": {"amount_cents": 100}}
    # THEN the consumer reads the same record back
    parsed = module.parse_record(json.dumps(record, separators=(",", ":")))
    assert (parsed.record_id, parsed.payload) == ("r-1", {"amount_cents": 100})


def test_a_healthy_record_cannot_reach_the_dead_letter_queue_short_of_days_of_refusals_nor_expire(buffers, legacy_consumer_module):
    # GIVEN the deployed receive count and retention, and the consumer's postponement rule
    module = legacy_consumer_module
    (queue,) = [q for q in buffers.find_resources("AWS::SQS::Queue").values() if "RedrivePolicy" in q["Properties"]]
    max_receive_count = queue["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    retention_sec = queue["Properties"]["MessageRetentionPeriod"]
    # WHEN a record is postponed on every receive, with the shortest and the longest Retry-After
    hold_sec = module.LONGEST_HOLD_BEFORE_INVOKE_SEC
    shortest = sum(postpone_for_sec(None, n, hold_before_invoke_sec=hold_sec) for n in range(1, max_receive_count + 1))
    longest = sum(postpone_for_sec(43_200, n, hold_before_invoke_sec=hold_sec) for n in range(1, max_receive_count + 1))
    # THEN reaching the dead-letter queue takes more than two days of refusals ...
    assert shortest > 2 * 86_400
    # ... and even the longest postponements leave it in the queue before its retention ends
    assert longest < retention_sec


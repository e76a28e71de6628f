"""The workflows' normalizing states, run on the emulator with every kind of value an operator can type.

The states are taken from `statemachines/crm_batch_email.asl.json` as deployed (the contract tests
show the other workflows hold the same ones); the SSM read in front of them is replaced by a Pass
that hands them the document, so each value costs one short execution. The emulator refuses what
AWS refuses (a `MaxConcurrencyPath` that is not a whole number, a `States.MathAdd` argument beyond
32 bits), so a value that got through unnormalized would fail the Map here as on AWS. The workflow
tests run a few of these values end to end.
"""

from __future__ import annotations

import copy
import json
import math
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from throttling.core.tunables import MAX_CONCURRENCY_BOUNDS

pytestmark = pytest.mark.emulator

ROOT = Path(__file__).resolve().parents[2]
NORMALIZING_STATES = ("UseFallbackConcurrency", "CheckMaxConcurrency", "UseSafeConcurrency", "CapConcurrency",
                      "RoundConcurrency", "CheckRounding", "RoundDownConcurrency", "UseRoundedConcurrency",
                      "UseTunedConcurrency")
CEILING = MAX_CONCURRENCY_BOUNDS[1]
MISSING = object()


def probe_definition() -> dict[str, Any]:
    """The normalizing states, fed by a Pass instead of SSM, ending in a Map that runs with their value."""
    states = json.loads((ROOT / "statemachines" / "crm_batch_email.asl.json").read_text())["States"]
    probe = {name: copy.deepcopy(states[name]) for name in NORMALIZING_STATES}
    for state in probe.values():
        if state.get("Next") not in (None, *NORMALIZING_STATES):
            state["Next"] = "RunWithIt"
    probe["RunWithIt"] = {
        "Type": "Map", "Comment": "fails, as on AWS, unless the concurrency is a whole number from 0",
        "ItemsPath": "$.items", "MaxConcurrencyPath": "$.concurrency.max_concurrency", "ResultPath": None,
        "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": "Item",
                          "States": {"Item": {"Type": "Pass", "Comment": "one item", "End": True}}},
        "OutputPath": "$.concurrency", "End": True}
    return {"Comment": "probe: the workflows' concurrency normalization", "StartAt": "Start", "States": {
        "Start": {"Type": "Choice", "Comment": "a read that failed, or a document",
                  "Choices": [{"Variable": "$.concurrency.Error", "IsPresent": True, "Next": "UseFallbackConcurrency"}],
                  "Default": "CheckMaxConcurrency"},
        **probe}}


@pytest.fixture(scope="module")
def normalize(cloud):
    """`normalize(document_or_error)` -> the concurrency object the Map ran with ({max_concurrency, note})."""
    sfn = cloud.client("stepfunctions")
    arn = sfn.create_state_machine(name=f"concurrency-probe-{uuid.uuid4().hex[:8]}",
                                   definition=json.dumps(probe_definition()),
                                   roleArn="arn:aws:iam::123456789012:role/probe")["stateMachineArn"]

    def run(concurrency: dict[str, Any]) -> dict[str, Any]:
        # Named: moto names every unnamed execution "None", so a second one would be refused.
        execution = sfn.start_execution(stateMachineArn=arn, name=uuid.uuid4().hex, input=json.dumps(
            {"concurrency": concurrency, "items": [1, 2, 3]}))["executionArn"]
        deadline = time.monotonic() + 30
        while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert described["status"] == "SUCCEEDED", (described.get("error"), described.get("cause"))
        return json.loads(described["output"])

    return run


def expected(value: Any) -> int:
    """What the workflow must run with: a whole number from 1 to the ceiling, never more than the operator asked."""
    if value is MISSING or isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
        return 1
    return CEILING if value > CEILING else math.floor(value)


HOSTILE = [MISSING, None, True, "3", "", {}, [2], -2, 0, 0.5, 0.9999, 1.2, 1.5, 2.5, 2.4999, 999.7, 1000.4, 1e15,
           10**20, 2**31]
FINE = [1, 1.0, 2, 7, 1000, 1000.0]


def label(value: Any) -> str:
    return "missing" if value is MISSING else repr(value)


@pytest.mark.parametrize(("value", "as_tuned"), [pytest.param(v, False, id=label(v)) for v in HOSTILE]
                         + [pytest.param(v, True, id=label(v)) for v in FINE])
def test_every_value_becomes_a_whole_concurrency_from_1_to_the_ceiling(normalize, value, as_tuned):
    # GIVEN a document whose max_concurrency is `value`
    document = {} if value is MISSING else {"max_concurrency": value}
    # WHEN the normalizing states run, and a Map runs with what they made
    result = normalize({"document": {"rate_per_sec": 9.9, **document}})
    # THEN the Map accepted it, it is the value asked for made whole and bounded, and the note says why it differs
    assert result["max_concurrency"] == expected(value)
    assert isinstance(result["max_concurrency"], int)
    assert (result["note"] is None) == as_tuned, result


@pytest.mark.parametrize(("value", "note"), [
    (MISSING, "max_concurrency missing, not a number or below 1: one at a time"),
    ("3", "max_concurrency missing, not a number or below 1: one at a time"),
    (0, "max_concurrency missing, not a number or below 1: one at a time"),
    (2.5, "max_concurrency not a whole number: rounded down"),
    (2.4, "max_concurrency not a whole number: rounded down"),
    (1e15, "max_concurrency above 1000: capped at 1000"),
], ids=["missing", "string", "zero", "2.5", "2.4", "1e15"])
def test_the_note_says_what_was_done(normalize, value, note):
    document = {} if value is MISSING else {"max_concurrency": value}
    assert normalize({"document": document})["note"] == note


def test_a_document_that_is_not_an_object_runs_one_at_a_time(normalize):
    assert normalize({"document": 5}) == {
        "max_concurrency": 1, "note": "max_concurrency missing, not a number or below 1: one at a time"}


def test_a_read_that_failed_runs_one_at_a_time_and_names_the_error(normalize):
    result = normalize({"Error": "Ssm.ThrottlingException", "Cause": "Rate exceeded"})
    assert result == {"max_concurrency": 1, "note": "tunables unreadable (Ssm.ThrottlingException): one at a time"}

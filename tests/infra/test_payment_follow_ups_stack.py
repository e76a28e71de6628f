"""Use case 2's follow-ups in the synthesized app: a Parallel of three branches, each calling its own downstream's
caller with its own retries, and the workflow's role allowed to invoke exactly the callers it calls."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.cloudformation import referenced_ids, without_hash
from tests.infra.test_parked_orders_stack import by_prefix, granted

FOLLOW_UP_CALLERS = {"WarehouseCallerArn": "WarehouseCallerFunction", "MessagingCallerArn": "MessagingCallerFunction",
                     "LedgerCallerArn": "LedgerCallerFunction"}
RETRYABLE = {"RateLimited", "DownstreamThrottled", "DownstreamUnavailable"}


@pytest.fixture(scope="module")
def workflow(templates) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The payment workflow's logical id, resource and deployed definition."""
    logical_id, machine = by_prefix(templates["workflows"], "AWS::StepFunctions::StateMachine", "PaymentAuthorization")
    return logical_id, machine, json.loads(machine["Properties"]["DefinitionString"])


def test_each_follow_up_placeholder_is_its_own_downstreams_caller(workflow):
    _, machine, _ = workflow
    substitutions = machine["Properties"]["DefinitionSubstitutions"]
    # THEN each follow-up's placeholder is the ARN of that downstream's caller, and no two share one
    callers = {placeholder: {without_hash(i) for i in referenced_ids(substitutions[placeholder])}
               for placeholder in FOLLOW_UP_CALLERS}
    assert callers == {placeholder: {caller} for placeholder, caller in FOLLOW_UP_CALLERS.items()}


def test_the_follow_ups_are_a_parallel_of_three_branches_each_with_its_own_retries(workflow):
    _, _, definition = workflow
    follow_ups = definition["States"]["FollowUps"]
    assert follow_ups["Type"] == "Parallel"
    # THEN there are three branches, each calling one distinct caller, retrying its retryable errors with
    # exponential backoff and full jitter, and catching everything so the branch always reports
    called = []
    for branch in follow_ups["Branches"]:
        (task,) = [s for s in branch["States"].values() if s["Type"] == "Task"]
        called.append(task["Parameters"]["FunctionName"])
        retried = {error for retrier in task["Retry"] for error in retrier["ErrorEquals"]}
        assert RETRYABLE <= retried
        assert all(r["JitterStrategy"] == "FULL" and r["BackoffRate"] > 1 and r["MaxDelaySeconds"] for r in task["Retry"])
        assert [c["ErrorEquals"] for c in task["Catch"]] == [["States.ALL"]]
        assert task["Parameters"]["Payload"]["idempotency_key.$"].startswith("States.Format(")
    assert called == ["${WarehouseCallerArn}", "${MessagingCallerArn}", "${LedgerCallerArn}"]
    # AND the Parallel leads to the check of what was done; a failure of the Parallel itself to the compensation
    assert follow_ups["Next"] == "CollectFollowUps"
    assert follow_ups["Catch"][0]["Next"] == "PlanFollowUpsUnknown"
    assert definition["States"]["CheckStock"]["Default"] == "FollowUps"


def test_the_workflow_may_invoke_its_callers_and_no_other(templates, workflow):
    _, machine, _ = workflow
    (role_id,) = referenced_ids(machine["Properties"]["RoleArn"])
    # THEN the role invokes the authorizer, the gateway's caller and the three follow-ups' callers, unqualified
    invoked = {resource for resource, actions in granted(templates["workflows"], role_id).items()
               if "lambda:InvokeFunction" in actions}
    assert invoked == {"PaymentAuthorizerFunction", "PaymentGatewayCallerFunction", *FOLLOW_UP_CALLERS.values()}

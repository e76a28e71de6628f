"""The UGC moderation workflow holds a lease of the AI model's in-flight semaphore around every call, and gives it back.

Walked from the ASL file, not trusted from its comments: every path that may hold a lease (after an
acquire, or after an acquire that failed: a write whose answer was lost may hold one) reaches a
release before the iteration ends or waits; no model call runs without a lease; the call's timeout
is caught, so it takes the release path too. The workflow's expressions are the semaphore core's,
its lease outlasts the longest the call can hold it, and its role may update the semaphores table
and no other. The last tests show each check catches the mistake it is for.
"""

from __future__ import annotations

import copy
import json
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from stacks.patterns import longest_run_sec
from stacks.use_cases.ugc_moderation import model_call_lease_sec
from throttling.core import names, semaphore

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = json.loads((ROOT / "statemachines" / "ugc_moderation.asl.json").read_text())
FREE, MAYBE, HELD = "free", "maybe", "held"
ACQUIRE, RELEASE, CALLER = "${SemaphoreAcquireUpdate}", "${SemaphoreReleaseUpdate}", "${AiModelCallerFunctionArn}"


def item_states(definition: dict[str, Any]) -> dict[str, Any]:
    return definition["States"]["ModerateWithEachModel"]["ItemProcessor"]


def arguments(state: dict[str, Any]) -> dict[str, Any]:
    return state.get("Arguments", state.get("Parameters", {}))


def is_acquire(state: dict[str, Any]) -> bool:
    return arguments(state).get("UpdateExpression") == ACQUIRE


def is_release(state: dict[str, Any]) -> bool:
    return arguments(state).get("UpdateExpression") == RELEASE


def edges(state: dict[str, Any]) -> list[tuple[str, bool]]:
    """(next state, whether it is taken on an error) for every way out of a state."""
    found = [(state["Next"], False)] if "Next" in state else []
    found += [(choice["Next"], False) for choice in state.get("Choices", [])]
    found += [(state["Default"], False)] if "Default" in state else []
    return found + [(catcher["Next"], True) for catcher in state.get("Catch", [])]


def lease_problems(processor: dict[str, Any]) -> list[str]:
    """Every way a lease could be kept past the iteration or across a wait, or a call made without one.

    A lease is `HELD` after an acquire succeeded, and `MAYBE` after one failed: its write may have
    succeeded with its answer lost. Acquiring again then is harmless (the owner is the same, and the
    acquire's condition refuses an owner a second slot), but ending or waiting is not. A release that
    failed leaves a lease that expires on its own, which is what the lease is for.
    """
    states, problems = processor["States"], set()
    seen, queue = set(), deque([(processor["StartAt"], FREE)])
    while queue:
        name, holding = queue.popleft()
        if (name, holding) in seen:
            continue
        seen.add((name, holding))
        state = states[name]
        if is_acquire(state) and holding == HELD:
            problems.add(f"{name} takes a second lease while one is held")
        if CALLER in json.dumps(state) and holding != HELD:
            problems.add(f"{name} calls the model without a lease")
        if holding != FREE and state["Type"] == "Wait":
            problems.add(f"{name} waits holding a lease")
        if holding != FREE and (state.get("End") or state["Type"] in ("Succeed", "Fail")):
            problems.add(f"the iteration ends at {name} holding a lease")
        if CALLER in json.dumps(state) and state.get("TimeoutSeconds") and not any(
                {"States.ALL", "States.Timeout"} & set(c["ErrorEquals"]) for c in state.get("Catch", [])):
            problems.add(f"{name} times out past every Catch, so the execution fails holding a lease")
        for target, on_error in edges(state):
            if is_acquire(state):
                after = MAYBE if on_error else HELD
            elif is_release(state):
                after = FREE
            else:
                after = holding
            queue.append((target, after))
    return sorted(problems)


# -- the file -------------------------------------------------------------------------------------------
def test_every_path_gives_the_lease_back_and_no_call_runs_without_one():
    # GIVEN the model iteration of the workflow WHEN every path through it is walked
    # THEN each gives its lease back before it waits or ends, and the call always holds one
    assert lease_problems(item_states(DEFINITION)) == []
    # AND the walk saw what it checks: one acquire, three releases, the call
    states = item_states(DEFINITION)["States"]
    assert [n for n, s in states.items() if is_acquire(s)] == ["AcquireModelSlot"]
    assert sorted(n for n, s in states.items() if is_release(s)) == [
        "ReleaseAfterAnswer", "ReleaseAfterCallFailed", "ReleaseAfterNoSlot"]


def test_waiting_for_a_slot_is_a_bounded_jittered_retry_that_ends_in_review():
    acquire = item_states(DEFINITION)["States"]["AcquireModelSlot"]
    (busy,) = [r for r in acquire["Retry"] if r["ErrorEquals"] == ["DynamoDB.ConditionalCheckFailedException"]]
    # THEN the wait is jittered, capped, and bounded (20 attempts, never above 133 s in all) ...
    assert (busy["JitterStrategy"], busy["MaxDelaySeconds"], busy["MaxAttempts"]) == ("FULL", 8, 20)
    assert longest_run_sec({"Retry": [busy]}) < 133
    # ... and once spent, the model's verdict is 'unavailable' (ModelBusy), which sends the upload to review
    (spent,) = [c for c in acquire["Catch"] if c["ErrorEquals"] == ["DynamoDB.ConditionalCheckFailedException"]]
    assert "'Error': 'ModelBusy'" in spent["Output"]
    assert item_states(DEFINITION)["States"][spent["Next"]]["Next"] == "ModelUnavailable"


def test_the_lease_outlasts_the_longest_the_call_can_hold_it():
    states = item_states(DEFINITION)["States"]
    # GIVEN the call: 60 s per attempt, 9 attempts, 15 s of retry delays at most
    assert longest_run_sec(states["CallModel"]) == 9 * 60 + 15
    # THEN the lease covers it and the release's own retries (1 + 2 + 4 s)
    assert model_call_lease_sec(DEFINITION) == 9 * 60 + 15 + 7


def test_the_longest_run_counts_aws_defaults_for_what_a_retrier_leaves_out():
    # GIVEN a 10 s task retried on defaults (3 attempts, 1 s, x2) and a capped retrier, and a task with no timeout
    retried = {"TimeoutSeconds": 10, "Retry": [{"ErrorEquals": ["A"]},
                                               {"ErrorEquals": ["B"], "IntervalSeconds": 3, "MaxAttempts": 2, "MaxDelaySeconds": 4}]}
    # THEN every attempt may run to its timeout, and every delay to its cap
    assert longest_run_sec(retried) == 6 * 10 + (1 + 2 + 4) + (3 + 4)
    assert longest_run_sec({"Retry": [{"ErrorEquals": ["A"], "MaxAttempts": 0}]}) == 0


def test_the_workflow_writes_the_semaphore_as_the_core_defines_it(templates):
    # GIVEN the deployed moderation workflow's substitutions
    (machine,) = [r for r in templates["workflows"]["Resources"].values()
                  if r["Type"] == "AWS::StepFunctions::StateMachine"
                  and "SemaphoreAcquireUpdate" in r["Properties"].get("DefinitionSubstitutions", {})]
    substitutions = machine["Properties"]["DefinitionSubstitutions"]
    # THEN the expressions are the core's, one definition for the Lambda adapter and the workflow
    assert {name: substitutions[name] for name in substitutions if name.startswith("Semaphore") and name != "SemaphoreTableName"} == {
        "SemaphoreAcquireUpdate": semaphore.SEMAPHORE_ACQUIRE_UPDATE,
        "SemaphoreAcquireCondition": semaphore.SEMAPHORE_ACQUIRE_CONDITION,
        "SemaphoreReleaseUpdate": semaphore.SEMAPHORE_RELEASE_UPDATE,
        "SemaphoreReleaseCondition": semaphore.SEMAPHORE_RELEASE_CONDITION,
        "SemaphoreCreateCondition": semaphore.SEMAPHORE_CREATE_CONDITION,
    }
    assert substitutions["AiModelSemaphoreName"] == names.in_flight_semaphore_name("ai_model")
    assert (substitutions["AiModelMaxInFlight"], substitutions["AiModelLeaseSec"]) == ("3", str(model_call_lease_sec(DEFINITION)))
    # AND the item it sets up, and the values its expressions name, are those the adapter writes
    states = item_states(DEFINITION)["States"]
    assert states["SetUpSemaphore"]["Parameters"]["Item"] == semaphore.new_semaphore_item("${AiModelSemaphoreName}")
    assert set(arguments(states["AcquireModelSlot"])["ExpressionAttributeValues"]) == {":expiry", ":one", ":limit"}
    assert set(arguments(states["ReleaseAfterAnswer"])["ExpressionAttributeValues"]) == {":minus_one"}


def test_the_role_may_update_the_semaphores_table_and_no_other(templates):
    # GIVEN the moderation workflow's role, and the semaphores table exported by the shared-limits stack
    workflows = templates["workflows"]
    (machine,) = [r for r in workflows["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"
                  and "SemaphoreAcquireUpdate" in r["Properties"].get("DefinitionSubstitutions", {})]
    role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    statements = [s for r in workflows["Resources"].values() if r["Type"] == "AWS::IAM::Policy"
                  and {"Ref": role_id} in r["Properties"]["Roles"] for s in r["Properties"]["PolicyDocument"]["Statement"]]
    # WHEN the statements that allow an UpdateItem are read
    updating = [s for s in statements if "dynamodb:UpdateItem" in s["Action"]]
    # THEN there is one, on the semaphores table alone (the table's name comes from the same export)
    assert len(updating) == 1
    semaphore_table = machine["Properties"]["DefinitionSubstitutions"]["SemaphoreTableName"]["Fn::ImportValue"]
    resources = updating[0]["Resource"] if isinstance(updating[0]["Resource"], list) else [updating[0]["Resource"]]
    assert all("SemaphoresTable" in json.dumps(resource) for resource in resources), resources
    assert "SemaphoresTable" in semaphore_table
    assert set(updating[0]["Action"]) == {"dynamodb:UpdateItem", "dynamodb:PutItem"}


# -- the checks catch what they are for -----------------------------------------------------------------
def mutated(change) -> dict[str, Any]:
    definition = copy.deepcopy(DEFINITION)
    change(item_states(definition)["States"])
    return item_states(definition)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: s["CallModel"].update(Next="ModelAnswered"), "the iteration ends at ModelAnswered holding a lease"),
        (lambda s: s["CallModel"]["Catch"][0].update(Next="RouteCallError"), "WaitBeforeRetry waits holding a lease"),
        (lambda s: s["CallModel"].update(Catch=[]), "CallModel times out past every Catch"),
        (lambda s: s["AcquireModelSlot"]["Catch"][0].update(Next="ModelUnavailable"),
         "the iteration ends at ModelUnavailable holding a lease"),
        (lambda s: s["WaitBeforeRetry"].update(Next="CallModel"), "CallModel calls the model without a lease"),
        (lambda s: s["CallModel"].update(Next="AcquireModelSlot"), "AcquireModelSlot takes a second lease while one is held"),
    ],
    ids=["success path kept", "wait before release", "timeout uncaught", "busy path kept", "call after wait", "double acquire"],
)
def test_the_walk_catches_a_lease_kept_or_a_call_without_one(change, problem):
    # GIVEN the workflow with one mistake WHEN it is walked THEN the mistake is named
    found = lease_problems(mutated(change))
    assert any(problem in found_problem for found_problem in found), found

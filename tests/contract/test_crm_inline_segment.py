"""The inline CRM batch holds a segment only as far as its Map, and refuses one larger than it can hold.

Step Functions fails a state whose input or output passes 256 KiB with `States.DataLimitExceeded`,
which no Catch takes; when that state is the Map's, every e-mail has already gone. So the segment's
ids may sit in the state only until the Map, whose iterations each return one constant flag and
whose result replaces the segment; and the size gate before it is the one the stack and the
measurement on the emulator (`tests/e2e/test_crm_batch_workflow.py`) assume. Each check is a
function returning the problems it found, shown catching its mistake at the end.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from stacks.use_cases.crm_batch_email import INLINE_SEGMENT_MAX_USERS

ROOT = Path(__file__).resolve().parents[2]
BATCH = ROOT / "statemachines" / "crm_batch_email.asl.json"


def segment_growth_problems(definition: dict[str, Any]) -> list[str]:
    """The Map's iterations end in a Pass with a constant Result, and the Map's result replaces the list it read."""
    problems = []
    each = definition["States"]["EmailEachUser"]
    for name, state in each["ItemProcessor"]["States"].items():
        if state.get("End") and not (state["Type"] == "Pass" and "Result" in state and "Parameters" not in state):
            problems.append(f"EmailEachUser/{name} ends an iteration with per-user data, which the Map keeps for every user")
    items, result = each["ItemsPath"], each.get("ResultPath", "$")
    if result is not None and not items.startswith(f"{result}."):
        problems.append(f"EmailEachUser keeps its result at {result} beside the segment it read at {items}")
    return problems


def size_gate_problems(definition: dict[str, Any]) -> list[str]:
    """CheckSegmentSize refuses more than INLINE_SEGMENT_MAX_USERS users before the Map, by a name pointing elsewhere."""
    states = definition["States"]
    gate = states.get("CheckSegmentSize")
    if gate is None or states["MeasureSegment"]["Next"] != "CheckSegmentSize" or gate["Default"] != "EmailEachUser":
        return ["no CheckSegmentSize stands between the segment read and the Map"]
    (choice,) = gate["Choices"]
    problems = []
    if choice.get("NumericGreaterThan") != INLINE_SEGMENT_MAX_USERS:
        problems.append(f"CheckSegmentSize refuses above {choice.get('NumericGreaterThan')}, the stack says"
                        f" INLINE_SEGMENT_MAX_USERS = {INLINE_SEGMENT_MAX_USERS}")
    refusal = states[choice["Next"]]
    if (refusal["Type"], refusal.get("Error")) != ("Fail", "SegmentTooLarge") or "large-segment" not in refusal.get(
            "CausePath", refusal.get("Cause", "")):
        problems.append("a segment too large does not fail as SegmentTooLarge pointing to the large-segment workflow")
    return problems


@pytest.fixture(scope="module")
def batch() -> dict[str, Any]:
    return json.loads(BATCH.read_text())


def test_nothing_past_the_map_grows_with_the_segment(batch):
    assert segment_growth_problems(batch) == []


def test_a_segment_larger_than_the_stack_allows_is_refused_before_the_map(batch):
    assert size_gate_problems(batch) == []


def test_iterations_returning_their_user_are_caught(batch):
    # GIVEN the Sent state as it was: the user id and the CRM's status for every user
    definition = copy.deepcopy(batch)
    definition["States"]["EmailEachUser"]["ItemProcessor"]["States"]["Sent"] = {
        "Type": "Pass", "Parameters": {"user_id.$": "$.user_id", "outcome": "sent"}, "End": True}
    definition["States"]["EmailEachUser"]["ResultPath"] = "$.results"
    assert segment_growth_problems(definition) == [
        "EmailEachUser/Sent ends an iteration with per-user data, which the Map keeps for every user",
        "EmailEachUser keeps its result at $.results beside the segment it read at $.segment.user_ids",
    ]


def test_a_gate_out_of_step_with_the_stack_or_missing_is_caught(batch):
    definition = copy.deepcopy(batch)
    definition["States"]["CheckSegmentSize"]["Choices"][0]["NumericGreaterThan"] = 1500
    assert size_gate_problems(definition) == [
        f"CheckSegmentSize refuses above 1500, the stack says INLINE_SEGMENT_MAX_USERS = {INLINE_SEGMENT_MAX_USERS}"]
    definition["States"]["MeasureSegment"]["Next"] = "EmailEachUser"
    assert size_gate_problems(definition) == ["no CheckSegmentSize stands between the segment read and the Map"]

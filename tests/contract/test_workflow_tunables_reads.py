"""Every workflow that reads its tunables from SSM ends in its designed outcome whatever Parameter Store and operators do.

Two classes of mistake, each with a check and a test that shows the check catches it:
- an SSM read that a burst of starts can fail: Parameter Store refuses reads past its throughput
  (`Ssm.ThrottlingException`), so every SSM Task retries that error first, with exponential backoff
  and full jitter, then catches everything and falls back to a safe setting;
- a Map whose `MaxConcurrencyPath` reads what an operator typed: anything but a whole number from 0
  (2.5, 1e15, "3") fails the execution with `States.Runtime`, which no Catch takes. Every such Map
  reads `$.concurrency.max_concurrency`, written only by the normalizing states below, which are the
  same in every workflow (comments and the state they hand over to aside), and whose ceiling is the
  tunables' own bound.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.contract.test_state_machine_contract import states_of
from throttling.core.tunables import MAX_CONCURRENCY_BOUNDS

ROOT = Path(__file__).resolve().parents[2]
ASL_FILES = sorted((ROOT / "statemachines").glob("*.asl.json"))
REFERENCE_FILE = ROOT / "statemachines" / "crm_batch_email.asl.json"
CONCURRENCY_PATH = "$.concurrency.max_concurrency"
# The states that turn the document read from SSM into the concurrency in force, in the reference's words.
READ_STATE = "ReadCrmTunables"
NORMALIZING_STATES = ("UseFallbackConcurrency", "CheckMaxConcurrency", "UseSafeConcurrency", "CapConcurrency",
                      "RoundConcurrency", "CheckRounding", "RoundDownConcurrency", "UseRoundedConcurrency",
                      "UseTunedConcurrency")
# The most child executions a Distributed Map runs at once; a ceiling above it would not be a bound.
DISTRIBUTED_MAP_MAX_CONCURRENCY = 10_000
SSM_TASK = re.compile(r"arn:aws:states:::aws-sdk:ssm:[A-Za-z]+")
WILDCARDS = {"States.ALL", "States.TaskFailed"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# -- the checks -----------------------------------------------------------------------------------------
def ssm_read_problems(definition: dict[str, Any]) -> list[str]:
    """Each SSM Task retries Ssm.ThrottlingException (before any wildcard retrier takes it) with backoff and
    full jitter, then catches States.ALL."""
    problems = []
    for where, state in states_of(definition):
        if state["Type"] != "Task" or not SSM_TASK.fullmatch(state.get("Resource", "")):
            continue
        retriers = state.get("Retry", [])
        first = next((r for r in retriers if {"Ssm.ThrottlingException", *WILDCARDS} & set(r["ErrorEquals"])), None)
        if first is None or "Ssm.ThrottlingException" not in first["ErrorEquals"]:
            problems.append(f"{where} reads SSM without retrying Ssm.ThrottlingException first")
        elif not (first.get("BackoffRate", 2) > 1 and first.get("MaxAttempts", 3) >= 2
                  and first.get("JitterStrategy") == "FULL" and "MaxDelaySeconds" in first):
            problems.append(f"{where} retries Ssm.ThrottlingException without exponential backoff, full jitter and a cap")
        if not any("States.ALL" in c["ErrorEquals"] for c in state.get("Catch", [])):
            problems.append(f"{where} reads SSM with no Catch on States.ALL: a read that stays throttled fails the run")
    return problems


def without_comments(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_comments(v) for k, v in value.items() if k != "Comment"}
    if isinstance(value, list):
        return [without_comments(v) for v in value]
    return value


def handed_over(states: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The normalizing states with every Next that leaves them written `<after>`, and where they leave to."""
    group = {name: without_comments(states[name]) for name in NORMALIZING_STATES if name in states}
    exits = set()
    for state in group.values():
        if state.get("Next") not in (None, *NORMALIZING_STATES):
            exits.add(state["Next"])
            state["Next"] = "<after>"
    return group, exits


def concurrency_problems(definition: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """Every Map's MaxConcurrencyPath reads the normalized value, made by states equal to the reference's."""
    maps = [(where, s) for where, s in states_of(definition) if s["Type"] == "Map" and "MaxConcurrencyPath" in s]
    problems = [f"{where} reads MaxConcurrencyPath {s['MaxConcurrencyPath']!r}, not the normalized {CONCURRENCY_PATH}"
                for where, s in maps if s["MaxConcurrencyPath"] != CONCURRENCY_PATH]
    if not maps:
        return problems
    states = definition["States"]
    group, exits = handed_over(states)
    expected, _ = handed_over(reference["States"])
    for name in NORMALIZING_STATES:
        if name not in group:
            problems.append(f"{name} is missing: nothing normalizes the Map's concurrency")
        elif group[name] != expected[name]:
            problems.append(f"{name} differs from the reference's ({REFERENCE_FILE.name})")
    if len(exits) > 1:
        problems.append(f"the normalizing states hand over to several states {sorted(exits)}, so one path skips a Map")
    readers = [(name, s) for name, s in states.items() if s["Type"] == "Task" and SSM_TASK.fullmatch(s["Resource"])]
    for name, reader in readers:
        catch_targets = {c["Next"] for c in reader.get("Catch", [])}
        if (reader.get("ResultPath"), reader.get("Next"), catch_targets) != (
                "$.concurrency", "CheckMaxConcurrency", {"UseFallbackConcurrency"}):
            problems.append(f"{name} does not hand its document (or its error) to the normalizing states")
    return problems


def ceiling_problems(reference: dict[str, Any]) -> list[str]:
    """The cap is the tunables' own bound, which a Distributed Map can also run."""
    states = reference["States"]
    (ceiling,) = [c["NumericGreaterThan"] for c in states["CheckMaxConcurrency"]["Choices"] if "NumericGreaterThan" in c]
    capped = states["CapConcurrency"]["Result"]["max_concurrency"]
    problems = []
    if ceiling != capped:
        problems.append(f"CheckMaxConcurrency caps above {ceiling} but CapConcurrency sets {capped}")
    if ceiling != MAX_CONCURRENCY_BOUNDS[1]:
        problems.append(f"the ceiling {ceiling} is not the tunables' bound {MAX_CONCURRENCY_BOUNDS[1]}"
                        " (throttling.core.tunables.MAX_CONCURRENCY_BOUNDS), which throttlectl and the Lambdas apply")
    if ceiling > DISTRIBUTED_MAP_MAX_CONCURRENCY:
        problems.append(f"the ceiling {ceiling} is above what a Distributed Map runs ({DISTRIBUTED_MAP_MAX_CONCURRENCY})")
    return problems


# -- the tests ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return load(REFERENCE_FILE)


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_every_ssm_read_backs_off_on_throttling_then_falls_back(path):
    assert ssm_read_problems(load(path)) == []


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_every_map_runs_with_the_normalized_concurrency(path, reference):
    assert concurrency_problems(load(path), reference) == []


def test_the_workflows_that_read_ssm_are_the_ones_checked():
    readers = {p.name for p in ASL_FILES if SSM_TASK.search(p.read_text())}
    assert readers == {"crm_batch_email.asl.json", "crm_segment_large.asl.json", "ugc_moderation.asl.json"}
    assert all(concurrency_problems(load(ROOT / "statemachines" / name), load(REFERENCE_FILE)) == []
               and "MaxConcurrencyPath" in (ROOT / "statemachines" / name).read_text() for name in readers)


def test_the_ceiling_is_the_tunables_bound(reference):
    assert ceiling_problems(reference) == []


# -- the checks are live --------------------------------------------------------------------------------
def test_an_ssm_read_without_a_fallback_or_retrying_throttling_after_a_wildcard_is_caught(reference):
    definition = copy.deepcopy(reference)
    read = definition["States"][READ_STATE]
    del read["Catch"]
    read["Retry"].reverse()
    assert ssm_read_problems(definition) == [
        f"{READ_STATE} reads SSM without retrying Ssm.ThrottlingException first",
        f"{READ_STATE} reads SSM with no Catch on States.ALL: a read that stays throttled fails the run",
    ]


def test_throttling_retried_without_jitter_is_caught(reference):
    definition = copy.deepcopy(reference)
    del definition["States"][READ_STATE]["Retry"][0]["JitterStrategy"]
    assert ssm_read_problems(definition) == [
        f"{READ_STATE} retries Ssm.ThrottlingException without exponential backoff, full jitter and a cap"]


def test_a_map_reading_the_raw_document_is_caught(reference):
    definition = copy.deepcopy(reference)
    definition["States"]["EmailEachUser"]["MaxConcurrencyPath"] = "$.concurrency.document.max_concurrency"
    assert concurrency_problems(definition, reference) == [
        "EmailEachUser reads MaxConcurrencyPath '$.concurrency.document.max_concurrency', not the normalized"
        " $.concurrency.max_concurrency"]


def test_a_normalization_without_the_cap_or_bypassing_the_map_is_caught(reference):
    definition = copy.deepcopy(reference)
    check = definition["States"]["CheckMaxConcurrency"]
    check["Choices"] = [c for c in check["Choices"] if "NumericGreaterThan" not in c]
    definition["States"]["UseSafeConcurrency"]["Next"] = "Report"
    assert concurrency_problems(definition, reference) == [
        "CheckMaxConcurrency differs from the reference's (crm_batch_email.asl.json)",
        "the normalizing states hand over to several states ['ReadSegment', 'Report'], so one path skips a Map",
    ]


def test_a_ceiling_other_than_the_tunables_bound_is_caught(reference):
    definition = copy.deepcopy(reference)
    for choice in definition["States"]["CheckMaxConcurrency"]["Choices"]:
        if "NumericGreaterThan" in choice:
            choice["NumericGreaterThan"] = 50_000
    assert ceiling_problems(definition) == [
        "CheckMaxConcurrency caps above 50000 but CapConcurrency sets 1000",
        "the ceiling 50000 is not the tunables' bound 1000 (throttling.core.tunables.MAX_CONCURRENCY_BOUNDS), which"
        " throttlectl and the Lambdas apply",
        "the ceiling 50000 is above what a Distributed Map runs (10000)",
    ]

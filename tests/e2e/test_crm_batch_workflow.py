"""Use case 1 end to end: the deployed CRM batch e-mail workflow against the CRM simulator.

The real state machine (from its ASL file, through CloudFormation) runs in moto's interpreter and
calls the real CRM caller, which takes tokens from the shared DynamoDB limiter before each request.
The simulator is the referee: it enforces the CRM's 10 req/s (burst 10) and records every request.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from localcloud.demo import run_crm_batch
from localcloud.drivers.common import drain_queue, run_execution
from localcloud.drivers.crm_batch import crm_batch_outputs, seed_segment
from localcloud.emulator import patches
from localcloud.referee.downstream_simulator import PROFILES
from stacks.use_cases.crm_batch_email import INLINE_SEGMENT_MAX_USERS, SEGMENT_USER_ID_MAX_BYTES

pytestmark = pytest.mark.emulator

CRM_LIMIT_PER_SEC = 10
CRM_BURST = 10


@pytest.fixture(scope="module")
def batch(deployed) -> dict[str, str]:
    return crm_batch_outputs(deployed)


def run_segment(cloud, batch, user_ids: list[str], **kwargs):
    segment_id = f"segment-{uuid.uuid4().hex[:8]}"
    seed_segment(cloud, batch["segments_table"], segment_id, user_ids)
    result = run_execution(cloud, batch["state_machine_arn"], {"segment_id": segment_id}, **kwargs)
    return segment_id, result


def emails_sent(crm) -> dict[str, list[Any]]:
    """user id -> the CRM's 2xx answers to `POST /emails` for that user, with the request's idempotency key."""
    sent: dict[str, list[Any]] = {}
    for request in crm.requests:
        if request.method == "POST" and request.path == "/emails" and 200 <= request.status < 300:
            sent.setdefault(request.body["user_id"], []).append(request.headers.get("Idempotency-Key"))
    return sent


def users(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(count)]


def assert_every_user_accounted_for(result, user_ids: list[str], crm, dead: list[dict[str, Any]]) -> None:
    """Each user was e-mailed exactly once or is in the dead-letter queue with its error, never both,
    and the run's report counts exactly that."""
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    sent = emails_sent(crm)
    dead_users = [message["user_id"] for message in dead]
    assert all(keys == [f"{result.name}/{user_id}"] for user_id, keys in sent.items()), sent
    assert sorted([*sent, *dead_users]) == sorted(user_ids)
    assert all(message["error"] and message["cause"] for message in dead), dead
    assert (result.output["items"], result.output["succeeded"], result.output["failed"]) == (
        len(user_ids), len(sent), len(dead_users))


def test_the_deployed_definition_has_every_placeholder_filled(cloud, batch):
    definition = cloud.client("stepfunctions").describe_state_machine(
        stateMachineArn=batch["state_machine_arn"])["definition"]
    assert "${" not in definition
    assert batch["dead_letter_queue_url"] in definition


def test_sixty_users_are_all_emailed_without_a_single_429(cloud, batch, crm, crm_tunables, crm_dead_letters):
    # GIVEN a Map allowed 5 users at once: ~20 req/s offered at 200 ms a call, twice the CRM's limit,
    # so the shared limiter, not the concurrency, is what holds the rate
    crm_tunables(max_concurrency=5)
    user_ids = users(60)
    # WHEN the batch runs
    segment_id, result = run_segment(cloud, batch, user_ids)
    # THEN every user got exactly one e-mail, keyed by execution name and user id, and nobody is in the DLQ
    dead = drain_queue(cloud, batch["dead_letter_queue_url"])
    assert_every_user_accounted_for(result, user_ids, crm, dead)
    assert dead == []
    assert result.output == {"segment_id": segment_id, "tenant": "default", "max_concurrency": 5,
                             "max_concurrency_note": None, "items": 60, "succeeded": 60, "failed": 0}
    # AND the CRM never had to refuse a request, nor saw more in any 1 s window than its limit plus burst
    stats = crm.stats()
    assert 429 not in stats["by_status"], stats
    assert stats["total_requests"] == 120
    assert stats["max_in_1s_window_all"] <= CRM_LIMIT_PER_SEC + CRM_BURST, stats


def test_max_concurrency_tuned_in_ssm_applies_from_the_next_run(cloud, batch, crm, crm_tunables, crm_dead_letters):
    # GIVEN an operator who allows one user at a time
    crm_tunables(max_concurrency=1)
    _, sequential = run_segment(cloud, batch, users(4))
    assert_every_user_accounted_for(sequential, users(4), crm, drain_queue(cloud, batch["dead_letter_queue_url"]))
    sequential_in_flight = crm.stats()["max_in_flight"]
    # WHEN they allow three, and the next run starts
    crm_tunables(max_concurrency=3)
    crm.reset()
    _, concurrent = run_segment(cloud, batch, users(9))
    assert_every_user_accounted_for(concurrent, users(9), crm, drain_queue(cloud, batch["dead_letter_queue_url"]))
    concurrent_in_flight = crm.stats()["max_in_flight"]
    # THEN each run read the value in force when it started, and the CRM saw the difference
    assert (sequential.output["max_concurrency"], concurrent.output["max_concurrency"]) == (1, 3)
    assert sequential_in_flight == 1
    assert 1 < concurrent_in_flight <= 3


def test_an_unusable_max_concurrency_runs_one_user_at_a_time(cloud, batch, crm, crm_tunables, crm_dead_letters):
    # GIVEN a document whose max_concurrency would mean "unlimited" to a Map
    crm_tunables(max_concurrency=0)
    # WHEN a batch runs THEN it falls back to one user at a time, and still sends
    _, result = run_segment(cloud, batch, users(3))
    assert (result.output["max_concurrency"], result.output["succeeded"]) == (1, 3)
    assert result.output["max_concurrency_note"] == "max_concurrency missing, not a number or below 1: one at a time"
    assert crm.stats()["max_in_flight"] == 1


@pytest.mark.parametrize(("typed", "in_force"), [(2.5, 2), (1e15, 1000), ("3", 1), (-2, 1)],
                         ids=["fraction", "1e15", "string", "negative"])
def test_whatever_an_operator_types_as_max_concurrency_the_batch_runs_with_a_whole_bounded_one(
    cloud, batch, crm, crm_tunables, crm_dead_letters, typed, in_force
):
    # GIVEN a max_concurrency the Map itself would refuse with an error no Catch takes (typed in the console)
    crm_tunables(max_concurrency=typed)
    user_ids = users(3, prefix="typed")
    # WHEN a batch runs
    _, result = run_segment(cloud, batch, user_ids)
    # THEN it e-mails everybody, with the value made whole and bounded, and says so
    assert_every_user_accounted_for(result, user_ids, crm, drain_queue(cloud, batch["dead_letter_queue_url"]))
    assert (result.output["max_concurrency"], result.output["succeeded"]) == (in_force, 3)
    assert result.output["max_concurrency_note"] is not None
    assert crm.stats()["max_in_flight"] <= in_force


def test_throttled_parameter_reads_back_off_then_run_one_user_at_a_time(cloud, batch, crm, crm_tunables,
                                                                        crm_dead_letters):
    # GIVEN a tuned concurrency of 3, and Parameter Store refusing every read (the Lambdas' own included)
    crm_tunables(max_concurrency=3)
    segments = {f"segment-{uuid.uuid4().hex[:8]}": users(2, prefix=f"throttled{i}") for i in range(3)}
    for segment_id, user_ids in segments.items():
        seed_segment(cloud, batch["segments_table"], segment_id, user_ids)
    with cloud.faults.inject("ssm", "GetParameter", code="ThrottlingException", message="Rate exceeded") as fault:
        # WHEN three batches start together
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(
                lambda segment_id: run_execution(cloud, batch["state_machine_arn"], {"segment_id": segment_id}),
                segments))
    # THEN each read was retried (4 retries each, with jittered backoff) before falling back, never failing a run
    assert fault.hits >= 3 * 5
    dead = drain_queue(cloud, batch["dead_letter_queue_url"])
    assert dead == []
    for result in results:
        assert result.status == "SUCCEEDED", (result.error, result.cause)
        assert (result.output["max_concurrency"], result.output["succeeded"], result.output["failed"]) == (1, 2, 0)
        assert result.output["max_concurrency_note"] == "tunables unreadable (Ssm.ThrottlingException): one at a time"
    # AND every user got exactly one e-mail
    assert sorted(emails_sent(crm)) == sorted(u for user_ids in segments.values() for u in user_ids)


def test_a_read_throttled_for_a_moment_gets_the_tuned_value(cloud, batch, crm, crm_tunables, crm_dead_letters):
    # GIVEN Parameter Store refusing the workflow's next two reads only
    crm_tunables(max_concurrency=3)
    workflow_reads = {"Name": "/throttling/dev/downstreams/crm"}
    with cloud.faults.inject("ssm", "GetParameter", code="ThrottlingException", message="Rate exceeded", times=2,
                             matches=lambda request: request == workflow_reads) as fault:
        # WHEN a batch runs
        _, result = run_segment(cloud, batch, users(3, prefix="moment"))
    # THEN the third read went through: the batch ran with the tuned concurrency, and nothing says otherwise
    assert fault.hits == 2
    assert (result.output["max_concurrency"], result.output["max_concurrency_note"], result.output["succeeded"]) == (
        3, None, 3)


def test_a_crm_throttling_below_its_contract_makes_the_workflow_wait_and_lose_nobody(
    cloud, batch, crm, crm_dead_letters
):
    # GIVEN a CRM that admits 3 req/s with no burst, a third of what our limiter lets through
    crm.set_profile(PROFILES["crm"].merged_with({"rate_per_sec": 3, "burst": 1}))
    user_ids = users(15)
    # WHEN the batch runs
    _, result = run_segment(cloud, batch, user_ids)
    # THEN the CRM did refuse calls with 429 and Retry-After ...
    assert crm.stats()["by_status"].get(429, 0) > 0
    # ... and the workflow waited as asked, then finished with every user e-mailed once and nobody lost
    history = cloud.client("stepfunctions").get_execution_history(
        executionArn=f"{batch['state_machine_arn'].replace(':stateMachine:', ':execution:')}:{result.name}",
        maxResults=1000)["events"]
    waits = [e for e in history if e["type"] == "WaitStateEntered"
             and e["stateEnteredEventDetails"]["name"] == "WaitBeforeRetry"]
    assert waits
    dead = drain_queue(cloud, batch["dead_letter_queue_url"])
    assert_every_user_accounted_for(result, user_ids, crm, dead)
    assert (dead, result.output["succeeded"]) == ([], 15)


def test_users_the_crm_cannot_serve_land_in_the_dlq_with_their_error(cloud, batch, crm, crm_dead_letters):
    # GIVEN a CRM that is down for longer than the workflow is willing to wait
    crm.set_profile(PROFILES["crm"].merged_with({"outage_windows_sec": ((0, 1e9),)}))
    user_ids = users(2, prefix="unlucky")
    # WHEN the batch runs
    segment_id, result = run_segment(cloud, batch, user_ids)
    # THEN the run itself succeeds and reports both users as failed
    dead = drain_queue(cloud, batch["dead_letter_queue_url"])
    assert_every_user_accounted_for(result, user_ids, crm, dead)
    assert result.output == {"segment_id": segment_id, "tenant": "default", "max_concurrency": 3,
                             "max_concurrency_note": None, "items": 2, "succeeded": 0, "failed": 2}
    # AND each one is in the dead-letter queue with the error and the CRM's answer
    for message in dead:
        assert message["error"] == "DownstreamUnavailable"
        assert message["segment_id"] == segment_id
        assert json.loads(json.loads(message["cause"])["errorMessage"])["status"] == 503
    # AND only the fetch was tried (retried with backoff): no e-mail went out
    assert Counter(r.method for r in crm.requests) == Counter({"GET": len(crm.requests)})


def execution_history(cloud, batch, name: str) -> list[dict[str, Any]]:
    sfn = cloud.client("stepfunctions")
    arn = f"{batch['state_machine_arn'].replace(':stateMachine:', ':execution:')}:{name}"
    return [event for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
            for event in page["events"]]


def state_payloads(history: list[dict[str, Any]]) -> dict[str, int]:
    """'<state> <what>' -> the largest payload it carried in bytes, as Step Functions counts them: each state's
    input and output, and each task's input after Parameters and its result."""
    by_id = {event["id"]: event for event in history}

    def state_of(event: dict[str, Any]) -> str:
        if "stateExitedEventDetails" in event:
            return event["stateExitedEventDetails"]["name"]
        while "stateEnteredEventDetails" not in event:  # a task's events follow the state that scheduled it
            event = by_id[event["previousEventId"]]
        return event["stateEnteredEventDetails"]["name"]

    largest: dict[str, int] = {}
    for event in history:
        for details, field, what in (("stateEnteredEventDetails", "input", "input"),
                                     ("stateExitedEventDetails", "output", "output"),
                                     ("taskScheduledEventDetails", "parameters", "parameters"),
                                     ("taskSucceededEventDetails", "output", "result")):
            if field in event.get(details, {}):
                key = f"{state_of(event)} {what}"
                size = patches.state_payload_bytes(json.loads(event[details][field]))
                largest[key] = max(largest.get(key, 0), size)
    return largest


def events_per_user_sent_without_a_retry(history: list[dict[str, Any]]) -> set[int]:
    """The events each iteration that e-mailed its user at the first try took (iterations one at a time)."""
    counts, current = set(), None
    for event in history:
        if event["type"] == "MapIterationStarted":
            current = []
        if current is not None:
            current.append(event)
        if event["type"] == "MapIterationSucceeded" and current is not None:
            names = {e.get("stateEnteredEventDetails", {}).get("name") for e in current}
            if "Sent" in names and not any(e["type"] == "TaskFailed" for e in current):
                counts.add(len(current))
            current = None
    return counts


def longest_ids(count: int, prefix: str) -> list[str]:
    """`count` user ids of exactly SEGMENT_USER_ID_MAX_BYTES bytes, the longest the segment format allows."""
    return [f"{prefix}-{i:04d}-".ljust(SEGMENT_USER_ID_MAX_BYTES, "x") for i in range(count)]


def test_the_largest_segment_the_inline_path_accepts_fits_in_every_state_and_in_the_history(
    cloud, batch, crm, crm_tunables, crm_dead_letters
):
    """The largest segment accepted (INLINE_SEGMENT_MAX_USERS users, ids of SEGMENT_USER_ID_MAX_BYTES bytes)
    would take 2,000 CRM calls at 10 req/s, over three minutes, so its sizes are measured, not waited for.

    Two runs of the deployed workflow, with 2 and 5 users of maximum-length ids (one of them unknown to the
    CRM, so both iteration outcomes run), are read back from their execution histories: every state's input
    and output and every task's input and result, in bytes as Step Functions counts them. A payload grows
    with the segment only through its ids (the same number of bytes per user) and the Map's flags, so each
    state's size for the largest segment is its size in the first run plus the growth per user between the
    two runs, times the users added: that must stay under 256 KiB. The history must hold the largest segment's
    events (14 per user e-mailed at the first try, measured one iteration at a time) and leave 10,000 of its
    25,000 events for retries and waits. The emulator enforces the quota too, so a state past it fails here.
    """
    # GIVEN one user at a time (each iteration's events then follow each other in the history)
    crm_tunables(max_concurrency=1)
    unknown = longest_ids(1, "unknown")
    crm.set_profile(PROFILES["crm"].merged_with({"not_found_paths": [f"/users/{u}" for u in unknown]}))
    # WHEN segments of 2 and 5 users of maximum-length ids run
    small_ids, large_ids = unknown + longest_ids(1, "small"), unknown + longest_ids(4, "large")
    (_, small), (_, large) = run_segment(cloud, batch, small_ids), run_segment(cloud, batch, large_ids)
    assert (small.status, large.status) == ("SUCCEEDED", "SUCCEEDED"), (small.cause, large.cause)
    assert (large.output["succeeded"], large.output["failed"]) == (4, 1)
    drain_queue(cloud, batch["dead_letter_queue_url"])
    history = execution_history(cloud, batch, large.name)
    measured = {"small": state_payloads(execution_history(cloud, batch, small.name)), "large": state_payloads(history)}
    # THEN, extrapolated to the largest segment, every state's payload stays under the quota
    added_users = INLINE_SEGMENT_MAX_USERS - len(small_ids)
    per_user = {key: (measured["large"][key] - measured["small"][key]) / (len(large_ids) - len(small_ids))
                for key in measured["small"]}
    largest = {key: measured["small"][key] + per_user[key] * added_users for key in measured["small"]}
    biggest = max(largest, key=largest.get)
    assert largest[biggest] <= patches.STATE_PAYLOAD_LIMIT_BYTES, (biggest, largest[biggest])
    # AND the ids are the only thing that grows, and they are gone once the Map is done: past it, a flag per user
    id_bytes = len(json.dumps({"S": large_ids[1]}, separators=(",", ":"))) + 1
    assert max(per_user.values()) == id_bytes
    assert per_user["EmailEachUser output"] <= 4 and per_user["Report output"] == 0
    # AND the history holds the largest segment's events with 10,000 to spare for retries and waits
    (per_user_events,) = events_per_user_sent_without_a_retry(history)
    base_events = len(history) - len(large_ids) * per_user_events
    assert base_events + INLINE_SEGMENT_MAX_USERS * per_user_events + 10_000 <= 25_000, per_user_events


def test_a_segment_larger_than_one_execution_holds_is_refused_before_any_call(cloud, batch, crm):
    # GIVEN a segment of one user more than the inline path accepts
    segment_id, result = run_segment(cloud, batch, users(INLINE_SEGMENT_MAX_USERS + 1), timeout_sec=30)
    # THEN the run fails at once, by name, pointing to the large-segment workflow, and nobody was called
    assert (result.status, result.error) == ("FAILED", "SegmentTooLarge")
    assert f"has {INLINE_SEGMENT_MAX_USERS + 1} users" in result.cause and "large-segment workflow" in result.cause
    assert crm.requests == []


def test_a_segment_item_over_the_payload_quota_fails_at_its_read_before_any_call(cloud, batch, crm):
    # GIVEN a segment whose ids are far longer than the format allows: 300 KB, past Step Functions' 256 KiB
    oversized = [f"oversized-{i:04d}-".ljust(600, "x") for i in range(500)]
    # WHEN it runs
    _, result = run_segment(cloud, batch, oversized, timeout_sec=30)
    # THEN the read of the segment fails the run, which no Catch takes, before any call: nothing is half sent
    assert (result.status, result.error) == ("FAILED", "States.DataLimitExceeded")
    assert crm.requests == []


def test_an_unknown_segment_fails_the_run_by_name(cloud, batch):
    result = run_execution(cloud, batch["state_machine_arn"], {"segment_id": "no-such-segment"})
    assert (result.status, result.error) == ("FAILED", "SegmentNotFound")


def test_an_empty_segment_reports_zero(cloud, batch, crm):
    segment_id, result = run_segment(cloud, batch, [])
    assert result.output == {"segment_id": segment_id, "tenant": "default", "max_concurrency": 3,
                             "max_concurrency_note": None, "items": 0,
                             "succeeded": 0, "failed": 0}
    assert crm.requests == []


def test_the_demo_line(cloud, deployed, fresh_simulators, crm_dead_letters):
    line = run_crm_batch(cloud, deployed, fresh_simulators, users=10)
    assert re.fullmatch(r"crm batch e-mail: 10 items, 10 sent, 0 failed, peak \d+ in a 1 s window at the CRM"
                        r" \(its 10/s bucket with burst 10 allows 20\), 0 answered 429", line), line

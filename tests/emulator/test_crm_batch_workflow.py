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

from localcloud.demo_workflows import (
    crm_batch_outputs,
    drain_queue,
    run_crm_batch,
    run_execution,
    seed_segment,
)
from localcloud.downstream_simulator import PROFILES

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
    assert result.output == {"segment_id": segment_id, "max_concurrency": 5, "max_concurrency_note": None,
                             "items": 60, "succeeded": 60, "failed": 0}
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
    assert result.output == {"segment_id": segment_id, "max_concurrency": 2, "max_concurrency_note": None,
                             "items": 2, "succeeded": 0, "failed": 2}
    # AND each one is in the dead-letter queue with the error and the CRM's answer
    for message in dead:
        assert message["error"] == "DownstreamUnavailable"
        assert message["segment_id"] == segment_id
        assert json.loads(json.loads(message["cause"])["errorMessage"])["status"] == 503
    # AND only the fetch was tried (retried with backoff): no e-mail went out
    assert Counter(r.method for r in crm.requests) == Counter({"GET": len(crm.requests)})


def test_an_unknown_segment_fails_the_run_by_name(cloud, batch):
    result = run_execution(cloud, batch["state_machine_arn"], {"segment_id": "no-such-segment"})
    assert (result.status, result.error) == ("FAILED", "SegmentNotFound")


def test_an_empty_segment_reports_zero(cloud, batch, crm):
    segment_id, result = run_segment(cloud, batch, [])
    assert result.output == {"segment_id": segment_id, "max_concurrency": 2, "max_concurrency_note": None, "items": 0,
                             "succeeded": 0, "failed": 0}
    assert crm.requests == []


def test_the_demo_line(cloud, deployed, fresh_simulators, crm_dead_letters):
    line = run_crm_batch(cloud, deployed, fresh_simulators, users=10)
    assert re.fullmatch(r"crm batch e-mail: 10 items, 10 sent, 0 failed, peak \d+ req/s at the CRM"
                        r" \(limit 10, burst 10\), 0 answered 429", line), line

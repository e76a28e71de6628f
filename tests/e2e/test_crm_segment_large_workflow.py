"""Use case 1 for large segments end to end: a CSV export in S3, a Distributed Map, the CRM simulator.

The deployed state machine reads the segment from the segments bucket and runs one Standard child
execution per user; each child calls the real CRM caller, which takes a token from the shared DynamoDB
limiter first, so the CRM's 10 req/s (burst 10) holds whatever the number of children in flight. Users
the CRM does not hold (it answers 404) are the poison: no retry fixes them, they go to the dead-letter
queue, and past 10% of the segment they stop the run. moto's EventBridge does not deliver to Step
Functions, so runs are started with the input the `Object Created` rule would give (asserted in tests/infra).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from localcloud.demo import run_crm_segment_large
from localcloud.drivers.common import drain_queue, run_execution
from localcloud.drivers.crm_segment_large import crm_segment_large_outputs, seed_segment_object
from localcloud.referee.downstream_simulator import PROFILES

pytestmark = pytest.mark.emulator

CRM_LIMIT_PER_SEC = 10
CRM_BURST = 10


@pytest.fixture(scope="module")
def large(deployed) -> dict[str, str]:
    return crm_segment_large_outputs(deployed)


def unknown_to_the_crm(crm, user_ids: list[str]) -> None:
    crm.set_profile(PROFILES["crm"].merged_with({"not_found_paths": [f"/users/{u}" for u in user_ids]}))


def run_segment(cloud, large, user_ids: list[str], *, timeout_sec: float = 120):
    key = seed_segment_object(cloud, large["bucket"], user_ids)
    return key, run_execution(cloud, large["state_machine_arn"], {"segment_key": key}, timeout_sec=timeout_sec)


def emails_sent(crm) -> dict[str, list[Any]]:
    """user id -> the idempotency keys of the CRM's 2xx answers to `POST /emails` for that user."""
    sent: dict[str, list[Any]] = {}
    for request in crm.requests:
        if request.method == "POST" and request.path == "/emails" and 200 <= request.status < 300:
            sent.setdefault(request.body["user_id"], []).append(request.headers.get("Idempotency-Key"))
    return sent


def results_written(cloud, results: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The run's results as ResultWriter left them: status -> the child executions listed in the manifest's files."""
    s3 = cloud.client("s3")
    manifest = json.loads(s3.get_object(Bucket=results["Bucket"], Key=results["Key"])["Body"].read())
    return {status: [entry for f in files for entry in json.loads(
        s3.get_object(Bucket=manifest["DestinationBucket"], Key=f["Key"])["Body"].read())]
        for status, files in manifest["ResultFiles"].items()}


def users(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(count)]


def test_the_deployed_definition_has_every_placeholder_filled(cloud, large):
    definition = cloud.client("stepfunctions").describe_state_machine(
        stateMachineArn=large["state_machine_arn"])["definition"]
    assert "${" not in definition
    assert large["bucket"] in definition and large["dead_letter_queue_url"] in definition


def test_a_segment_of_two_hundred_users_in_s3_is_all_accounted_for_without_a_single_429(
    cloud, large, crm, crm_tunables, crm_dead_letters
):
    # GIVEN 5 children allowed at once: ~25 req/s offered at 200 ms a call, so the shared limiter, not the
    # concurrency, holds the CRM's 10 req/s
    crm_tunables(max_concurrency=5)
    # AND a segment of 200 users the CRM holds and 6 it does not, spread through the file (under the 10% tolerated)
    good, poison = users(200), users(6, prefix="gone")
    user_ids = [*good]
    for i, user_id in enumerate(poison):
        user_ids.insert(1 + 33 * i, user_id)
    unknown_to_the_crm(crm, poison)
    # WHEN the run reads it from S3
    key, result = run_segment(cloud, large, user_ids)
    # THEN it succeeded and counts every user
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert {k: v for k, v in result.output.items() if k != "results"} == {
        "segment_key": key, "max_concurrency": 5, "max_concurrency_note": None, "items": 206, "succeeded": 200,
        "failed": 6}
    # AND every user the CRM holds got exactly one e-mail, keyed by execution name and user id ...
    sent = emails_sent(crm)
    assert sorted(sent) == sorted(good)
    assert all(keys == [f"{result.name}/{user_id}"] for user_id, keys in sent.items()), sent
    # ... and every other one is in the dead-letter queue with the CRM's answer, none twice
    dead = drain_queue(cloud, large["dead_letter_queue_url"])
    assert sorted(m["user_id"] for m in dead) == sorted(poison)
    for message in dead:
        assert (message["error"], message["segment_id"]) == ("DownstreamRejected", key)
        assert json.loads(json.loads(message["cause"])["errorMessage"])["status"] == 404
    # AND the results written to S3 say the same, user by user
    written = results_written(cloud, result.output["results"])
    assert sorted(json.loads(e["Output"])["user_id"] for e in written["SUCCEEDED"]) == sorted(good)
    assert sorted(json.loads(e["Input"])["user_id"] for e in written["FAILED"]) == sorted(poison)
    assert {e["Error"] for e in written["FAILED"]} == {"DownstreamRejected"}
    # AND the CRM never had to refuse a request, nor saw more in any 1 s window than its limit plus burst
    stats = crm.stats()
    assert 429 not in stats["by_status"], stats
    assert stats["by_status"] == {200: 400, 404: 6}, stats
    assert stats["max_in_1s_window_all"] <= CRM_LIMIT_PER_SEC + CRM_BURST, stats


@pytest.mark.parametrize(("poisoned", "outcome"), [(2, "SUCCEEDED"), (3, "FAILED")],
                         ids=["10-percent-tolerated", "one-more-stops-the-run"])
def test_poison_users_up_to_the_tolerance_are_parked_and_one_more_stops_the_run(
    cloud, large, crm, crm_tunables, crm_dead_letters, poisoned, outcome
):
    # GIVEN one child at a time, and a segment of 20 users whose first `poisoned` the CRM does not hold
    crm_tunables(max_concurrency=1)
    poison, good = users(poisoned, prefix="gone"), users(20 - poisoned)
    unknown_to_the_crm(crm, poison)
    # WHEN the run reads it
    _, result = run_segment(cloud, large, [*poison, *good])
    dead = drain_queue(cloud, large["dead_letter_queue_url"])
    # THEN each poison user tried is in the dead-letter queue with its reason
    assert sorted(m["user_id"] for m in dead) == poison
    assert {m["error"] for m in dead} == {"DownstreamRejected"}
    if outcome == "SUCCEEDED":
        # AND 2 of 20 is within 10%: the run carries on and e-mails everybody else
        assert result.status == "SUCCEEDED", (result.error, result.cause)
        assert (result.output["items"], result.output["succeeded"], result.output["failed"]) == (20, 18, 2)
        assert sorted(emails_sent(crm)) == good
    else:
        # AND 3 of 20 is past it: the run stops by name instead of going through the rest of the segment (AWS may
        # still finish a child already started; the emulator starts none), leaving them for a redrive
        assert (result.status, result.error) == ("FAILED", "TooManyUsersFailed")
        assert len(emails_sent(crm)) < len(good)


@pytest.mark.parametrize(("typed", "in_force"), [(2.5, 2), (1e15, 1000)], ids=["fraction", "1e15"])
def test_a_max_concurrency_the_map_would_refuse_is_made_whole_and_bounded(
    cloud, large, crm, crm_tunables, crm_dead_letters, typed, in_force
):
    # GIVEN a max_concurrency typed in the console that a Distributed Map refuses with an error no Catch takes
    crm_tunables(max_concurrency=typed)
    user_ids = users(4, prefix="typed")
    # WHEN the run reads a segment
    _, result = run_segment(cloud, large, user_ids)
    # THEN every user is e-mailed, with at most the whole, bounded concurrency in flight, and the output says why
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert (result.output["max_concurrency"], result.output["succeeded"]) == (in_force, 4)
    assert result.output["max_concurrency_note"] is not None
    assert sorted(emails_sent(crm)) == user_ids
    assert crm.stats()["max_in_flight"] <= in_force


def test_throttled_parameter_reads_run_the_segment_one_user_at_a_time(cloud, large, crm, crm_tunables,
                                                                      crm_dead_letters):
    # GIVEN Parameter Store refusing the workflow's reads for the whole run (the callers' own reads, which the
    # CRM batch's test throttles too, keep this test short)
    crm_tunables(max_concurrency=3)
    user_ids = users(3, prefix="throttled")
    workflow_reads = {"Name": "/throttling/dev/downstreams/crm"}
    with cloud.faults.inject("ssm", "GetParameter", code="ThrottlingException", message="Rate exceeded",
                             matches=lambda request: request == workflow_reads):
        # WHEN the run reads a segment
        _, result = run_segment(cloud, large, user_ids)
    # THEN it backed off, fell back to one child at a time, said why, and e-mailed everybody
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert (result.output["max_concurrency"], result.output["succeeded"]) == (1, 3)
    assert result.output["max_concurrency_note"] == "tunables unreadable (Ssm.ThrottlingException): one at a time"
    assert sorted(emails_sent(crm)) == user_ids


def test_a_segment_that_is_not_there_fails_the_run_before_any_call(cloud, large, crm):
    result = run_execution(cloud, large["state_machine_arn"], {"segment_key": "segments/no-such-export.csv"})
    # The error's name is not asserted: AWS says States.ItemReaderFailed, moto States.Runtime
    assert result.status == "FAILED", result.output
    assert crm.requests == []


def test_the_demo_line(cloud, deployed, fresh_simulators, crm_dead_letters):
    line = run_crm_segment_large(cloud, deployed, fresh_simulators, users=10)
    assert re.fullmatch(r"crm large segment: 10 users from s3, 10 sent, 0 failed, peak \d+ req/s at the CRM"
                        r" \(limit 10, burst 10\), 0 answered 429, results in s3://\S+/runs/\S+/manifest\.json", line), line

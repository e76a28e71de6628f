"""Use case 1 for large segments end to end: a CSV export in S3, a Distributed Map of batches, the CRM simulator.

The deployed state machine reads the segment from the segments bucket, and its ItemBatcher groups the
users into batches of the CRM's `max_batch_size` (50), one Standard child execution per batch; each
child sends its batch in one request to the CRM's batch endpoint through the real CRM caller, which
takes one token from the shared DynamoDB limiter first, so the CRM's 10 req/s (burst 10) holds
whatever the number of children in flight. The CRM answers every recipient: users it does not hold
are rejected (no retry fixes them: the dead-letter queue, with the reason), users it defers are sent
again after its wait, in a request of their own, and a user already sent never again (an idempotency
key per recipient). moto's EventBridge does not deliver to Step Functions, so runs are started with
the input the `Object Created` rule would give (asserted in tests/infra).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import pytest

from localcloud.demo import run_crm_segment_large
from localcloud.drivers.common import drain_queue, run_execution
from localcloud.drivers.crm_segment_large import crm_segment_large_outputs, run_segment
from localcloud.referee.downstream_simulator import BATCH_EMAILS_PATH, PROFILES

pytestmark = pytest.mark.emulator

CRM_LIMIT_PER_SEC = 10
CRM_BURST = 10
BATCH = 50


@pytest.fixture(scope="module")
def large(deployed) -> dict[str, str]:
    return crm_segment_large_outputs(deployed)


def crm_profile(crm, **changes) -> None:
    crm.set_profile(PROFILES["crm"].merged_with(changes))


def unknown_to_the_crm(user_ids: list[str]) -> dict[str, list[str]]:
    return {"not_found_paths": [f"/users/{u}" for u in user_ids]}


def batch_requests(crm) -> list[list[str]]:
    """The user ids of every batch request the CRM saw, in arrival order."""
    return [[r["user_id"] for r in request.body["recipients"]] for request in crm.requests
            if request.method == "POST" and request.path == BATCH_EMAILS_PATH]


def users(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(count)]


def test_the_deployed_definition_has_every_placeholder_filled(cloud, large):
    definition = cloud.client("stepfunctions").describe_state_machine(
        stateMachineArn=large["state_machine_arn"])["definition"]
    assert "${" not in definition
    assert large["bucket"] in definition and large["dead_letter_queue_url"] in definition


def test_a_segment_of_three_hundred_users_goes_out_in_batches_and_every_user_is_accounted_for_once(
    cloud, deployed, large, crm, crm_tunables, crm_dead_letters
):
    # GIVEN 5 children allowed at once (the shared limiter, not the concurrency, holds the CRM's 10 req/s)
    crm_tunables(max_concurrency=5)
    # AND a segment of 300 users the CRM holds and 6 it does not, spread through the file, 4 of which it defers once
    good, poison = users(300), users(6, prefix="gone")
    user_ids = [*good]
    for i, user_id in enumerate(poison):
        user_ids.insert(1 + 51 * i, user_id)
    deferred = [good[10], good[60], good[61], good[250]]
    crm_profile(crm, **unknown_to_the_crm(poison), throttled_recipients=deferred)
    # WHEN the run reads it from S3
    run = run_segment(cloud, deployed, crm, user_ids)
    result = run.execution
    # THEN it succeeded in ceil(306 / 50) = 7 batches, each one child execution
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    batches = math.ceil(len(user_ids) / BATCH)
    assert {k: v for k, v in result.output.items() if k not in ("results", "segment_key")} == {
        "max_concurrency": 5, "max_concurrency_note": None, "max_items_per_batch": BATCH,
        "batches": batches, "batches_succeeded": batches, "batches_failed": 0}
    # AND the CRM got one request per batch, plus one per batch holding a user it deferred, which carried only those
    first_round = [user_ids[i:i + BATCH] for i in range(0, len(user_ids), BATCH)]
    with_deferred = [[u for u in batch if u in deferred] for batch in first_round]
    seen = batch_requests(crm)
    assert len(seen) == batches + sum(1 for d in with_deferred if d)
    assert sorted(map(tuple, seen)) == sorted(map(tuple, first_round + [d for d in with_deferred if d]))
    assert all(request.path == BATCH_EMAILS_PATH for request in crm.requests)
    # AND every user it holds was e-mailed exactly once, under the run's idempotency key, and none twice
    assert crm.batch_deliveries == {f"{result.name}/{u}": u for u in good}
    assert crm.batch_repeats == {}
    # AND every other one is in the dead-letter queue once, with the CRM's reason
    dead = drain_queue(cloud, large["dead_letter_queue_url"])
    assert sorted(m["user_id"] for m in dead) == sorted(poison)
    assert {(m["error"], m["cause"], m["segment_id"], m["execution_name"]) for m in dead} == {
        ("RecipientRejected", "unknown_recipient", result.output["segment_key"], result.name)}
    # AND the results written to S3 account for every user: sent or dead-lettered, in 1 or 2 rounds per batch
    assert run.users == {"users": 306, "sent": 300, "dead_lettered": 6, "rounds": len(seen), "in_failed_batches": 0}
    assert Counter(len(json.loads(e["Input"])["Items"]) for e in run.batches["SUCCEEDED"]) == {50: 6, 6: 1}
    # AND the CRM never had to refuse a request, nor saw more in any 1 s window than its limit plus burst
    stats = run.crm_stats
    assert stats["by_status"] == {200: len(seen)}, stats
    assert stats["max_in_1s_window_all"] <= CRM_LIMIT_PER_SEC + CRM_BURST, stats


def test_a_batch_the_crm_refuses_whole_parks_its_users_with_the_reason_and_stops_the_run(
    cloud, deployed, large, crm, crm_tunables, crm_dead_letters
):
    # GIVEN a CRM that takes batches of 10 only (a contract changed under the deployed config of 50), one child at a time
    crm_tunables(max_concurrency=1)
    crm_profile(crm, max_batch_size=10)
    segment = users(120, prefix="refused")
    # WHEN the run reads a segment of 3 batches
    run = run_segment(cloud, deployed, crm, segment)
    dead = drain_queue(cloud, large["dead_letter_queue_url"])
    # THEN the first batch's request is refused whole, and each of its 50 users is parked with the CRM's answer
    assert [len(batch) for batch in batch_requests(crm)] == [BATCH]
    assert sorted(m["user_id"] for m in dead) == segment[:BATCH]
    assert {m["error"] for m in dead} == {"DownstreamRejected"}
    assert all("batch_too_large" in m["cause"] for m in dead)
    # AND 50 of 120 users is past the 10% tolerated: the run stops by name, leaving the rest for a redrive
    assert (run.execution.status, run.execution.error) == ("FAILED", "TooManyUsersFailed")
    assert crm.batch_deliveries == {}


def test_a_batch_whose_answer_is_lost_is_sent_again_and_nobody_is_e_mailed_twice(
    cloud, deployed, large, crm, crm_tunables, crm_dead_letters
):
    # GIVEN one child at a time and a CRM whose gateway times out 30% of its requests after the CRM took them:
    # with the simulator's seed the fourth request's answer is the one lost, past the caller's 5 s timeout
    crm_tunables(max_concurrency=1)
    crm_profile(crm, timeout_rate=0.3, timeout_hold_sec=6)
    segment = users(4 * BATCH, prefix="lost")
    # WHEN the run sends a segment of 4 batches
    run = run_segment(cloud, deployed, crm, segment)
    # THEN the caller's timeout was retried with the same recipients and their keys ...
    result = run.execution
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    statuses = [request.status for request in crm.requests]
    assert statuses == [200, 200, 200, 504, 200], statuses
    lost, retried = batch_requests(crm)[3:5]
    assert lost == retried == segment[3 * BATCH:]
    # ... which the CRM answered as sent again without e-mailing anyone twice: each user once, nobody parked
    assert crm.batch_deliveries == {f"{result.name}/{u}": u for u in segment}
    assert crm.batch_repeats == {f"{result.name}/{u}": 1 for u in lost}
    assert drain_queue(cloud, large["dead_letter_queue_url"]) == []
    assert run.users == {"users": 200, "sent": 200, "dead_lettered": 0, "rounds": 4, "in_failed_batches": 0}


@pytest.mark.parametrize(("typed", "in_force"), [(2.5, 2), (1e15, 1000)], ids=["fraction", "1e15"])
def test_a_max_concurrency_the_map_would_refuse_is_made_whole_and_bounded(
    cloud, deployed, large, crm, crm_tunables, crm_dead_letters, typed, in_force
):
    # GIVEN a max_concurrency typed in the console that a Distributed Map refuses with an error no Catch takes
    crm_tunables(max_concurrency=typed)
    user_ids = users(4, prefix="typed")
    # WHEN the run reads a segment
    run = run_segment(cloud, deployed, crm, user_ids)
    # THEN every user is e-mailed, with at most the whole, bounded concurrency in flight, and the output says why
    result = run.execution
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert (result.output["max_concurrency"], result.output["batches_succeeded"], run.users["sent"]) == (in_force, 1, 4)
    assert result.output["max_concurrency_note"] is not None
    assert sorted(crm.batch_deliveries.values()) == user_ids
    assert crm.stats()["max_in_flight"] <= in_force


def test_throttled_parameter_reads_run_the_segment_one_batch_at_a_time(cloud, deployed, large, crm, crm_tunables,
                                                                       crm_dead_letters):
    # GIVEN Parameter Store refusing the workflow's reads for the whole run (the callers' own reads, which the
    # CRM batch's test throttles too, keep this test short)
    crm_tunables(max_concurrency=3)
    user_ids = users(3, prefix="throttled")
    workflow_reads = {"Name": "/throttling/dev/downstreams/crm"}
    with cloud.faults.inject("ssm", "GetParameter", code="ThrottlingException", message="Rate exceeded",
                             matches=lambda request: request == workflow_reads):
        # WHEN the run reads a segment
        run = run_segment(cloud, deployed, crm, user_ids)
    # THEN it backed off, fell back to one child at a time, said why, and e-mailed everybody
    result = run.execution
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert (result.output["max_concurrency"], run.users["sent"]) == (1, 3)
    assert result.output["max_concurrency_note"] == "tunables unreadable (Ssm.ThrottlingException): one at a time"
    assert sorted(crm.batch_deliveries.values()) == user_ids


def test_a_segment_that_is_not_there_fails_the_run_before_any_call(cloud, large, crm):
    result = run_execution(cloud, large["state_machine_arn"], {"segment_key": "segments/no-such-export.csv"})
    # The error's name is not asserted: AWS says States.ItemReaderFailed, moto States.Runtime
    assert result.status == "FAILED", result.output
    assert crm.requests == []


def test_the_demo_line(cloud, deployed, fresh_simulators, crm_dead_letters):
    line = run_crm_segment_large(cloud, deployed, fresh_simulators, users=60)
    assert re.fullmatch(r"crm large segment: 60 users from s3 in 2 batches of up to 50, 60 sent, 0 dead-lettered,"
                        r" 2 requests to the CRM \(one per user would be 60\), peak \d+ in a 1 s window at the CRM"
                        r" \(its 10/s bucket with burst 10 allows 20\), 0 answered 429, results in s3://\S+/runs/\S+/manifest\.json", line), line

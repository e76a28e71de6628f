"""Use case 3 end to end: the deployed UGC moderation workflow against the AI model simulator.

Each upload's execution calls three models through the real `ai_model` caller, which takes a token
from the shared DynamoDB limiter first, so twenty uploads at once still respect the model's 5 req/s
(burst 5); and each call holds a lease of the model's in-flight semaphore, so they never have more
than its 3 requests in flight at once (the simulator refuses a 4th with a 429, and records the count
at every instant). moto's EventBridge does not deliver to Step Functions, so the executions are started with
the event the `Object Created` rule would send (the rule itself is asserted in tests/infra).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter

import pytest

from localcloud.demo import run_model_slots, run_moderation
from localcloud.drivers.common import drain_queue, wait_for_executions
from localcloud.drivers.moderation import model_leases, moderation_outputs, moderation_results, start_moderations
from throttling.adapters.dynamodb_semaphore import DynamoDbSemaphore
from throttling.core.clock import FakeClock
from localcloud.referee.downstream_simulator import PROFILES

pytestmark = pytest.mark.emulator

MODEL_LIMIT_PER_SEC = 5
MODEL_BURST = 5
MODELS = sorted(["toxicity", "nudity", "spam"])
MODEL_MAX_IN_FLIGHT = 3


@pytest.fixture(scope="module")
def moderation(deployed) -> dict[str, str]:
    return moderation_outputs(deployed)


@pytest.fixture
def model(fresh_simulators):
    return fresh_simulators["ai_model"]


def keys(count: int, prefix: str) -> list[str]:
    return [f"{prefix}/upload-{i:03d}.jpg" for i in range(count)]


def test_the_deployed_definition_has_every_placeholder_filled(cloud, moderation):
    definition = cloud.client("stepfunctions").describe_state_machine(
        stateMachineArn=moderation["state_machine_arn"])["definition"]
    assert "${" not in definition
    assert moderation["results_table"] in definition


def test_twenty_uploads_at_once_are_all_moderated_without_a_single_429(cloud, moderation, model):
    # GIVEN the seeded limits (2 at 4.95 req/s under the model's 5 at 5 req/s), and 20 uploads arriving together:
    # 60 model calls, 12 s of the model's rate. In the emulator the limiter's DynamoDB write can take a second to
    # come back; the caller spends no token that came back too late to leave in step (`stale_token_after_sec`).
    uploaded = keys(20, "burst")
    # WHEN their 20 executions start at once
    names = start_moderations(cloud, moderation, uploaded)
    results = wait_for_executions(cloud, moderation["state_machine_arn"], names, timeout_sec=180)
    # THEN every execution succeeded, every model answered, and every upload is approved and stored
    assert {r.status for r in results.values()} == {"SUCCEEDED"}, [(r.error, r.cause) for r in results.values()]
    assert sorted(r.output["key"] for r in results.values()) == sorted(uploaded)
    assert {r.output["decision"] for r in results.values()} == {"approved"}
    stored = moderation_results(cloud, moderation["results_table"], uploaded)
    assert sorted(stored) == sorted(uploaded)
    for item in stored.values():
        assert item["decision"] == "approved"
        assert sorted(v["model"] for v in item["verdicts"]) == MODELS
        assert {v["verdict"] for v in item["verdicts"]} == {"clean"}
    # AND the model never refused a request, nor saw more in any 1 s window than its limit plus burst
    stats = model.stats()
    assert 429 not in stats["by_status"], stats
    assert stats["total_requests"] == 60
    assert stats["max_in_1s_window_all"] <= MODEL_LIMIT_PER_SEC + MODEL_BURST, stats
    assert sorted({r.path for r in model.requests}) == [f"/moderate/{m}" for m in MODELS]
    # AND at no instant had the model more than its 3 requests in flight, and it had 3 at some instant (the
    # semaphore let the calls overlap up to its limit, not one at a time)
    assert max(count for _, count in model.in_flight_timeline()) == MODEL_MAX_IN_FLIGHT, model.in_flight_timeline()
    # AND every call gave its lease back
    assert model_leases(cloud, moderation) == {}


def test_holders_stopped_mid_call_get_their_slots_back_within_one_lease(cloud, moderation, model):
    # GIVEN a model slow enough that an upload's three calls hold all three slots for a while
    model.set_profile(PROFILES["ai_model"].merged_with({"latency": {"kind": "fixed", "median_ms": 4000, "max_ms": 4000}}))
    (key,) = keys(1, "stopped")
    (name,) = start_moderations(cloud, moderation, [key])
    sfn = cloud.client("stepfunctions")
    execution_arn = f"{moderation['state_machine_arn'].replace(':stateMachine:', ':execution:')}:{name}"
    taken_after = time.time()
    for _ in range(300):
        if len(model_leases(cloud, moderation)) == MODEL_MAX_IN_FLIGHT:
            break
        time.sleep(0.05)
    # WHEN its execution is stopped while the calls are in flight (a holder that dies)
    sfn.stop_execution(executionArn=execution_arn, error="Test", cause="a holder dies mid-call")
    stopped_at = time.time()
    time.sleep(5)  # the calls in flight come back to a stopped execution, which releases nothing
    # THEN its three leases stay held: nobody gave them back
    leases = model_leases(cloud, moderation)
    assert sorted(leases) == sorted(f"{name}/{m}" for m in MODELS), leases
    lease_sec = float(moderation["lease_sec"])
    assert all(taken_after + lease_sec - 1 <= expiry <= stopped_at + lease_sec + 1 for expiry in leases.values())
    # AND the sweep (the reclaimer's code, on a clock set past the real one the leases were written on) frees none before they expire, and all of
    # them within one lease of the stop
    table = moderation["semaphore_table"]
    dynamodb = cloud.client("dynamodb")
    before = DynamoDbSemaphore(table, client=dynamodb, clock=FakeClock(min(leases.values()) - 0.5)).reclaim_all_expired()
    after = DynamoDbSemaphore(table, client=dynamodb, clock=FakeClock(stopped_at + lease_sec + 1)).reclaim_all_expired()
    assert before == {}
    assert sorted(after[moderation["semaphore_name"]]) == sorted(leases)
    assert model_leases(cloud, moderation) == {}
    # AND the next upload gets every slot again: all three models answer it
    model.set_profile(PROFILES["ai_model"])
    (again,) = start_moderations(cloud, moderation, keys(1, "after-stop"))
    result = wait_for_executions(cloud, moderation["state_machine_arn"], [again], timeout_sec=90)[again]
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert {v["verdict"] for v in result.output["verdicts"]} == {"clean"}
    assert model_leases(cloud, moderation) == {}


def test_a_model_outage_sends_the_upload_to_review_instead_of_hanging(cloud, moderation, model):
    # GIVEN a model API that is down for far longer than an upload should wait
    model.set_profile(PROFILES["ai_model"].merged_with({"outage_windows_sec": ((0, 1e9),)}))
    (key,) = keys(1, "outage")
    # WHEN an upload arrives
    (name,) = start_moderations(cloud, moderation, [key])
    # THEN its execution still succeeds, within a bounded time, with every model "unavailable" and a human to look
    result = wait_for_executions(cloud, moderation["state_machine_arn"], [name], timeout_sec=45)[name]
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert result.output["decision"] == "needs_review"
    assert sorted(v["model"] for v in result.output["verdicts"]) == MODELS
    assert {(v["verdict"], v["error"]) for v in result.output["verdicts"]} == {("unavailable", "DownstreamUnavailable")}
    assert moderation_results(cloud, moderation["results_table"], [key])[key]["decision"] == "needs_review"
    # AND each model answered its first call and two retries with the outage's Retry-After, longer than an upload
    # should wait, so the workflow gave up instead of waiting it out
    failures = call_failures(cloud, moderation, name)
    outage_answers = Counter(f["model"] for f in failures if f.get("status") == 503)
    assert outage_answers == {m: 3 for m in MODELS}, failures
    assert all(f["retry_after_sec"] > 30 for f in failures if f.get("status") == 503)
    # AND the models saw no call the workflow did not account for: a call that timed out on our side (a loaded
    # machine) reached the model but carried no hint back, so it was tried again after a jittered wait
    timed_out = Counter(f["model"] for f in failures if f.get("timed_out"))
    assert Counter(r.path for r in model.requests) == {f"/moderate/{m}": 3 + timed_out[m] for m in MODELS}, failures


def call_failures(cloud, moderation, name: str) -> list[dict]:
    """The details of every failed model call of an execution (the caller's error document), with its model."""
    sfn = cloud.client("stepfunctions")
    arn = f"{moderation['state_machine_arn'].replace(':stateMachine:', ':execution:')}:{name}"
    events = [e for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
              for e in page["events"]]
    failures = []
    for event in events:
        details = event.get("taskFailedEventDetails")
        if event["type"] != "TaskFailed" or details.get("error") != "DownstreamUnavailable":
            continue
        document = json.loads(json.loads(details["cause"])["errorMessage"])
        failures.append({**document, "model": document["url"].rsplit("/", 1)[1]})
    return failures


@pytest.mark.parametrize(("typed", "in_force"), [(2.5, 2), (1e15, 1000)], ids=["fraction", "1e15"])
def test_a_max_concurrency_the_map_would_refuse_is_made_whole_and_bounded(
    cloud, moderation, model, tune_downstream, typed, in_force
):
    # GIVEN the model's max_concurrency typed in the console as a value a Map refuses with an error no Catch takes
    tune_downstream("ai_model", max_concurrency=typed)
    (key,) = keys(1, f"typed-{in_force}")
    # WHEN an upload arrives
    (name,) = start_moderations(cloud, moderation, [key])
    result = wait_for_executions(cloud, moderation["state_machine_arn"], [name], timeout_sec=60)[name]
    # THEN it is moderated by every model, at most the whole, bounded concurrency at once, and the output says why
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert (result.output["max_concurrency"], result.output["decision"]) == (in_force, "approved")
    assert result.output["max_concurrency_note"] is not None
    assert model.stats()["max_in_flight"] <= in_force


def test_a_burst_of_uploads_meeting_parameter_store_throttling_is_still_all_moderated(cloud, moderation, model):
    # GIVEN Parameter Store refusing every read (the callers' own included), as a burst of uploads can make it
    uploaded = keys(4, "ssm-throttled")
    with cloud.faults.inject("ssm", "GetParameter", code="ThrottlingException", message="Rate exceeded") as fault:
        # WHEN four uploads arrive together
        names = start_moderations(cloud, moderation, uploaded)
        results = wait_for_executions(cloud, moderation["state_machine_arn"], names, timeout_sec=90)
    # THEN each execution backed off, fell back to one model at a time, said why, and decided
    assert fault.hits >= 4 * 5
    assert {r.status for r in results.values()} == {"SUCCEEDED"}, [(r.error, r.cause) for r in results.values()]
    for result in results.values():
        assert result.output["max_concurrency"] == 1
        assert result.output["max_concurrency_note"] == "tunables unreadable (Ssm.ThrottlingException): one at a time"
    # AND every upload's result is stored, none lost
    stored = moderation_results(cloud, moderation["results_table"], uploaded)
    assert sorted(stored) == sorted(uploaded)
    assert {item["decision"] for item in stored.values()} == {"approved"}


@pytest.fixture
def published(cloud, moderation):
    """`published()` -> the moderation results the topic delivered since the test began, by object key."""
    sqs, sns = cloud.client("sqs"), cloud.client("sns")
    url = sqs.create_queue(QueueName=f"moderation-results-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscription = sns.subscribe(TopicArn=moderation["topic_arn"], Protocol="sqs", Endpoint=arn,
                                 Attributes={"RawMessageDelivery": "true"})["SubscriptionArn"]

    def read() -> dict[str, dict]:
        return {message["key"]: message for message in drain_queue(cloud, url)}

    yield read
    sns.unsubscribe(SubscriptionArn=subscription)
    sqs.delete_queue(QueueUrl=url)


def test_each_upload_gets_the_decision_its_scores_call_for_stored_and_published(cloud, moderation, model, published):
    # GIVEN three uploads: one the toxicity model is sure is hateful, one the nudity model finds borderline, one
    # no model minds (scored by the simulator as its moderation API would, per model and category)
    hateful, borderline, clean = keys(3, "scored")
    model.set_profile(PROFILES["ai_model"].merged_with({"content_scores": {
        hateful: {"toxicity": {"hate": 0.97}}, borderline: {"nudity": {"suggestive": 0.55}}}}))
    # WHEN they are uploaded
    names = start_moderations(cloud, moderation, [hateful, borderline, clean])
    results = wait_for_executions(cloud, moderation["state_machine_arn"], names, timeout_sec=60)
    # THEN each is decided from the scores with the stage's thresholds (reject at 0.8, review at 0.4), and says why
    assert {r.status for r in results.values()} == {"SUCCEEDED"}, [(r.error, r.cause) for r in results.values()]
    decided = {r.output["key"]: r.output for r in results.values()}
    assert {key: output["decision"] for key, output in decided.items()} == {
        hateful: "rejected", borderline: "needs_review", clean: "approved"}
    assert decided[hateful]["reason"] == "toxicity scored hate 0.97, at or above the rejection score 0.8"
    assert decided[borderline]["reason"] == "nudity scored suggestive 0.55, at or above the review score 0.4"
    (toxicity,) = [v for v in decided[hateful]["verdicts"] if v["model"] == "toxicity"]
    assert (toxicity["verdict"], toxicity["category"], toxicity["score"]) == ("flagged", "hate", 0.97)
    assert sorted(v["model"] for v in decided[clean]["verdicts"]) == MODELS
    # AND each result is stored and published with its decision and reason
    stored = moderation_results(cloud, moderation["results_table"], [hateful, borderline, clean])
    messages = published()
    for key, output in decided.items():
        assert (stored[key]["decision"], stored[key]["reason"], stored[key]["verdicts"]) == (
            output["decision"], output["reason"], output["verdicts"])
        assert (messages[key]["decision"], messages[key]["reason"]) == (output["decision"], output["reason"])


def test_thresholds_the_decider_refuses_send_every_upload_to_a_human(cloud, moderation, model):
    # GIVEN a decider deployed with thresholds that cannot decide (review above reject): it fails at every start
    lambda_ = cloud.client("lambda")
    name = moderation["decider_name"]
    variables = lambda_.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    lambda_.update_function_configuration(FunctionName=name, Environment={"Variables": {
        **variables, "MODERATION_REVIEW_SCORE": "0.9", "MODERATION_REJECT_SCORE": "0.5"}})
    try:
        # WHEN an upload no model minds arrives
        (key,) = keys(1, "undecided")
        (execution,) = start_moderations(cloud, moderation, [key])
        result = wait_for_executions(cloud, moderation["state_machine_arn"], [execution], timeout_sec=60)[execution]
    finally:
        lambda_.update_function_configuration(FunctionName=name, Environment={"Variables": variables})
    # THEN it is not approved by default: it waits for a human, stored and said so
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert result.output["decision"] == "needs_review"
    assert result.output["reason"].startswith("no decision could be made (")
    assert moderation_results(cloud, moderation["results_table"], [key])[key]["decision"] == "needs_review"


def test_the_demo_line(cloud, deployed, fresh_simulators):
    line = run_moderation(cloud, deployed, fresh_simulators, uploads=4)
    assert re.fullmatch(r"ugc moderation: 4 uploads, 2 approved, 1 rejected, 1 needs review, peak \d+ in a 1 s window at"
                        r" the AI model \(its 5/s bucket with burst 5 allows 10\), 0 answered 429", line), line


def test_an_upload_that_finds_every_slot_held_past_its_wait_budget_goes_to_review(cloud, moderation, model):
    # GIVEN three live leases held by others for ten minutes: every slot of the model is taken
    dynamodb = cloud.client("dynamodb")
    ghosts = {f"ghost-{i}": time.time() + 600 for i in range(MODEL_MAX_IN_FLIGHT)}
    dynamodb.put_item(TableName=moderation["semaphore_table"], Item={
        "pk": {"S": moderation["semaphore_name"]}, "lease_count": {"N": str(len(ghosts))},
        "leases": {"M": {owner: {"N": str(expiry)} for owner, expiry in ghosts.items()}}})
    try:
        # WHEN an upload arrives
        (key,) = keys(1, "busy")
        (name,) = start_moderations(cloud, moderation, [key])
        # THEN it does not wait forever: once the acquire's retries are spent (at most 133 s with their jitter),
        # every model's verdict is ModelBusy and a human reviews the upload
        result = wait_for_executions(cloud, moderation["state_machine_arn"], [name], timeout_sec=200)[name]
        assert result.status == "SUCCEEDED", (result.error, result.cause)
        assert result.output["decision"] == "needs_review"
        assert {(v["model"], v["verdict"], v["error"]) for v in result.output["verdicts"]} == {
            (m, "unavailable", "ModelBusy") for m in MODELS}
        assert moderation_results(cloud, moderation["results_table"], [key])[key]["decision"] == "needs_review"
        # AND the model was never called, and the others' leases are untouched by the releases on the way out
        assert model.stats()["total_requests"] == 0
        assert model_leases(cloud, moderation) == ghosts
    finally:
        dynamodb.delete_item(TableName=moderation["semaphore_table"], Key={"pk": {"S": moderation["semaphore_name"]}})


def test_the_model_slots_demo_line(cloud, deployed, fresh_simulators):
    line = run_model_slots(cloud, deployed, fresh_simulators, uploads=6)
    # (the driver has the toxicity model reject the first upload and the nudity model send the second to review)
    assert re.fullmatch(r"model slots: 6 uploads at once \(18 model calls\), at most [123] in flight at the AI model at"
                        r" any instant \(it takes 3\), 6 of 6 executions ended"
                        r" \(\{'approved': 4, 'needs_review': 1, 'rejected': 1\}\), 0 leases left, 0 answered 429", line), line

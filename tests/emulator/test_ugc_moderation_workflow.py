"""Use case 3 end to end: the deployed UGC moderation workflow against the AI model simulator.

Each upload's execution calls three models through the real `ai_model` caller, which takes a token
from the shared DynamoDB limiter first, so twenty uploads at once still respect the model's 5 req/s
(burst 5). moto's EventBridge does not deliver to Step Functions, so the executions are started with
the event the `Object Created` rule would send (the rule itself is asserted in tests/infra).
"""

from __future__ import annotations

import re

import pytest

from localcloud.demo_workflows import (
    moderation_outputs,
    moderation_results,
    run_moderation,
    start_moderations,
    wait_for_executions,
)
from localcloud.downstream_simulator import PROFILES

pytestmark = pytest.mark.emulator

MODEL_LIMIT_PER_SEC = 5
MODEL_BURST = 5
MODELS = sorted(["toxicity", "nudity", "spam"])


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
    results = wait_for_executions(cloud, moderation["state_machine_arn"], names, timeout_sec=60)
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
    assert result.duration_sec < 30


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


def test_the_demo_line(cloud, deployed, fresh_simulators):
    line = run_moderation(cloud, deployed, fresh_simulators, uploads=4)
    assert re.fullmatch(r"ugc moderation: 4 uploads, 4 approved, 0 needs review, peak \d+ req/s at the AI model"
                        r" \(limit 5, burst 5\), 0 answered 429", line), line

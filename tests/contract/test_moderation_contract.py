"""What the AI model answers, what the workflow's Map makes of it and what the decider reads are one contract.

The simulator stands in for the model API; the Map's ModelAnswered and ModelUnavailable states shape
each model's verdict; `moderation.decide` reads those verdicts. A field renamed in one of them would
approve nothing (or everything) on AWS while each part's own tests stay green, so this walks an
answer through all three, with the stage's thresholds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from localcloud.referee.downstream_simulator import AI_MODEL, MODERATION_CATEGORIES, DownstreamSimulator
from moderation import ModerationThresholds, decide

ROOT = Path(__file__).resolve().parents[2]
MAP_STATES = json.loads((ROOT / "statemachines" / "ugc_moderation.asl.json").read_text())[
    "States"]["ModerateWithEachModel"]["ItemProcessor"]["States"]
LISTED_MODELS = json.loads((ROOT / "statemachines" / "ugc_moderation.asl.json").read_text())[
    "States"]["ListModels"]["Result"]


def select(parameters: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """A Pass state's Parameters applied to `state`, for the plain `$.a.b` paths these states use."""
    out = {}
    for key, value in parameters.items():
        if key.endswith(".$"):
            node: Any = state
            for part in value.removeprefix("$.").split("."):
                node = node[part]
            out[key[:-2]] = node
        else:
            out[key] = value
    return out


def verdict_from_the_map(model: str, response) -> dict[str, Any]:
    """The iteration's verdict as the ASL builds it from the caller's answer (CallModel's ResultSelector, then a Pass)."""
    selector = MAP_STATES["CallModel"]["ResultSelector"]
    caller_answer = {"Payload": {"status": response.status, "body": response.body}}
    iteration = {"model": model, "answer": select(selector, caller_answer)}
    return select(MAP_STATES["ModelAnswered"]["Parameters"], iteration)


@pytest.fixture
def thresholds(dev_config) -> ModerationThresholds:
    return ModerationThresholds(review_score=dev_config.moderation.review_score,
                                reject_score=dev_config.moderation.reject_score)


@pytest.fixture
def simulator() -> DownstreamSimulator:
    return DownstreamSimulator(AI_MODEL.merged_with({"rate_per_sec": 1000, "burst": 1000, "max_concurrency": None}))


def moderated(simulator: DownstreamSimulator, key: str, thresholds: ModerationThresholds):
    verdicts = []
    for model in LISTED_MODELS:
        response = simulator.decide("POST", f"/moderate/{model}", body=json.dumps({"bucket": "uploads", "key": key}))
        verdicts.append(verdict_from_the_map(model, response))
    return decide(verdicts, thresholds)


def test_the_workflow_asks_every_model_the_simulator_serves():
    assert sorted(LISTED_MODELS) == sorted(MODERATION_CATEGORIES)


def test_an_upload_no_model_flags_is_approved_through_the_whole_chain(simulator, thresholds):
    decision = moderated(simulator, "photos/cat.jpg", thresholds)
    assert decision.decision == "approved"
    assert {v.verdict for v in decision.verdicts} == {"clean"}


@pytest.mark.parametrize(("score", "decision"), [(0.97, "rejected"), (0.55, "needs_review"), (0.2, "approved")])
def test_a_score_one_model_gives_decides_through_the_whole_chain(simulator, thresholds, score, decision):
    simulator.set_profile(simulator.profile.merged_with({"content_scores": {"chosen.jpg": {"nudity": {"sexual": score}}}}))
    result = moderated(simulator, "chosen.jpg", thresholds)
    assert result.decision == decision
    (nudity,) = [v for v in result.verdicts if v.model == "nudity"]
    assert (nudity.category, nudity.score) == ("sexual", score)


def test_a_model_the_map_marks_unavailable_is_read_as_no_answer(thresholds):
    iteration = {"model": "spam", "error": {"Error": "DownstreamUnavailable"}}
    verdict = select(MAP_STATES["ModelUnavailable"]["Parameters"], iteration)
    decision = decide([verdict], thresholds)
    assert (decision.decision, decision.verdicts[0].error) == ("needs_review", "DownstreamUnavailable")


def test_the_decider_is_deployed_with_the_stages_thresholds(dev_assembly, dev_config):
    stacks, _ = dev_assembly
    (decider,) = Template.from_stack(stacks["workflows"]).find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "handlers.decide_moderation.handler"}}).values()
    variables = decider["Properties"]["Environment"]["Variables"]
    deployed = ModerationThresholds(review_score=float(variables["MODERATION_REVIEW_SCORE"]),
                                    reject_score=float(variables["MODERATION_REJECT_SCORE"]))
    assert (deployed.review_score, deployed.reject_score) == (dev_config.moderation.review_score,
                                                              dev_config.moderation.reject_score)

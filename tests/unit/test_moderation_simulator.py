"""The AI model simulator's moderation contract: per-category scores per model, the same for the same upload."""

from __future__ import annotations

import json

import pytest

from localcloud.referee.downstream_simulator import (
    AI_MODEL,
    BASELINE_SCORE_CEILING,
    MODERATION_CATEGORIES,
    DownstreamSimulator,
)


def moderate(simulator: DownstreamSimulator, model: str, key: str, bucket: str = "uploads"):
    return simulator.decide("POST", f"/moderate/{model}", body=json.dumps({"bucket": bucket, "key": key}))


@pytest.fixture
def model() -> DownstreamSimulator:
    # A bucket large enough that no test here is refused for rate.
    return DownstreamSimulator(AI_MODEL.merged_with({"rate_per_sec": 1000, "burst": 1000, "max_concurrency": None}))


@pytest.mark.parametrize("name", sorted(MODERATION_CATEGORIES))
def test_an_upload_nobody_chose_scores_low_in_every_category_of_the_model(model, name):
    response = moderate(model, name, "photos/cat.jpg")
    assert response.status == 200
    (result,) = response.body["results"]
    assert sorted(result["category_scores"]) == sorted(MODERATION_CATEGORIES[name])
    assert all(0 <= score < BASELINE_SCORE_CEILING for score in result["category_scores"].values())
    assert result["flagged"] is False and not any(result["categories"].values())
    assert (response.body["model"], response.body["id"]) == (name, f"modr-{response.request_id}")


def test_the_same_upload_gets_the_same_scores_and_another_upload_others(model):
    first, again = moderate(model, "toxicity", "a.jpg"), moderate(model, "toxicity", "a.jpg")
    other = moderate(model, "toxicity", "b.jpg")
    scores = [r.body["results"][0]["category_scores"] for r in (first, again, other)]
    assert scores[0] == scores[1] != scores[2]


def test_a_chosen_upload_scores_as_chosen_by_that_model_only(model):
    # GIVEN an upload the toxicity model is sure is hateful
    model.set_profile(model.profile.merged_with({"content_scores": {"hateful.jpg": {"toxicity": {"hate": 0.97}}}}))
    # WHEN each model is asked about it
    toxicity, nudity = moderate(model, "toxicity", "hateful.jpg"), moderate(model, "nudity", "hateful.jpg")
    # THEN toxicity flags hate at that score, leaves its other categories low, and nudity sees nothing
    (result,) = toxicity.body["results"]
    assert (result["category_scores"]["hate"], result["categories"]["hate"], result["flagged"]) == (0.97, True, True)
    assert all(s < BASELINE_SCORE_CEILING for c, s in result["category_scores"].items() if c != "hate")
    assert nudity.body["results"][0]["flagged"] is False


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    ("/moderate/violence", {"key": "a.jpg"}, 404, "unknown_model"),
    ("/moderate/toxicity", {"bucket": "uploads"}, 400, "invalid_request"),
    ("/moderate/toxicity", None, 400, "invalid_request"),
])
def test_requests_no_retry_can_fix_are_refused_with_a_4xx(model, path, body, status, error):
    response = model.decide("POST", path, body=None if body is None else json.dumps(body))
    assert (response.status, response.body["error"]) == (status, error)


@pytest.mark.parametrize("scores", [
    {"a.jpg": {"violence": {"gore": 0.9}}}, {"a.jpg": {"toxicity": {"spam": 0.9}}},
    {"a.jpg": {"toxicity": {"hate": 1.2}}}, {"a.jpg": {"toxicity": {"hate": "high"}}}, {"a.jpg": ["toxicity"]},
], ids=["unknown-model", "category-of-another-model", "above-1", "not-a-number", "not-an-object"])
def test_a_profile_choosing_impossible_scores_is_refused_with_what_is_allowed(scores):
    with pytest.raises(ValueError, match="content_scores"):
        AI_MODEL.merged_with({"content_scores": scores})

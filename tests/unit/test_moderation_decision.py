"""Moderation decisions without AWS: what the models' scores, silences and garbled answers mean for an upload."""

from __future__ import annotations

import math

import pytest

from moderation import InvalidThresholds, ModerationThresholds, decide, read_model_answer

THRESHOLDS = ModerationThresholds(review_score=0.4, reject_score=0.8)


def answered(model: str, **scores: float) -> dict:
    """A verdict as the workflow's Map collects it: the model's body, shaped like OpenAI's moderation answer."""
    return {"model": model, "verdict": "answered", "status": 200,
            "answer": {"id": "modr-1", "model": model, "results": [{"flagged": False, "category_scores": scores}]}}


def unavailable(model: str, error: str = "DownstreamUnavailable") -> dict:
    return {"model": model, "verdict": "unavailable", "error": error}


CLEAN = [answered("toxicity", hate=0.01, harassment=0.02), answered("nudity", sexual=0.03),
         answered("spam", spam=0.0)]


def test_every_model_scoring_low_approves():
    decision = decide(CLEAN, THRESHOLDS)
    assert decision.decision == "approved"
    assert decision.reason == "every model scored every category below 0.4"
    assert [(v.model, v.verdict, v.category, v.score) for v in decision.verdicts] == [
        ("toxicity", "clean", "harassment", 0.02), ("nudity", "clean", "sexual", 0.03), ("spam", "clean", "spam", 0.0)]


def test_one_model_certain_of_one_category_rejects():
    verdicts = [answered("toxicity", hate=0.93, harassment=0.2), *CLEAN[1:]]
    decision = decide(verdicts, THRESHOLDS)
    assert (decision.decision, decision.reason) == (
        "rejected", "toxicity scored hate 0.93, at or above the rejection score 0.8")
    assert decision.verdicts[0].to_dict() == {"model": "toxicity", "verdict": "flagged", "category": "hate",
                                              "score": 0.93, "error": None}


def test_a_borderline_score_asks_a_human():
    decision = decide([*CLEAN[:2], answered("spam", spam=0.55, scam=0.1)], THRESHOLDS)
    assert (decision.decision, decision.reason) == (
        "needs_review", "spam scored spam 0.55, at or above the review score 0.4")


@pytest.mark.parametrize(("score", "decision"), [(0.3999, "approved"), (0.4, "needs_review"), (0.7999, "needs_review"),
                                                 (0.8, "rejected"), (1, "rejected")])
def test_the_thresholds_are_inclusive(score, decision):
    assert decide([answered("toxicity", hate=score)], THRESHOLDS).decision == decision


def test_a_model_that_could_not_answer_asks_a_human():
    decision = decide([*CLEAN[:2], unavailable("spam")], THRESHOLDS)
    assert (decision.decision, decision.reason) == (
        "needs_review", "spam gave no verdict (DownstreamUnavailable): a human decides")
    assert decision.verdicts[2].to_dict() == {"model": "spam", "verdict": "unavailable", "category": None,
                                              "score": None, "error": "DownstreamUnavailable"}


def test_a_certain_violation_rejects_even_when_another_model_could_not_answer():
    decision = decide([answered("toxicity", threat=0.99), unavailable("nudity"), CLEAN[2]], THRESHOLDS)
    assert decision.decision == "rejected"


def test_every_doubt_is_in_the_reason():
    decision = decide([unavailable("toxicity", "States.Timeout"), answered("nudity", suggestive=0.5), CLEAN[2]],
                      THRESHOLDS)
    assert decision.reason == ("toxicity gave no verdict (States.Timeout): a human decides; "
                               "nudity scored suggestive 0.5, at or above the review score 0.4")


@pytest.mark.parametrize("answer", [
    None, "ok", {}, {"results": []}, {"results": [{}]}, {"results": [{"category_scores": {}}]},
    {"results": [{"category_scores": {"hate": "high"}}]}, {"results": [{"category_scores": {"hate": -0.1}}]},
    {"results": [{"category_scores": {"hate": 1.5}}]}, {"results": [{"category_scores": {"hate": math.nan}}]},
    {"results": [{"category_scores": {"hate": True}}]}, {"results": "nope"},
], ids=["null", "text", "empty", "no-results", "result-without-scores", "no-categories", "text-score",
        "negative", "above-1", "nan", "boolean", "results-not-a-list"])
def test_an_answer_that_cannot_be_read_is_no_answer(answer):
    verdict = read_model_answer("toxicity", answer, THRESHOLDS)
    assert (verdict.verdict, verdict.score) == ("unavailable", None)
    assert verdict.error.startswith("UnreadableAnswer")
    assert decide([{"model": "toxicity", "verdict": "answered", "answer": answer}], THRESHOLDS).decision == "needs_review"


@pytest.mark.parametrize("verdicts", [None, [], "all good", {"toxicity": "clean"}],
                         ids=["null", "none", "text", "object"])
def test_no_verdict_at_all_asks_a_human(verdicts):
    decision = decide(verdicts, THRESHOLDS)
    assert (decision.decision, decision.reason) == ("needs_review", "no model gave a verdict: a human decides")


def test_a_verdict_that_is_not_an_object_is_named_by_its_place():
    decision = decide([CLEAN[0], 42], THRESHOLDS)
    assert decision.decision == "needs_review"
    assert decision.verdicts[1].to_dict()["model"] == "model #1"


def test_the_highest_score_of_several_results_counts():
    answer = {"results": [{"category_scores": {"hate": 0.1}}, {"category_scores": {"spam": 0.85}}]}
    verdict = read_model_answer("spam", answer, THRESHOLDS)
    assert (verdict.verdict, verdict.category, verdict.score) == ("flagged", "spam", 0.85)


@pytest.mark.parametrize(("review", "reject"), [(0.8, 0.4), (0.5, 0.5), (0, 0.8), (0.4, 1.01), (-1, 0.5),
                                                 (math.nan, 0.8), (0.4, math.inf), ("0.4", 0.8), (True, 0.8)])
def test_thresholds_that_cannot_decide_are_refused_with_the_rule(review, reject):
    with pytest.raises(InvalidThresholds, match=r"(review|reject)_score"):
        ModerationThresholds(review_score=review, reject_score=reject)

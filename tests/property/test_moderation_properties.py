"""Property-based tests of the moderation decision: no input approves what it should not, or makes it raise."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from moderation import DECISIONS, ModerationThresholds, decide

MODEST = settings(max_examples=300, deadline=None)

thresholds = st.tuples(st.floats(min_value=0.01, max_value=0.98), st.floats(min_value=0.0, max_value=1.0)).map(
    lambda pair: ModerationThresholds(review_score=pair[0], reject_score=pair[0] + (1 - pair[0]) * max(pair[1], 0.01)))
scores = st.dictionaries(st.sampled_from(["hate", "harassment", "sexual", "spam", "violence"]),
                         st.floats(min_value=0.0, max_value=1.0), min_size=1)
answers = st.builds(lambda model, s: {"model": model, "verdict": "answered", "answer": {"results": [
    {"category_scores": s}]}}, st.sampled_from(["toxicity", "nudity", "spam"]), scores)
silences = st.builds(lambda model: {"model": model, "verdict": "unavailable", "error": "DownstreamUnavailable"},
                     st.sampled_from(["toxicity", "nudity", "spam"]))
json_values = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=20)


def highest(verdicts: list[dict]) -> float:
    return max((score for v in verdicts if v["verdict"] == "answered"
                for score in v["answer"]["results"][0]["category_scores"].values()), default=0.0)


@MODEST
@given(limits=thresholds, verdicts=st.lists(answers | silences, min_size=1, max_size=5))
def test_the_decision_follows_the_highest_score_and_any_silence(limits, verdicts):
    decision = decide(verdicts, limits).decision
    top = highest(verdicts)
    silent = any(v["verdict"] == "unavailable" for v in verdicts)
    if top >= limits.reject_score:
        assert decision == "rejected"
    elif silent or top >= limits.review_score:
        assert decision == "needs_review"
    else:
        assert decision == "approved"


@MODEST
@given(limits=thresholds, verdicts=st.lists(answers, min_size=1, max_size=4), index=st.integers(min_value=0),
       raised=st.floats(min_value=0.0, max_value=1.0))
def test_raising_a_score_never_makes_the_decision_more_lenient(limits, verdicts, index, raised):
    before = decide(verdicts, limits).decision
    target = verdicts[index % len(verdicts)]["answer"]["results"][0]["category_scores"]
    category = sorted(target)[0]
    target[category] = max(target[category], raised)
    after = decide(verdicts, limits).decision
    assert DECISIONS.index(after) >= DECISIONS.index(before)


@MODEST
@given(limits=thresholds, verdicts=json_values)
def test_no_input_raises_and_garbage_never_approves(limits, verdicts):
    decision = decide(verdicts, limits)
    assert decision.decision in DECISIONS
    if decision.decision == "approved":
        # only readable answers from every model can approve
        assert all(v.verdict == "clean" for v in decision.verdicts) and decision.verdicts

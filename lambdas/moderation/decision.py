"""What an upload's moderation verdicts mean: rejected, needs_review or approved, decided from the models' scores.

Pure: no AWS, no HTTP. Each AI model answers as moderation APIs do (OpenAI's moderation endpoint,
Bedrock Guardrails' content filters): per category a confidence score from 0 to 1,
`{"results": [{"category_scores": {"hate": 0.93, "harassment": 0.02, ...}, ...}]}`. The workflow's Map
collects one verdict per model, `{"model", "verdict": "answered", "answer": <the model's body>}` or
`{"model", "verdict": "unavailable", "error": <error name>}`, and `decide` turns them into a decision:

- rejected: some model scored some category at or above `reject_score` (one certain violation is
  enough, whatever the other models said or whether they answered);
- needs_review: otherwise, when some model scored a category at or above `review_score`, or gave no
  readable answer (it was unavailable, or what it said cannot be read): a human decides;
- approved: every model answered, and every score is below `review_score`.

Never raises on what it is given: whatever the models or the Map hand over, the worst outcome is a
human looking at the upload, never an approval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DECISIONS",
    "InvalidThresholds",
    "ModelVerdict",
    "ModerationDecision",
    "ModerationThresholds",
    "decide",
    "read_model_answer",
]

# From the most lenient to the strictest: a higher score never moves a decision left.
DECISIONS = ("approved", "needs_review", "rejected")
# What one model's answer amounts to, in the same order.
VERDICTS = ("clean", "borderline", "flagged")
UNAVAILABLE = "unavailable"


class InvalidThresholds(ValueError):
    """The scores cannot decide anything as given; the message shows the values and the rule."""


@dataclass(frozen=True)
class ModerationThresholds:
    """The scores that decide: at or above `reject_score` rejects, at or above `review_score` asks a human.

    :param review_score: default 0.4.
    :param reject_score: default 0.8; must be above `review_score`, and at most 1.
    """

    review_score: float = 0.4
    reject_score: float = 0.8

    def __post_init__(self) -> None:
        for name in ("review_score", "reject_score"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidThresholds(f"{name} must be a number, got {value!r}")
        if not 0 < self.review_score < self.reject_score <= 1:
            raise InvalidThresholds(
                f"the scores must satisfy 0 < review_score < reject_score <= 1, got review_score"
                f" {self.review_score!r} and reject_score {self.reject_score!r}; e.g. 0.4 and 0.8")


@dataclass(frozen=True)
class ModelVerdict:
    """One model's verdict: its highest-scoring category and that score, or why it has none."""

    model: str
    verdict: str
    category: str | None = None
    score: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every key always present, so the workflow and the results table read one shape."""
        return {"model": self.model, "verdict": self.verdict, "category": self.category, "score": self.score,
                "error": self.error}


@dataclass(frozen=True)
class ModerationDecision:
    decision: str
    reason: str
    verdicts: tuple[ModelVerdict, ...]

    def to_answer(self) -> dict[str, Any]:
        return {"decision": self.decision, "reason": self.reason, "verdicts": [v.to_dict() for v in self.verdicts]}


def read_model_answer(model: str, answer: Any, thresholds: ModerationThresholds) -> ModelVerdict:
    """One model's answer as a verdict; an answer with no readable score is `unavailable`, with the reason."""
    results = answer.get("results") if isinstance(answer, Mapping) else None
    if not isinstance(results, list) or not results:
        return ModelVerdict(model, UNAVAILABLE, error="UnreadableAnswer: no results")
    highest: tuple[float, str] | None = None
    for result in results:
        scores = result.get("category_scores") if isinstance(result, Mapping) else None
        if not isinstance(scores, Mapping) or not scores:
            return ModelVerdict(model, UNAVAILABLE, error="UnreadableAnswer: a result without category_scores")
        for category, score in scores.items():
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
                return ModelVerdict(model, UNAVAILABLE,
                                    error=f"UnreadableAnswer: category {str(category)[:64]!r} scored {str(score)[:64]!r}")
            if highest is None or score > highest[0]:
                highest = (float(score), str(category))
    assert highest is not None
    score, category = highest
    verdict = "flagged" if score >= thresholds.reject_score else "borderline" if score >= thresholds.review_score \
        else "clean"
    return ModelVerdict(model, verdict, category=category, score=score)


def decide(verdicts: Any, thresholds: ModerationThresholds) -> ModerationDecision:
    """The decision for one upload from the Map's verdicts, one per model (see the module docstring)."""
    read = tuple(_read_verdict(i, item, thresholds) for i, item in enumerate(verdicts if isinstance(verdicts, list)
                                                                               else []))
    if not read:
        return ModerationDecision("needs_review", "no model gave a verdict: a human decides", read)
    flagged = [v for v in read if v.verdict == "flagged"]
    if flagged:
        return ModerationDecision("rejected", "; ".join(
            f"{v.model} scored {v.category} {v.score:g}, at or above the rejection score {thresholds.reject_score:g}"
            for v in flagged), read)
    doubts = [f"{v.model} gave no verdict ({v.error}): a human decides" for v in read if v.verdict == UNAVAILABLE]
    doubts += [f"{v.model} scored {v.category} {v.score:g}, at or above the review score {thresholds.review_score:g}"
               for v in read if v.verdict == "borderline"]
    if doubts:
        return ModerationDecision("needs_review", "; ".join(doubts), read)
    return ModerationDecision("approved", f"every model scored every category below {thresholds.review_score:g}",
                              read)


def _read_verdict(index: int, item: Any, thresholds: ModerationThresholds) -> ModelVerdict:
    if not isinstance(item, Mapping):
        return ModelVerdict(f"model #{index}", UNAVAILABLE, error="UnreadableVerdict")
    model = item.get("model")
    model = model if isinstance(model, str) and model else f"model #{index}"
    if item.get("verdict") == "answered":
        return read_model_answer(model, item.get("answer"), thresholds)
    error = item.get("error")
    return ModelVerdict(model, UNAVAILABLE, error=error if isinstance(error, str) and error else "NoAnswer")

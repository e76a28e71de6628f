"""The moderation domain of use case 3: what the AI models' scores mean for an upload (no AWS)."""

from moderation.decision import (
    DECISIONS,
    InvalidThresholds,
    ModelVerdict,
    ModerationDecision,
    ModerationThresholds,
    decide,
    read_model_answer,
)

__all__ = [
    "DECISIONS",
    "InvalidThresholds",
    "ModelVerdict",
    "ModerationDecision",
    "ModerationThresholds",
    "decide",
    "read_model_answer",
]

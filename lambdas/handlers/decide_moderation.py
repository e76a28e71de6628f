"""Decide what one upload's moderation verdicts mean: the thin adapter around `moderation.decide`.

Event: `{"verdicts": [{"model", "verdict": "answered", "answer": {...}} | {"model", "verdict": "unavailable",
"error"}], "correlation_id": "..."}`, as the UGC workflow's Map collects them. Answer: `{"decision":
"approved" | "needs_review" | "rejected", "reason", "verdicts": [{"model", "verdict", "category", "score",
"error"}]}`. The thresholds are the stage's (`stages.<stage>.moderation`), deployed as
`MODERATION_REVIEW_SCORE` and `MODERATION_REJECT_SCORE`; thresholds that cannot decide fail every
invocation, and the workflow then sends the upload to human review: a misconfiguration never approves.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from moderation import ModerationThresholds, decide
from throttling.core import names

logger = Logger()
metrics = Metrics()
tracer = Tracer()


def build_thresholds(environ: Mapping[str, str]) -> ModerationThresholds:
    """The stage's thresholds from the function's environment; `InvalidThresholds` for ones that cannot decide."""
    return ModerationThresholds(review_score=float(environ[names.ENV_MODERATION_REVIEW_SCORE]),
                                reject_score=float(environ[names.ENV_MODERATION_REJECT_SCORE]))


@functools.cache
def thresholds() -> ModerationThresholds:
    """This execution environment's thresholds, read once (on Lambda, at import: see the end of the module)."""
    return build_thresholds(os.environ)


@logger.inject_lambda_context(correlation_id_path="correlation_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    decision = decide(event.get("verdicts") if isinstance(event, dict) else None, thresholds())
    metrics.add_dimension(name="Decision", value=decision.decision)
    metrics.add_metric(name="ModerationDecisions", unit=MetricUnit.Count, value=1)
    logger.info("moderation decided", extra={"decision": decision.decision, "reason": decision.reason})
    return decision.to_answer()


if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    # On Lambda, read in the init phase as before: thresholds that cannot decide fail the init, so every invocation.
    thresholds()

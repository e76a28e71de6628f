"""bench/workflow_costs.py's arithmetic: transitions billed from a history, and per-call counts priced as the lab's."""

from __future__ import annotations

from bench.workflow_costs import Counted, billed_transitions, report
from lab.costs import cost_per_million_calls


def test_a_task_retried_twice_is_billed_three_transitions_and_every_other_state_one():
    # GIVEN a history: a Pass, a Task tried three times, a Choice and a Succeed
    events = [{"type": "PassStateEntered"}, {"type": "TaskStateEntered"}, *[{"type": "TaskScheduled"}] * 3,
              {"type": "ChoiceStateEntered"}, {"type": "SucceedStateEntered"}, {"type": "ExecutionSucceeded"}]
    # THEN the bill counts 1 + 3 + 1 + 1 transitions
    assert billed_transitions(events) == 6


def test_counts_are_priced_per_call_and_the_dearer_designs_are_named_with_their_biggest_line():
    # GIVEN a run of 10 calls that entered 50 states in 5 Standard executions, and a buffer of 10 calls
    workflow = Counted("ugc_moderation", "ours", downstream_calls=10, executions=5, transitions=50,
                       lambda_invocations=10, limiter_writes=10, sqs_requests=0)
    buffer = Counted("legacy_buffer", "buffer", downstream_calls=10, executions=0, transitions=0,
                     lambda_invocations=2, limiter_writes=2, sqs_requests=30)
    # THEN 5 transitions a call cost $125 per million calls in Step Functions, as lab/costs prices them
    assert cost_per_million_calls(workflow.architecture())["step_functions"] == 125.0
    assert buffer.architecture().workflow == "none"
    # AND the report names the dearer one, with Step Functions as its biggest line, and not the buffer
    text = report([workflow, buffer])
    assert "- ugc_moderation: " in text and "is step functions (5.0 transitions a call" in text
    assert "- legacy_buffer:" not in text

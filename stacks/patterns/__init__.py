"""Reusable L3 constructs of the throttling architecture (named `patterns`, since `constructs` is the library)."""

from stacks.patterns.asl_state_machine import AslStateMachine, longest_run_sec
from stacks.patterns.handler_function import HandlerFunction
from stacks.patterns.limit_tables import CircuitBreakerTable, RateLimiterTable, SemaphoreTable
from stacks.patterns.monitoring import alarm_on_errors, alarm_on_oldest_message_after
from stacks.patterns.tunable_parameters import TunableParameters
from stacks.patterns.throttled_queue_consumer import ThrottledQueueConsumer

__all__ = [
    "AslStateMachine",
    "CircuitBreakerTable",
    "HandlerFunction",
    "RateLimiterTable",
    "SemaphoreTable",
    "TunableParameters",
    "ThrottledQueueConsumer",
    "alarm_on_errors",
    "alarm_on_oldest_message_after",
    "longest_run_sec",
]

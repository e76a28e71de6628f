"""Reusable L3 constructs of the throttling architecture (named `patterns`, since `constructs` is the library)."""

from stacks.patterns.handler_function import HandlerFunction
from stacks.patterns.limit_tables import CircuitBreakerTable, RateLimiterTable, SemaphoreTable
from stacks.patterns.tunable_parameters import TunableParameters

__all__ = ["CircuitBreakerTable", "HandlerFunction", "RateLimiterTable", "SemaphoreTable", "TunableParameters"]

"""Reusable L3 constructs of the throttling architecture (named `patterns`, since `constructs` is the library).

Published with the runtime as the `throttling-reference` distribution, where this package is
`throttling_patterns`: what `__all__` lists is its API, versioned with the distribution
(`__version__`); anything else may change in any release. Every construct takes its code and
definitions as arguments, exposes what it creates as attributes, and offers `grant_*` and `metric_*`
methods; `existing_*` and `*_props` arguments bring your own resources or override defaults.
"""

from importlib import metadata as _metadata

from .asl_state_machine import AslStateMachine, longest_run_sec
from .handler_function import POWERTOOLS_VERSION, HandlerFunction
from .limit_tables import CircuitBreakerTable, RateLimiterTable, SemaphoreTable
from .monitoring import alarm_on_errors, alarm_on_oldest_message_after
from .runtime_layer import RuntimeLayer
from .shared_limiter import DownstreamLimit, SharedLimiter
from .throttled_api import ThrottledApi
from .throttled_queue_consumer import ThrottledQueueConsumer
from .tunable_parameters import TunableParameters

try:
    __version__ = _metadata.version("throttling-reference")
except _metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = [
    "POWERTOOLS_VERSION",
    "AslStateMachine",
    "CircuitBreakerTable",
    "DownstreamLimit",
    "HandlerFunction",
    "RateLimiterTable",
    "RuntimeLayer",
    "SemaphoreTable",
    "SharedLimiter",
    "ThrottledApi",
    "ThrottledQueueConsumer",
    "TunableParameters",
    "__version__",
    "alarm_on_errors",
    "alarm_on_oldest_message_after",
    "longest_run_sec",
]

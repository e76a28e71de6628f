"""Reusable L3 constructs of the throttling architecture (named `patterns`, since `constructs` is the library)."""

from stacks.patterns.handler_function import HandlerFunction
from stacks.patterns.tunable_parameters import TunableParameters

__all__ = ["HandlerFunction", "TunableParameters"]

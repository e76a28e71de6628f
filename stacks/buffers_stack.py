"""Buffers: queues in front of downstreams too slow to be called from a workflow, with their consumers.

The use cases of the buffers layer (`stacks/use_cases/`, in `registry.USE_CASES` order) are built
here: use case 4, the legacy mainframe's buffer (`stacks/use_cases/legacy_buffer.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import Stack
from constructs import Construct

from stacks.config import AppConfig
from stacks.shared_limits_stack import SharedLimitsStack
from stacks.use_cases import USE_CASES, Layer, Registered, UseCase, build_layer
from stacks.use_cases.base import U, the_use_case


class BuffersStack(Stack):
    """The buffers layer's use cases.

    :param use_cases: the registry whose buffers-layer lines are built here; default `USE_CASES`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        shared_limits: SharedLimitsStack,
        use_cases: Sequence[Registered[Any]] = USE_CASES,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.use_cases: list[UseCase[Any]] = build_layer(
            self, Layer.BUFFERS, use_cases, config=config, shared_limits=shared_limits)

    def use_case(self, kind: type[U]) -> U:
        """The use case of `kind` built here (the ingress routes to its queue)."""
        return the_use_case(self.use_cases, kind)

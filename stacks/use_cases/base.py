"""What every use case is: a slice of the app built into a layer's stack, and what the control loop reads from it.

A use case is a plain class, not a `Construct`, on purpose: a construct adds its id as a path segment
to the logical id of every resource beneath it, and a changed logical id makes CloudFormation replace
the resource (a table, a queue, a bucket, with their data) on the next deploy. A use case therefore
builds its resources straight into the stack it is given, under the ids they always had, and
remembers which of the stack's constructs it added: those are its own. From them the control loop
takes the use case's workflows, queues, failure hand-overs and the functions alarmed on errors
(`owned`), so a use case's alarms and dashboard rows come with it, and a state machine or queue
outside every registered use case refuses to synthesize (`stacks/control_loop_stack.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import IConstruct

from stacks.stage_props import log_retention, removal_policy

if TYPE_CHECKING:
    from stacks.config import AppConfig, DownstreamConfig
    from stacks.patterns import ThrottledQueueConsumer
    from stacks.shared_limits_stack import SharedLimitsStack


class Layer(Enum):
    """The stack a use case is built into."""

    WORKFLOWS = "workflows"
    BUFFERS = "buffers"


@dataclass(frozen=True)
class UseCaseContext:
    """What a use case is built with: the stage's config, the shared limits, and what the layer built before it.

    :param removal_policy: of the use case's stateful resources (`stage_props.removal_policy`).
    :param log_retention: of its log groups (`stage_props.log_retention`).
    :param callers: downstream name -> its caller function (the workflows layer builds one per downstream);
        empty in a layer without callers.
    :param built: the use cases this layer built before this one, in registry order.
    """

    config: AppConfig
    shared_limits: SharedLimitsStack
    removal_policy: RemovalPolicy
    log_retention: logs.RetentionDays
    callers: Mapping[str, lambda_.Function] = field(default_factory=dict)
    built: Sequence[UseCase] = ()

    def caller(self, downstream: str) -> lambda_.Function:
        """The caller function of `downstream`, which the use case's props name."""
        self.config.downstream(downstream)  # fails early, naming the configured downstreams
        if downstream not in self.callers:
            raise ValueError(f"no caller of {downstream!r} in this layer (callers: {sorted(self.callers)}): a use case"
                             " that calls a downstream from a workflow belongs to the workflows layer")
        return self.callers[downstream]

    def unauthenticated(self, downstream: str, handler: str) -> DownstreamConfig:
        """`downstream`'s config, refusing an `auth` setting: `handler` calls it itself and sends no credentials
        (only the downstream callers, `handlers.call_downstream`, read a secret)."""
        config = self.config.downstream(downstream)
        if config.auth is not None:
            raise ValueError(f"downstreams.{downstream}.auth is set ({config.auth.kind}), but {handler} calls"
                             f" {downstream} itself and sends no credentials; remove the auth setting, or call"
                             " it through its caller (handlers.call_downstream)")
        return config

    def use_case(self, kind: type[U]) -> U:
        """The use case of `kind` this layer built before the one asking (which shares its resources)."""
        return the_use_case(self.built, kind, remedy="register it before the use case that shares its resources,"
                            " in the same layer")


P = TypeVar("P")
U = TypeVar("U", bound="UseCase[Any]")


class UseCase(Generic[P]):
    """One use case: subclasses set `layer` and implement `build`, which adds its resources to `scope`.

    Everything `build` adds to the stack, directly or beneath, belongs to the use case (`constructs`).

    :param scope: the layer's stack; every resource lands in it under the id `build` gives it.
    :param context: the stage's config, the shared limits and the layer's callers.
    :param props: the use case's own props (which downstream it calls, its sizes), from its registry line.
    """

    layer: ClassVar[Layer]

    def __init__(self, scope: Stack, context: UseCaseContext, props: P) -> None:
        self.props = props
        # By path, not identity: jsii hands out a new proxy for a construct made on the JavaScript side
        # (the stack's singleton SSM parameter of the Powertools layer), so identity would claim it again.
        before = {c.node.path for c in scope.node.children}
        self.build(scope, context, props)
        self.constructs: tuple[IConstruct, ...] = tuple(c for c in scope.node.children if c.node.path not in before)

    def build(self, scope: Stack, context: UseCaseContext, props: P) -> None:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__

    def owned(self) -> list[IConstruct]:
        """Every construct of the use case, in construct order (pre-order, as `node.find_all` walks)."""
        return [c for top in self.constructs for c in top.node.find_all()]

    @property
    def queue_consumers(self) -> Mapping[str, ThrottledQueueConsumer]:
        """Downstream name -> the consumer whose SQS mapping the controller reconciles; default none."""
        return {}

    @property
    def distributed_map_workflows(self) -> Mapping[str, Sequence[sfn.IStateMachine]]:
        """Downstream name -> the state machines whose Distributed Map reads that downstream's `max_concurrency`
        when a run starts: the controller retunes their running Map Runs (`UpdateMapRun`); default none."""
        return {}


@dataclass(frozen=True)
class Registered(Generic[P]):
    """One registry line: a use-case class and its props."""

    use_case: type[UseCase[P]]
    props: P

    @property
    def layer(self) -> Layer:
        return self.use_case.layer


def build_layer(scope: Stack, layer: Layer, registry: Sequence[Registered[Any]], *, config: AppConfig,
                shared_limits: SharedLimitsStack,
                callers: Mapping[str, lambda_.Function] | None = None) -> list[UseCase[Any]]:
    """Build the registry's use cases of `layer` into `scope`, in registry order."""
    built: list[UseCase[Any]] = []
    for line in registry:
        if line.layer is layer:
            context = UseCaseContext(config=config, shared_limits=shared_limits, removal_policy=removal_policy(config),
                                     log_retention=log_retention(config), callers=dict(callers or {}),
                                     built=tuple(built))
            built.append(line.use_case(scope, context, line.props))
    return built


def the_use_case(use_cases: Sequence[UseCase[Any]], kind: type[U], *, remedy: str = "register it") -> U:
    """The one use case of `kind` among `use_cases` (another stack's wiring reads its resources)."""
    found = [u for u in use_cases if isinstance(u, kind)]
    if len(found) != 1:
        raise ValueError(f"expected one {kind.__name__} among the use cases built, got {len(found)}"
                         f" ({[u.name for u in use_cases]}): {remedy}")
    return found[0]

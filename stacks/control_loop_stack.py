"""Control loop: alarms per downstream and per layer, the controller that retunes SSM, and the stage's dashboard.

Metric factories (`DownstreamMetrics`) are kept apart from what is built from them: the alarms are
declared as data (`AlarmSpec`, one list) and composed in one place, where each gets the people's
SNS topic as its action and, when it means "slow down" for a downstream, a route to the
controller (an EventBridge rule on its state changes). The controller also runs every minute, so
it acts without alarms and raises limits again after a recovery.

The callers publish Powertools EMF metrics in the `Throttling` namespace with the dimensions
`service` and `Downstream`; a downstream's metrics are summed over the services that call it,
found in the app itself: every function whose environment names a `DOWNSTREAM_NAME` (callers,
consumers, any later use case). Workflows and queues come with the registered use cases
(`stacks/use_cases/`): each use case's state machines alarm on their failed (or, when their `Fail`
states are outcomes, timed-out) and throttled executions, its queues with a dead-letter queue of
their own on the age of their oldest message, its dead-letter queues on any message at all, and so
on for its failure hand-overs and the functions it marks with `alarm_on_errors`. A state machine,
queue, hand-over or marked function of the app that no registered use case owns would go unwatched,
so it refuses to synthesize (`unregistered_resources`). This stack is built after every other stack.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment, ArnFormat, CfnOutput, Duration, Stack, Token, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct, IConstruct

from stacks import stage_props
from stacks.config import AppConfig, ControlLoopConfig, DownstreamConfig
from stacks.app_assets import lambda_code
from stacks.patterns import AslStateMachine, HandlerFunction, ThrottledQueueConsumer
from stacks.patterns.contributor_insights import TopContributorsRule
from stacks.patterns.monitoring import (
    QUIET_GROUPS_AGE_METRIC,
    OldestMessageAlarm,
    errors_alarm_reason,
    oldest_message_alarm,
    quiet_tenants_alarm,
)
from stacks.patterns.secure_defaults import encrypted_table
from stacks.patterns.throttled_api import ThrottledApi
from stacks.shared_limits_stack import SharedLimitsStack, breaker_tunables_key, downstream_tunables_key
from stacks.use_cases import UseCase
from throttling.core import names, planning
from throttling.core.controller import ALGORITHMS, Bounds, ControllerPolicy
from throttling.core.controller.plan import DownstreamPlan

CONTROLLER_SERVICE = "throttling-controller"
CLOUDWATCH_PRINCIPAL = "cloudwatch.amazonaws.com"
# The plans change only with a deploy: the controller adopts a new one within a minute.
PLANS_CACHE_SEC = 60
# A period with fewer calls says nothing: the alarms and the controller both ignore it.
MIN_CALLS = planning.DEFAULT_MIN_CALLS
PERIOD = Duration.seconds(planning.DEFAULT_PERIOD_SEC)
# Lambda's minimum for an asynchronous event's age: a controller run is worth a minute, no more.
CONTROLLER_EVENT_MAX_AGE_SEC = 60


def caller_service(downstream: DownstreamConfig) -> str:
    """The Powertools service of a downstream's caller (as the workflows stack names it)."""
    return f"{downstream.name}-caller"


def downstream_services(scope: Construct) -> dict[str, list[str]]:
    """Downstream name -> the Powertools services of every function of the app that calls it.

    A function that calls a downstream names it in `DOWNSTREAM_NAME`, and its metrics carry its
    `POWERTOOLS_SERVICE_NAME`. The L2 function exposes no accessor for its environment, so it is
    read from the L1 resource's properties (what CloudFormation will get).
    """
    found: dict[str, set[str]] = {}
    for construct in scope.node.root.node.find_all():
        if not isinstance(construct, lambda_.CfnFunction):
            continue
        environment = Stack.of(construct).resolve(construct._cfn_properties.get("environment")) or {}
        variables = environment.get("variables") or {}
        name, service = variables.get(names.ENV_DOWNSTREAM_NAME), variables.get(names.ENV_POWERTOOLS_SERVICE_NAME)
        if isinstance(name, str) and isinstance(service, str):
            found.setdefault(name, set()).add(service)
    return {name: sorted(services) for name, services in found.items()}


def downstream_log_groups(scope: Construct) -> dict[str, list[logs.ILogGroup]]:
    """Downstream name -> the log groups of every function of the app that calls it (found as in
    `downstream_services`: its environment names the downstream), in construct order."""
    found: dict[str, list[logs.ILogGroup]] = {}
    for construct in scope.node.root.node.find_all():
        if not isinstance(construct, lambda_.Function) or not isinstance(construct.node.default_child, lambda_.CfnFunction):
            continue
        cfn = construct.node.default_child
        environment = Stack.of(cfn).resolve(cfn._cfn_properties.get("environment")) or {}
        name = (environment.get("variables") or {}).get(names.ENV_DOWNSTREAM_NAME)
        if isinstance(name, str):
            found.setdefault(name, []).append(construct.log_group)
    return found


# The per-tenant rules: which log line each counts, and what it is keyed by. Refusals are keyed by
# class too (the classes are shed in order, so which class of a tenant was refused is the question);
# answered calls by tenant alone, so a caller that logs no class (the legacy consumer) still counts.
TENANT = f"$.{names.LOG_KEY_TENANT}"
PRIORITY = f"$.{names.LOG_KEY_PRIORITY}"
TENANT_RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "Refused": (names.LIMITER_REFUSED_LOG_MESSAGE, (TENANT, PRIORITY)),
    "Answered": (names.CALL_ANSWERED_LOG_MESSAGE, (TENANT,)),
}
# How many tenants each dashboard graph draws (the rule itself keeps every contributor's count).
TOP_TENANTS = 10


@dataclass(frozen=True)
class Workflow:
    """A state machine of the app, named after its construct (`CrmBatchEmail`)."""

    name: str
    state_machine: sfn.StateMachine
    fail_states_are_outcomes: bool


@dataclass(frozen=True)
class WatchedQueue:
    """A queue of the app, named after its construct path in its stack (`LegacyConsumerDeadLetterQueue`).

    A queue without a dead-letter queue of its own is one (cdk-nag's SQS3 lets no other queue go without).
    """

    name: str
    queue: sqs.Queue
    is_dead_letter_queue: bool
    oldest_message_alarm: OldestMessageAlarm | None
    quiet_tenants_alarm: OldestMessageAlarm | None = None


def workflows_in(constructs: Iterable[IConstruct]) -> list[Workflow]:
    """Every state machine among `constructs`, in their order; an `AslStateMachine` lends it its name and says
    whether its `Fail` states are outcomes."""
    found = []
    for construct in constructs:
        if isinstance(construct, sfn.StateMachine):
            parent = construct.node.scope
            asl = parent if isinstance(parent, AslStateMachine) else None
            found.append(Workflow(name=(asl or construct).node.id, state_machine=construct,
                                  fail_states_are_outcomes=bool(asl and asl.fail_states_are_outcomes)))
    _refuse_duplicate_names([(w.name, w.state_machine.node.path) for w in found], "state machines")
    return found


def queues_in(constructs: Iterable[IConstruct]) -> list[WatchedQueue]:
    """Every queue among `constructs`, in their order, each named by its path in its stack."""
    found = []
    for construct in constructs:
        if isinstance(construct, sqs.Queue):
            found.append(WatchedQueue(name=_name_in_stack(construct), queue=construct,
                                      is_dead_letter_queue=construct.dead_letter_queue is None,
                                      oldest_message_alarm=oldest_message_alarm(construct),
                                      quiet_tenants_alarm=quiet_tenants_alarm(construct)))
    _refuse_duplicate_names([(q.name, q.queue.node.path) for q in found], "queues")
    return found


def functions_alarmed_on_errors_in(constructs: Iterable[IConstruct]) -> list[tuple[str, lambda_.Function, str]]:
    """(name, function, reason) for every function among `constructs` marked with `alarm_on_errors`."""
    found = []
    for construct in constructs:
        if isinstance(construct, lambda_.Function):
            reason = errors_alarm_reason(construct)
            if reason is not None:
                # A HandlerFunction's function is named "Function" inside it: the pattern's id says more.
                named = construct.node.scope if construct.node.id == "Function" else construct
                found.append((_name_in_stack(named), construct, reason))
    _refuse_duplicate_names([(name, function.node.path) for name, function, _ in found], "functions")
    return found


def failure_handovers_in(constructs: Iterable[IConstruct]) -> list[tuple[str, cloudwatch.Metric]]:
    """(name, metric) for every place among `constructs` that hands a failed event to a destination: a function's
    on-failure destination (`DestinationDeliveryFailures`) and a rule target's dead-letter queue
    (`InvocationsFailedToBeSentToDlq`). When that hand-over itself fails, the event is gone."""
    found = []
    for construct in constructs:
        if isinstance(construct, lambda_.CfnEventInvokeConfig):
            destinations = Stack.of(construct).resolve(construct.destination_config) or {}
            function = construct.node.scope.node.scope  # CfnEventInvokeConfig < EventInvokeConfig < Function
            if destinations.get("onFailure") and isinstance(function, lambda_.Function):
                found.append((f"{_name_in_stack(function)}-DestinationDeliveryFailures", function.metric(
                    "DestinationDeliveryFailures", period=PERIOD, statistic="Sum")))
        elif isinstance(construct, events.Rule):
            rule = construct.node.default_child
            if any("deadLetterConfig" in target for target in Stack.of(rule).resolve(rule.targets) or []):
                found.append((f"{_name_in_stack(construct)}-DeadLetterDeliveryFailures", cloudwatch.Metric(
                    namespace="AWS/Events", metric_name="InvocationsFailedToBeSentToDlq",
                    dimensions_map={"RuleName": construct.rule_name}, period=PERIOD, statistic="Sum")))
    return found


def unregistered_resources(scope: Construct, use_cases: Sequence[UseCase[Any]]) -> list[str]:
    """The paths of the app's state machines, queues, failure hand-overs and functions alarmed on errors that no
    registered use case owns: the control loop watches the use cases, so nothing would alarm on these."""
    owned = {c.node.path for u in use_cases for c in u.owned()}
    everything = list(scope.node.root.node.find_all())
    watched = ([w.state_machine for w in workflows_in(everything)] + [q.queue for q in queues_in(everything)]
               + [function for _, function, _ in functions_alarmed_on_errors_in(everything)])
    paths = [c.node.path for c in watched] + [
        c.node.path for c in everything
        if isinstance(c, (lambda_.CfnEventInvokeConfig, events.Rule)) and failure_handovers_in([c])]
    return [path for path in paths if path not in owned]


def _name_in_stack(construct: Construct) -> str:
    """`LegacyConsumer/DeadLetterQueue` in its stack -> `LegacyConsumerDeadLetterQueue`: stable, and free of config."""
    in_stack = construct.node.path.removeprefix(Stack.of(construct).node.path + "/")
    return "".join(part[:1].upper() + part[1:] for part in in_stack.split("/"))


def _refuse_duplicate_names(named: Sequence[tuple[str, str]], kind: str) -> None:
    paths: dict[str, list[str]] = {}
    for name, path in named:
        paths.setdefault(name, []).append(path)
    if clashes := {name: found for name, found in paths.items() if len(found) > 1}:
        raise ValueError(f"{kind} must have distinct names for their alarms, got {clashes}: rename a construct")


# The policy fields the app's configuration sets; the controller takes its defaults for the others.
CONFIGURED_POLICY_FIELDS = ("mode", "min_calls", "throttle_rate_threshold", "error_rate_threshold",
                            "clean_periods_to_increase", "cooldown_sec", "setting_propagation_sec", "adjust_rate")


def controller_policy(loop: ControlLoopConfig, *,
                      tunables_cache_sec: float = planning.DEFAULT_SETTING_PROPAGATION_SEC) -> ControllerPolicy:
    """The controller's policy, built with the Lambda side's own type (validated here, at synth).

    `tunables_cache_sec`: the stage's; a setting the controller writes reaches the callers that late,
    so periods that began before then are no evidence of it.
    """
    return ControllerPolicy(
        setting_propagation_sec=tunables_cache_sec,
        algorithm=ALGORITHMS[loop.mode](),
        min_calls=MIN_CALLS,
        throttle_rate_threshold=loop.throttle_rate_threshold,
        error_rate_threshold=loop.error_rate_threshold,
        clean_periods_to_increase=loop.clean_periods_to_increase,
        cooldown_sec=loop.cooldown_sec,
        adjust_rate=loop.adjust_rate,
    )


class DownstreamMetrics:
    """The callers' EMF metrics of one downstream, summed over the services that call it."""

    def __init__(self, downstream: str, services: Sequence[str]) -> None:
        if not services:
            raise ValueError(f"services must name at least one caller of {downstream!r}, got {list(services)!r}")
        self.downstream = downstream
        self.services = tuple(services)

    def metric(self, name: str, service: str, statistic: str = "Sum") -> cloudwatch.Metric:
        return cloudwatch.Metric(namespace=names.METRICS_NAMESPACE, metric_name=name, statistic=statistic,
                                 period=PERIOD,
                                 dimensions_map={names.DOWNSTREAM_DIMENSION: self.downstream,
                                                 names.SERVICE_DIMENSION: service},
                                 label=f"{name} {service}")

    def controller(self, name: str, statistic: str = "Maximum") -> cloudwatch.Metric:
        """A metric the controller publishes about this downstream."""
        return cloudwatch.Metric(namespace=names.METRICS_NAMESPACE, metric_name=name, statistic=statistic,
                                 period=PERIOD,
                                 dimensions_map={names.DOWNSTREAM_DIMENSION: self.downstream,
                                                 names.SERVICE_DIMENSION: CONTROLLER_SERVICE},
                                 label=name)

    def total(self, name: str, label: str) -> cloudwatch.IMetric:
        """The sum over the services (missing points count as 0)."""
        if len(self.services) == 1:
            return self.metric(name, self.services[0])
        # Ids are unique per metric name: one graph may hold several totals.
        using = {f"{name.lower()}{i}": self.metric(name, service) for i, service in enumerate(self.services)}
        return cloudwatch.MathExpression(expression=" + ".join(f"FILL({k}, 0)" for k in using), using_metrics=using,
                                         period=PERIOD, label=label)

    def rate_percent(self, numerator: str, label: str, *, less: str | None = None) -> cloudwatch.MathExpression:
        """`100 * (numerator - less) / DownstreamCalls`, only when at least MIN_CALLS calls were made (else 0)."""
        using: dict[str, cloudwatch.IMetric] = {}
        calls, part = [], []
        for i, service in enumerate(self.services):
            using[f"c{i}"] = self.metric(names.DOWNSTREAM_CALLS, service)
            using[f"{numerator.lower()}{i}"] = self.metric(numerator, service)
            calls.append(f"FILL(c{i}, 0)")
            term = f"FILL({numerator.lower()}{i}, 0)"
            if less is not None:
                using[f"{less.lower()}{i}"] = self.metric(less, service)
                term = f"({term} - FILL({less.lower()}{i}, 0))"
            part.append(term)
        total_calls = f"({' + '.join(calls)})"
        expression = f"IF({total_calls} >= {MIN_CALLS}, 100 * ({' + '.join(part)}) / {total_calls}, 0)"
        return cloudwatch.MathExpression(expression=expression, using_metrics=using, period=PERIOD, label=label)

    def throttle_rate_percent(self) -> cloudwatch.MathExpression:
        return self.rate_percent(names.DOWNSTREAM_THROTTLED, f"{self.downstream} 429 rate (%)")

    def error_rate_percent(self) -> cloudwatch.MathExpression:
        """Every 5xx and timeout: what the breaker counts (a downstream that is down should trip it)."""
        return self.rate_percent(names.DOWNSTREAM_UNAVAILABLE, f"{self.downstream} error rate (%)")

    def overload_error_rate_percent(self) -> cloudwatch.MathExpression:
        """5xx and timeouts less the answers that said "down until" (5xx with Retry-After): slowing down
        helps an overloaded downstream, not one that is down, which is the breaker's business."""
        return self.rate_percent(names.DOWNSTREAM_UNAVAILABLE, f"{self.downstream} error rate, down answers aside (%)",
                                 less=names.DOWNSTREAM_DOWN)

    def latency(self, statistic: str) -> cloudwatch.IMetric:
        """The worst service's latency statistic (a percentile cannot be summed)."""
        if len(self.services) == 1:
            return self.metric(names.DOWNSTREAM_LATENCY, self.services[0], statistic)
        using = {f"{statistic.lower()}_{i}": self.metric(names.DOWNSTREAM_LATENCY, s, statistic)
                 for i, s in enumerate(self.services)}
        return cloudwatch.MathExpression(expression=f"MAX([{', '.join(using)}])", using_metrics=using, period=PERIOD,
                                         label=f"{self.downstream} latency {statistic} (ms)")


@dataclass(frozen=True)
class AlarmSpec:
    """One alarm as data. `route` (downstream, kind) makes its state changes reach the controller."""

    construct_id: str
    alarm_name: str
    description: str
    metric: cloudwatch.IMetric
    threshold: float
    evaluation_periods: int = 1
    datapoints_to_alarm: int | None = None
    comparison: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
    route: tuple[str, str] | None = None


class ControlLoopStack(Stack):
    """The alarms, the controller and the dashboard of one stage.

    :param shared_limits: the tunables the controller owns (with the operators), and the tables it watches.
    :param use_cases: the use cases built by the layers' stacks: each one's state machines, queues, failure
        hand-overs and functions alarmed on errors are alarmed on and graphed, and its queue consumers' SQS
        mappings get their `MaximumConcurrency` from the controller (and a dashboard graph); default none,
        and then the app may hold none of those (see `unregistered_resources`).
    :param downstream_callers: downstream name -> its caller function (Lambda throttles alarm); default none.
    :param apis: PascalCase name -> a `ThrottledApi` (429 share, 5xx share and p99 latency alarms for
        people, and the dashboard's ingress row); default none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        shared_limits: SharedLimitsStack,
        use_cases: Sequence[UseCase[Any]] = (),
        downstream_callers: Mapping[str, lambda_.IFunction] | None = None,
        apis: Mapping[str, ThrottledApi] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        removal_policy = stage_props.removal_policy(config)
        loop = config.control_loop
        callers = dict(downstream_callers or {})
        if unregistered := unregistered_resources(self, use_cases):
            raise ValueError(f"no registered use case owns {unregistered}, so nothing would alarm on them: build each"
                             " in a use case (stacks/use_cases/) and add that use case to registry.USE_CASES")
        self.use_cases = list(use_cases)
        owned = [c for u in self.use_cases for c in u.owned()]
        consumers = {name: c for u in self.use_cases for name, c in u.queue_consumers.items()}
        map_workflows: dict[str, list[sfn.IStateMachine]] = {}
        for use_case in self.use_cases:
            for name, machines in use_case.distributed_map_workflows.items():
                map_workflows.setdefault(name, []).extend(machines)
        self.workflows = workflows_in(owned)
        self.queues = queues_in(owned)
        self.failure_handovers = failure_handovers_in(owned)
        self.functions_alarmed_on_errors = functions_alarmed_on_errors_in(owned)
        self.apis = dict(apis or {})
        for name in [*callers, *consumers, *map_workflows]:
            config.downstream(name)  # fails early, naming the configured downstreams

        # A downstream nobody calls yet is still watched under its caller's name.
        services = downstream_services(self)
        self.downstream_metrics = {
            d.name: DownstreamMetrics(d.name, services.get(d.name) or [caller_service(d)]) for d in config.downstreams
        }

        # -- people: an encrypted topic that this stage's alarms may publish to ---------------------
        # `enforce_ssl` gives the topic a policy, and a topic with a policy accepts only whom it names:
        # CloudWatch is named, for this account's alarms of this stage only (confused-deputy conditions,
        # as SNS documents them for CloudWatch on the topic and on the key). The AWS managed key would
        # not do: its policy cannot let CloudWatch in.
        self.alarm_name_prefix = f"{config.stack_prefix}-"
        alarms_of_this_stage = {
            "StringEquals": {"aws:SourceAccount": self.account},
            "ArnLike": {"aws:SourceArn": self.format_arn(service="cloudwatch", resource="alarm",
                                                         resource_name=f"{self.alarm_name_prefix}*",
                                                         arn_format=ArnFormat.COLON_RESOURCE_NAME)},
        }
        self.alarm_key = kms.Key(self, "AlarmTopicKey", enable_key_rotation=True, removal_policy=removal_policy,
                                 description="Encrypts the alarm topic; CloudWatch alarms may publish with it")
        self.alarm_key.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarmsEncryptForTheAlarmTopic", principals=[iam.ServicePrincipal(CLOUDWATCH_PRINCIPAL)],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"], resources=["*"], conditions=alarms_of_this_stage))
        self.alarm_topic = sns.Topic(self, "AlarmTopic", master_key=self.alarm_key, enforce_ssl=True,
                                     display_name=f"{config.stack_prefix} throttling alarms")
        self.alarm_topic.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarmsPublish", principals=[iam.ServicePrincipal(CLOUDWATCH_PRINCIPAL)],
            actions=["sns:Publish"], resources=[self.alarm_topic.topic_arn], conditions=alarms_of_this_stage))
        for email in loop.alarm_emails:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(email))

        # -- the alarms, as data -------------------------------------------------------------------
        self.alarm_specs = self._alarm_specs(config, shared_limits, callers)
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for spec in self.alarm_specs:
            self._add_alarm(spec)
        routes = {s.alarm_name: {"downstream": s.route[0], "kind": s.route[1]} for s in self.alarm_specs if s.route}

        # -- the controller ------------------------------------------------------------------------
        self.state_table = encrypted_table(self, "ControllerStateTable", removal_policy=removal_policy)
        # One SSM parameter per downstream instead of environment variables: Lambda's environment
        # holds 4 KB, which the plans of four downstreams already filled in prod.
        self.plans_path = config.controller_plans_path
        self.plan_parameters: dict[str, ssm.StringParameter] = {}
        self.controller_plans: dict[str, DownstreamPlan] = {}
        for d in config.downstreams:
            plan = DownstreamPlan(
                name=d.name,
                parameter_name=f"{config.ssm_prefix}/{downstream_tunables_key(d)}",
                breaker_parameter_name=f"{config.ssm_prefix}/{breaker_tunables_key(d)}",
                services=tuple(self.downstream_metrics[d.name].services),
                bounds=Bounds.from_document(loop.controller_bounds(d)),
                contract_rate_per_sec=d.max_rate_per_sec,
                p99_latency_threshold_ms=loop.p99_latency_threshold_ms(d),
                consumer_functions=(consumers[d.name].function.function_name,) if d.name in consumers else (),
                map_run_workflows=tuple(m.state_machine_arn for m in map_workflows.get(d.name, ())),
                alarms={name: route["kind"] for name, route in sorted(routes.items()) if route["downstream"] == d.name},
            )
            self.controller_plans[d.name] = plan
            self.plan_parameters[d.name] = ssm.StringParameter(
                self, f"{_pascal(d.name)}ControllerPlan", parameter_name=f"{self.plans_path}/{d.name}",
                string_value=self.to_json_string(plan.to_document()), tier=ssm.ParameterTier.STANDARD,
                description=f"The controller's plan for {d.name}, written by each deploy (not a tunable)")
        self.controller = HandlerFunction(
            self,
            "Controller",
            code=lambda_code(),
            handler="handlers.controller.handler",
            service=CONTROLLER_SERVICE,
            description="Retunes each downstream's concurrency and rate in SSM from its metrics and alarms",
            log_retention=stage_props.log_retention(config),
            removal_policy=removal_policy,
            timeout_sec=50,  # done before the next minute's run
            # One writer: a schedule and an alarm never decide at once. A lease in the shared semaphores
            # table guarantees it; the reservation only also caps the controller where one is available.
            reserved_concurrency=1 if config.reserve_concurrency else None,
            environment={
                names.ENV_SEMAPHORE_TABLE_NAME: shared_limits.semaphores.table.table_name,
                names.ENV_CONTROLLER_PLANS_PATH: self.plans_path,
                names.ENV_CONTROLLER_PLANS_CACHE_SEC: str(PLANS_CACHE_SEC),
                names.ENV_CONTROLLER_POLICY: json.dumps(controller_policy(
                    loop, tunables_cache_sec=config.tunables_cache_sec).to_document(CONFIGURED_POLICY_FIELDS),
                                                sort_keys=True),
                names.ENV_CONTROLLER_STATE_TABLE_NAME: self.state_table.table_name,
                names.ENV_BREAKER_TABLE_NAME: shared_limits.breakers.table.table_name,
                names.ENV_PERIOD_SEC: str(int(PERIOD.to_seconds())),
                names.ENV_METRICS_DELAY_SEC: str(loop.metrics_delay_sec),
            },
        )
        # GetParametersByPath is authorized against the path itself, so no wildcard is needed.
        iam.Grant.add_to_principal(
            grantee=self.controller.function, actions=["ssm:GetParametersByPath"],
            resource_arns=[self.format_arn(service="ssm", resource="parameter", resource_name=self.plans_path.lstrip("/"),
                                           arn_format=ArnFormat.SLASH_RESOURCE_NAME)])
        for parameter in self.plan_parameters.values():
            self.controller.function.node.add_dependency(parameter)
        function = self.controller.function
        shared_limits.tunables.grant_write(function)
        region = "<AWS::Region>" if Token.is_unresolved(self.region) else self.region  # as cdk-nag prints it
        Validations.of(self.controller.role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ssm:{region}:<AWS::AccountId>:"
                f"parameter{config.ssm_prefix}/*]",
                reason="the controller owns every tunable of the stage (downstreams/* and breakers/*, added with the"
                " config); the wildcard is under the stage's own prefix",
            )
        )
        shared_limits.breakers.grant_update(function)
        shared_limits.semaphores.grant_acquire_release(function)
        self.state_table.grant(function, "dynamodb:GetItem", "dynamodb:PutItem")
        self._grant_metrics_and_mappings(function, [c.function for c in consumers.values()])
        self._grant_map_run_retuning([m for machines in map_workflows.values() for m in machines])

        # Lambda's own asynchronous retries (two, over up to six hours, whatever a rule target's
        # retry_attempts says: those are EventBridge's delivery retries) would replay a stale minute and
        # queue behind the single reserved environment. A run that fails is replaced by the next minute's,
        # and an event throttled behind a running one waits at most a minute, then is dropped.
        function.configure_async_invoke(retry_attempts=0, max_event_age=Duration.seconds(CONTROLLER_EVENT_MAX_AGE_SEC))
        self.schedule = events.Rule(
            self,
            "ControllerSchedule",
            description="Run the controller every minute, alarms or not",
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[targets.LambdaFunction(function, retry_attempts=0, max_event_age=Duration.minutes(1))],
        )
        # Matched by name (the names are literals), so the rule does not depend on the alarms' ARNs.
        self.alarm_rule = events.Rule(
            self,
            "ControllerAlarmStateChanges",
            description="Deliver the slow-down alarms' state changes to the controller",
            event_pattern=events.EventPattern(
                source=["aws.cloudwatch"],
                detail_type=["CloudWatch Alarm State Change"],
                detail={"alarmName": sorted(routes)},
            ),
            targets=[targets.LambdaFunction(function, retry_attempts=2, max_event_age=Duration.minutes(10))],
        )
        # The control loop itself failing (an unusable tunables document, an AWS error) is for people.
        controller_errors = AlarmSpec(
            "ControllerErrors", f"{config.stack_prefix}-controller-Errors",
            "The controller could not handle a downstream (see its log: an operator's broken document?)",
            function.metric_errors(period=PERIOD, statistic="Sum"), 0, evaluation_periods=3, datapoints_to_alarm=2)
        self.alarm_specs.append(controller_errors)
        self._add_alarm(controller_errors)

        # -- per tenant: top-N over the callers' logs, not a metric per tenant ----------------------
        log_groups = downstream_log_groups(self)
        self.tenant_rules: dict[str, dict[str, TopContributorsRule]] = {}
        for d in config.downstreams:
            if not log_groups.get(d.name):
                continue  # nobody calls it yet: no logs to read
            self.tenant_rules[d.name] = {
                kind: TopContributorsRule(
                    self, f"{_pascal(d.name)}TopTenants{kind}", rule_name=f"{config.stack_prefix}-{d.name}-TopTenants{kind}",
                    log_groups=log_groups[d.name], keys=keys,
                    equal_to_any={f"$.{names.LOG_KEY_MESSAGE}": [message]}, present=keys)
                for kind, (message, keys) in TENANT_RULES.items()}

        self.dashboard = self._dashboard(config, shared_limits, callers, consumers)

        CfnOutput(self, "ControllerName", value=function.function_name)
        CfnOutput(self, "ControllerStateTableName", value=self.state_table.table_name)
        CfnOutput(self, "ControllerPlansPath", value=self.plans_path)
        CfnOutput(self, "AlarmTopicArn", value=self.alarm_topic.topic_arn)
        CfnOutput(self, "DashboardName", value=self.dashboard.dashboard_name)

    # -- alarms ------------------------------------------------------------------------------------
    @staticmethod
    def _throttle_rate_alarm(name: str, pascal: str, prefix: str, loop: ControlLoopConfig,
                             m: DownstreamMetrics) -> AlarmSpec:
        """One minute above the threshold where the controller moves the rate; where the callers' inner
        loop does (`adjust_rate` false), 2 of 3 minutes above `INNER_LOOP_THROTTLE_ALARM_RATE` (or the
        threshold, if higher): the inner loop answers its own probes' 429s within the call, and only
        429s it did not contain should cut the concurrency."""
        threshold = f"{loop.throttle_rate_threshold:.1%}"
        if loop.adjust_rate:
            return AlarmSpec(
                f"{pascal}ThrottleRate", f"{prefix}-{name}-ThrottleRate",
                f"{name} answers more than {threshold} of calls with 429: slow down",
                m.throttle_rate_percent(), loop.throttle_rate_threshold * 100, route=(name, names.ALARM_THROTTLED))
        sustained = max(loop.throttle_rate_threshold, planning.INNER_LOOP_THROTTLE_ALARM_RATE)
        return AlarmSpec(
            f"{pascal}ThrottleRate", f"{prefix}-{name}-ThrottleRate",
            f"{name} answers more than {sustained:.1%} of calls with 429 in {planning.SUSTAINED_ALARM_DATAPOINTS} of"
            f" {planning.SUSTAINED_ALARM_PERIODS} minutes, past what the limiter's inner loop contains: fewer calls"
            " in flight",
            m.throttle_rate_percent(), sustained * 100,
            evaluation_periods=planning.SUSTAINED_ALARM_PERIODS, datapoints_to_alarm=planning.SUSTAINED_ALARM_DATAPOINTS,
            route=(name, names.ALARM_THROTTLED))

    def _alarm_specs(
        self, config: AppConfig, shared_limits: SharedLimitsStack, callers: Mapping[str, lambda_.IFunction]
    ) -> list[AlarmSpec]:
        loop = config.control_loop
        prefix = config.stack_prefix
        specs: list[AlarmSpec] = []
        for d in config.downstreams:
            m = self.downstream_metrics[d.name]
            pascal = _pascal(d.name)
            specs += [
                self._throttle_rate_alarm(d.name, pascal, prefix, loop, m),
                AlarmSpec(
                    f"{pascal}ErrorRate", f"{prefix}-{d.name}-ErrorRate",
                    f"{d.name} fails more than {loop.error_rate_threshold:.1%} of calls (5xx, timeouts; not the"
                    " 5xx that say when to come back): slow down",
                    m.overload_error_rate_percent(), loop.error_rate_threshold * 100,
                    route=(d.name, names.ALARM_ERRORS)),
                AlarmSpec(
                    f"{pascal}ErrorRateSustained", f"{prefix}-{d.name}-ErrorRateSustained",
                    f"{d.name} fails more than {loop.breaker_error_rate_threshold:.0%} of calls for"
                    f" {loop.breaker_alarm_periods} minutes: open its circuit breaker",
                    m.error_rate_percent(), loop.breaker_error_rate_threshold * 100,
                    evaluation_periods=loop.breaker_alarm_periods,
                    route=(d.name, names.ALARM_BREAKER)),
                AlarmSpec(
                    f"{pascal}LatencyP99", f"{prefix}-{d.name}-LatencyP99",
                    f"{d.name} p99 latency above {loop.p99_latency_threshold_ms(d):.0f} ms in 2 of 3 minutes:"
                    " fewer calls in flight",
                    m.latency("p99"), loop.p99_latency_threshold_ms(d), evaluation_periods=planning.SUSTAINED_ALARM_PERIODS,
                    datapoints_to_alarm=planning.SUSTAINED_ALARM_DATAPOINTS,
                    route=(d.name, names.ALARM_LATENCY)),
            ]
        for construct_name, table in (("RateLimiter", shared_limits.rate_limiter),
                                      ("Semaphores", shared_limits.semaphores),
                                      ("CircuitBreakers", shared_limits.breakers)):
            specs.append(AlarmSpec(
                f"{construct_name}TableThrottled", f"{prefix}-{construct_name}Table-Throttled",
                f"DynamoDB throttled requests on the {construct_name} table: a hot partition (add shards)",
                table.metric_throttled(), 0))
        for name, caller in callers.items():
            specs.append(AlarmSpec(
                f"{_pascal(name)}CallerThrottles", f"{prefix}-{name}-caller-Throttles",
                f"Lambda throttled the {name} caller: the account's concurrency is exhausted",
                caller.metric_throttles(period=PERIOD, statistic="Sum"), 0))
        for workflow in self.workflows:
            name, machine = workflow.name, workflow.state_machine
            if workflow.fail_states_are_outcomes:
                specs.append(AlarmSpec(
                    f"{name}ExecutionsTimedOut", f"{prefix}-{name}-ExecutionsTimedOut",
                    f"{name} executions timed out (its failures are outcomes; a timeout is not)",
                    machine.metric_timed_out(period=PERIOD, statistic="Sum"), 0))
            else:
                specs.append(AlarmSpec(
                    f"{name}ExecutionsFailed", f"{prefix}-{name}-ExecutionsFailed",
                    f"{name} executions failed (the execution's error names why)",
                    machine.metric_failed(period=PERIOD, statistic="Sum"), 0))
            specs.append(AlarmSpec(
                f"{name}ExecutionsThrottled", f"{prefix}-{name}-ExecutionsThrottled",
                f"Step Functions throttled {name}", machine.metric_throttled(period=PERIOD, statistic="Sum"), 0))
        for name, api in self.apis.items():
            specs += [
                AlarmSpec(
                    f"{name}RefusedRate", f"{prefix}-{name}-RefusedRate",
                    f"The API answers more than {loop.ingress_refused_rate_threshold:.0%} of requests with 429 in 2"
                    " of 3 minutes: a client over its plan, or a stage limit too low (the access log's response_type"
                    " and api_key_id say which)",
                    api.metric_refused_rate_percent(), loop.ingress_refused_rate_threshold * 100,
                    evaluation_periods=3, datapoints_to_alarm=2),
                AlarmSpec(
                    f"{name}ServerErrorRate", f"{prefix}-{name}-ServerErrorRate",
                    f"The API answers more than {loop.error_rate_threshold:.1%} of requests with 5xx: a service"
                    " behind a route fails or refuses the integration's role",
                    api.metric_server_error_rate_percent(), loop.error_rate_threshold * 100),
                AlarmSpec(
                    f"{name}LatencyP99", f"{prefix}-{name}-LatencyP99",
                    f"The API's p99 latency is above {loop.ingress_p99_latency_ms} ms in 2 of 3 minutes",
                    api.metric_latency("p99"), loop.ingress_p99_latency_ms, evaluation_periods=3,
                    datapoints_to_alarm=2),
            ]
        for name, metric in self.failure_handovers:
            specs.append(AlarmSpec(
                name.replace("-", ""), f"{prefix}-{name}",
                f"{name.split('-')[0]} could not hand a failed event to its destination: the event is lost (its"
                " destination's permissions or limits?)", metric, 0))
        for name, function, reason in self.functions_alarmed_on_errors:
            specs.append(AlarmSpec(
                f"{name}Errors", f"{prefix}-{name}-Errors", f"{name} failed: {reason}",
                function.metric_errors(period=PERIOD, statistic="Sum"), 0))
        for watched in self.queues:
            name, queue = watched.name, watched.queue
            if watched.is_dead_letter_queue:
                specs.append(AlarmSpec(
                    f"{name}DeadLetters", f"{prefix}-{name}-DeadLetters",
                    f"{name} holds messages that failed: read their errors, fix the cause, then redrive",
                    queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum"), 0))
            else:
                own = watched.oldest_message_alarm
                after_sec = own.after_sec if own else loop.backlog_age_alarm_sec
                specs.append(AlarmSpec(
                    f"{name}OldestMessage", f"{prefix}-{name}-OldestMessageAge",
                    f"{name}'s oldest message is older than {after_sec} s"
                    + (f" ({own.reason})" if own else ": its consumer is behind, or stopped"),
                    queue.metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum"), after_sec))
            quiet = watched.quiet_tenants_alarm
            if quiet is not None:
                specs.append(AlarmSpec(
                    f"{name}QuietTenantsOldestMessage", f"{prefix}-{name}-QuietTenantsMessageAge",
                    f"{name}'s oldest message of a quiet tenant is older than {quiet.after_sec} s ({quiet.reason}):"
                    " the consumer is behind for every tenant, not only a noisy one",
                    queue.metric(QUIET_GROUPS_AGE_METRIC, period=PERIOD, statistic="Maximum"), quiet.after_sec))
        return specs

    def _add_alarm(self, spec: AlarmSpec) -> cloudwatch.Alarm:
        """Every alarm tells people (in ALARM and back to OK); missing data is not breaching."""
        if not spec.alarm_name.startswith(self.alarm_name_prefix):
            raise ValueError(
                f"alarm names must start with {self.alarm_name_prefix!r}, got {spec.alarm_name!r}: the alarm topic"
                " lets CloudWatch publish for this stage's alarms only, so this alarm would notify nobody")
        alarm = cloudwatch.Alarm(
            self,
            spec.construct_id,
            alarm_name=spec.alarm_name,
            alarm_description=spec.description,
            metric=spec.metric,
            threshold=spec.threshold,
            evaluation_periods=spec.evaluation_periods,
            datapoints_to_alarm=spec.datapoints_to_alarm,
            comparison_operator=spec.comparison,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        notify = cloudwatch_actions.SnsAction(self.alarm_topic)
        alarm.add_alarm_action(notify)
        alarm.add_ok_action(notify)
        self.alarms[spec.construct_id] = alarm
        return alarm

    # -- permissions -------------------------------------------------------------------------------
    def _grant_metrics_and_mappings(self, function: lambda_.IFunction, consumers: Sequence[lambda_.IFunction]) -> None:
        statements = [iam.PolicyStatement(actions=["cloudwatch:GetMetricData"], resources=["*"])]
        if consumers:
            statements += [
                iam.PolicyStatement(actions=["lambda:ListEventSourceMappings"], resources=["*"]),
                iam.PolicyStatement(actions=["lambda:GetFunctionConcurrency"],
                                    resources=[c.function_arn for c in consumers]),
                iam.PolicyStatement(
                    actions=["lambda:UpdateEventSourceMapping"],
                    resources=[self.format_arn(service="lambda", resource="event-source-mapping", resource_name="*",
                                               arn_format=ArnFormat.COLON_RESOURCE_NAME)],
                    conditions={"StringEquals": {"lambda:FunctionArn": [c.function_arn for c in consumers]}},
                ),
            ]
        region = "<AWS::Region>" if Token.is_unresolved(self.region) else self.region  # as cdk-nag prints it
        policy = iam.Policy(self, "ControllerReadsMetricsAndTunesMappings", statements=statements,
                            roles=[self.controller.role])
        Validations.of(policy).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason="cloudwatch:GetMetricData and lambda:ListEventSourceMappings do not support resource-level"
                " permissions",
            ),
            Acknowledgment(
                id=f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:lambda:{region}:"
                "<AWS::AccountId>:event-source-mapping:*]",
                reason="mapping UUIDs are generated at deploy time; the condition lambda:FunctionArn limits the"
                " update to the mappings of the buffers' consumers",
            ),
        )

    def _grant_map_run_retuning(self, machines: Sequence[sfn.IStateMachine]) -> None:
        """What `MapRunReconciler` calls, each on the one resource type it authorizes against: the workflow
        (`ListExecutions`), its executions (`ListMapRuns`) and its Map Runs (`DescribeMapRun`, `UpdateMapRun`)."""
        if not machines:
            return
        statements, acknowledgments = [], []
        region = "<AWS::Region>" if Token.is_unresolved(self.region) else self.region  # as cdk-nag prints it
        for machine in machines:
            # An export named here, so the acknowledgments below can name the value cdk-nag shows for it.
            producer = Stack.of(machine)
            export = f"{producer.stack_name}:{_name_in_stack(machine)}Name"
            name = producer.export_value(machine.state_machine_name, name=export)
            executions, map_runs = (
                self.format_arn(service="states", resource=resource, resource_name=f"{name}{tail}",
                                arn_format=ArnFormat.COLON_RESOURCE_NAME)
                for resource, tail in (("execution", ":*"), ("mapRun", "/*")))
            statements += [
                iam.PolicyStatement(actions=["states:ListExecutions"], resources=[machine.state_machine_arn]),
                iam.PolicyStatement(actions=["states:ListMapRuns"], resources=[executions]),
                iam.PolicyStatement(actions=["states:DescribeMapRun", "states:UpdateMapRun"], resources=[map_runs]),
            ]
            shown = export
            runs = f"arn:<AWS::Partition>:states:{region}:<AWS::AccountId>"
            acknowledgments += [
                Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{runs}:execution:{shown}:*]",
                               reason="the workflow's own executions, named at run time, whose Map Runs the controller"
                               " lists"),
                Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{runs}:mapRun:{shown}/*]",
                               reason="the workflow's own Map Runs, whose ids are made at run time, which the"
                               " controller retunes to the tunables' max_concurrency"),
            ]
        policy = iam.Policy(self, "ControllerRetunesMapRuns", statements=statements, roles=[self.controller.role])
        Validations.of(policy).acknowledge(*acknowledgments)

    # -- dashboard ---------------------------------------------------------------------------------
    def _dashboard(
        self,
        config: AppConfig,
        shared_limits: SharedLimitsStack,
        callers: Mapping[str, lambda_.IFunction],
        consumers: Mapping[str, ThrottledQueueConsumer],
    ) -> cloudwatch.Dashboard:
        rows: list[list[cloudwatch.IWidget]] = [
            [cloudwatch.TextWidget(
                markdown=f"# Throttling, {config.stage}\nPer downstream: what the callers saw, what our limiter"
                " admitted, and what the controller set (SSM tunables, with the reason in its log). Below: the"
                " layers (limit tables, callers, workflows, buffers).", width=24, height=2)],
            [cloudwatch.AlarmStatusWidget(alarms=list(self.alarms.values()), title="Alarms", width=24, height=4)],
        ]
        for d in config.downstreams:
            m = self.downstream_metrics[d.name]
            rows.append([
                cloudwatch.GraphWidget(
                    title=f"{d.name}: calls, 429s, errors", width=6,
                    left=[m.total(names.DOWNSTREAM_CALLS, "calls"), m.total(names.DOWNSTREAM_SUCCEEDED, "succeeded"),
                          m.total(names.DOWNSTREAM_THROTTLED, "429s"),
                          m.total(names.DOWNSTREAM_UNAVAILABLE, "5xx + timeouts"),
                          m.total(names.DOWNSTREAM_TIMEOUTS, "of which timeouts"),
                          m.total(names.DOWNSTREAM_REJECTED, "other 4xx")]),
                cloudwatch.GraphWidget(
                    title=f"{d.name}: latency (ms)", width=6, left=[m.latency("p50"), m.latency("p99")],
                    left_annotations=[cloudwatch.HorizontalAnnotation(
                        value=config.control_loop.p99_latency_threshold_ms(d), label="p99 alarm")]),
                cloudwatch.GraphWidget(
                    title=f"{d.name}: limiter admitted / refused", width=6,
                    left=[m.total(names.LIMITER_ADMITTED, "admitted"),
                          m.total(names.RATE_LIMITED, "refused (RateLimited)")]),
                cloudwatch.GraphWidget(
                    title=f"{d.name}: controller (in force, decisions, breaker)", width=6,
                    left=[m.controller(names.CONTROLLER_MAX_CONCURRENCY), m.controller(names.BREAKER_OPEN)],
                    right=[m.controller(names.CONTROLLER_RATE_PER_SEC), m.controller(names.CONTROLLER_INCREASES, "Sum"),
                           m.controller(names.CONTROLLER_DECREASES, "Sum")]),
            ])
        # Per tenant: each downstream's top tenants by refused takes and by answered calls (Contributor Insights).
        tenant_graphs: list[cloudwatch.IWidget] = [
            rule.widget(f"{downstream}: top tenants by {'refused takes (tenant, class)' if kind == 'Refused' else 'answered calls'}",
                        top=TOP_TENANTS)
            for downstream, rules in self.tenant_rules.items() for kind, rule in rules.items()]
        for start in range(0, len(tenant_graphs), 4):
            rows.append(tenant_graphs[start:start + 4])
        # One graph per table: each table's throttle metric is an expression over the same operation ids.
        layers: list[cloudwatch.IWidget] = [
            cloudwatch.GraphWidget(
                title=f"{name} table: {'denied acquires and ' if name == 'RateLimiter' else ''}DynamoDB throttles",
                width=4,
                left=([table.metric_denied(label="denied (conditional check failed)")] if name == "RateLimiter" else [])
                + [table.metric_throttled(label="throttled requests")])
            for name, table in (("RateLimiter", shared_limits.rate_limiter), ("Semaphores", shared_limits.semaphores),
                                ("CircuitBreakers", shared_limits.breakers))
        ]
        if callers:
            layers.append(cloudwatch.GraphWidget(
                title="Callers: Lambda throttles", width=4,
                left=[fn.metric_throttles(period=PERIOD, statistic="Sum", label=name) for name, fn in callers.items()]))
        if consumers:
            layers.append(cloudwatch.GraphWidget(
                title="Buffers: backlog, oldest message (s), dead letters", width=4,
                left=[c.metric_backlog(label=f"{name} backlog") for name, c in consumers.items()]
                + [c.metric_dead_letters(label=f"{name} dead letters") for name, c in consumers.items()],
                right=[c.metric_oldest_message_age(label=f"{name} oldest (s)") for name, c in consumers.items()]))
        rows.append(layers)
        watched: list[cloudwatch.IWidget] = []
        if self.workflows:
            watched.append(cloudwatch.GraphWidget(
                title="Workflows: executions", width=12,
                left=[metric for w in self.workflows for metric in (
                    w.state_machine.metric_started(period=PERIOD, statistic="Sum", label=f"{w.name} started"),
                    w.state_machine.metric_failed(period=PERIOD, statistic="Sum", label=f"{w.name} failed"),
                    w.state_machine.metric_timed_out(period=PERIOD, statistic="Sum", label=f"{w.name} timed out"),
                    w.state_machine.metric_throttled(period=PERIOD, statistic="Sum", label=f"{w.name} throttled"))]))
        if self.queues:
            watched.append(cloudwatch.GraphWidget(
                title="Queues: oldest message (s), dead letters", width=12,
                left=[q.queue.metric_approximate_age_of_oldest_message(
                    period=PERIOD, statistic="Maximum", label=f"{q.name} oldest (s)")
                    for q in self.queues if not q.is_dead_letter_queue],
                right=[q.queue.metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum", label=f"{q.name} dead letters")
                    for q in self.queues if q.is_dead_letter_queue]))
        if watched:
            rows.append(watched)
        for name, api in self.apis.items():
            rows.append([
                cloudwatch.GraphWidget(
                    title=f"Ingress {name}: requests, 4xx, 429s, 5xx", width=8,
                    left=[api.metric_requests(), api.metric_client_errors(), api.metric_refused(),
                          api.metric_server_errors()]),
                cloudwatch.GraphWidget(
                    title=f"Ingress {name}: latency (ms)", width=8,
                    left=[api.metric_latency("p50"), api.metric_latency("p99")],
                    left_annotations=[cloudwatch.HorizontalAnnotation(
                        value=config.control_loop.ingress_p99_latency_ms, label="p99 alarm")]),
                cloudwatch.GraphWidget(
                    title=f"Ingress {name}: requests and 4xx per route", width=8,
                    left=[api.metric_route(route, "Count") for route in api.methods],
                    right=[api.metric_route(route, "4XXError") for route in api.methods]),
            ])
        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"{config.stack_prefix}-throttling",
                                         default_interval=Duration.hours(3))
        for row in rows:
            dashboard.add_widgets(*row)
        return dashboard


def _pascal(snake: str) -> str:
    return "".join(part.title() for part in snake.split("_"))

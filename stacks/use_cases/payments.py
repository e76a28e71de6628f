"""Use case 2: authorize each order's payment at a slow payment gateway, once per order, and park orders while it fails.

`statemachines/payment_authorization.asl.json` takes stock, authorizes the payment through the
authorizer (idempotent per order, waiting for a limiter token), runs the order's follow-ups (the
warehouse, the customer's confirmation, the ledger) as a Parallel, each through its own downstream's
caller, undoing the ones done when another fails, parks the order while the gateway's
breaker is open, and resumes it once the breaker lets calls through (the parked-order resumer, every
minute). An `OrderPlaced` event starts the workflow through the starter, whose failures are never lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aws_cdk import Acknowledgment, ArnFormat, CfnOutput, Duration, Stack, Token, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_destinations as lambda_destinations
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs

from stacks.config import DownstreamConfig
from stacks.app_assets import lambda_code, statemachine_file
from stacks.patterns import AslStateMachine, HandlerFunction, alarm_on_errors, alarm_on_oldest_message_after
from stacks.patterns.secure_defaults import dead_letter_queue, encrypted_table
from stacks.shared_limits_stack import (
    breaker_tunables_key,
    breaker_tunables_seed,
    downstream_tunables_key,
    downstream_tunables_seed,
)
from stacks.use_cases.base import Layer, UseCase, UseCaseContext
from throttling.core import names

# Use case 2. The order events that start a payment (EventBridge, default bus).
ORDER_EVENT_SOURCE = "shop.orders"
ORDER_PLACED_DETAIL_TYPE = "OrderPlaced"
# The payment authorizer waits this long in the function for a limiter token, then hands the wait to the workflow.
PAYMENT_LIMITER_MAX_WAIT_SEC = 2
# How long an authorization is remembered per order id (Powertools idempotency): a retry or a duplicate within it
# gets the first answer, never a second charge.
PAYMENT_IDEMPOTENCY_EXPIRY_SEC = 24 * 3600
# Receives of a parked order before it moves to the dead-letter queue (a re-drive that keeps failing).
PARKED_ORDER_MAX_RECEIVE_COUNT = 5
# The resumer of parked orders runs every minute (EventBridge's finest rate), and may take this long; a
# message it received stays invisible as long, so no other run acts on it meanwhile.
PARKED_ORDER_RESUME_PERIOD_SEC = 60
PARKED_ORDER_RESUMER_TIMEOUT_SEC = 60
# The share of the gateway's planned tokens per period that resumptions may take; new orders keep the rest.
PARKED_ORDER_RESUME_SHARE = 0.25
# How long the payment gateway keeps an Idempotency-Key for certain: Stripe prunes keys once they are 24 hours
# old; an hour less leaves room for clocks and the call's own time. Set it to your gateway's documented retention.
PAYMENT_GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC = 23 * 3600
# A parked order older than this alarms: the stage's backlog-age default (15 minutes) is shorter than an
# ordinary gateway outage, through which parking is the design.
PARKED_ORDER_AGE_ALARM_SEC = 3600
# A failed start of an order's workflow: Lambda's asynchronous retries (its maximum, 2) over up to its
# maximum event age (6 h), then the event goes to the starter's on-failure queue. EventBridge's delivery to
# the starter: its defaults (185 attempts over 24 h), then its dead-letter queue.
ORDER_START_RETRY_ATTEMPTS = 2
ORDER_START_MAX_EVENT_AGE_HOURS = 6
ORDER_DELIVERY_RETRY_ATTEMPTS = 185
ORDER_DELIVERY_MAX_EVENT_AGE_HOURS = 24


@dataclass(frozen=True)
class PaymentsProps:
    """:param gateway: the configured downstream that authorizes payments (its caller, limits and breaker are used).
    :param warehouse: the downstream told of the units an authorized order took (the inventory follow-up).
    :param messaging: the downstream that sends the customer the order's confirmation.
    :param ledger: the downstream the order's authorization is written to (and reversed in, on compensation).

    The three follow-ups run at once, in the workflow's Parallel, each through its own downstream's caller.
    """

    gateway: str
    warehouse: str
    messaging: str
    ledger: str


class Payments(UseCase[PaymentsProps]):
    """The orders, inventory and idempotency tables, the workflow, its authorizer, starter, parked-orders queue and
    resumer, and the queues that keep every order whose workflow could not start."""

    layer = Layer.WORKFLOWS

    def build(self, scope: Stack, context: UseCaseContext, props: PaymentsProps) -> None:
        config, shared_limits, removal_policy = context.config, context.shared_limits, context.removal_policy
        gateway = context.unauthenticated(props.gateway, handler="the payment authorizer")
        gateway_caller = context.caller(gateway.name)
        # One caller per follow-up: each branch of the Parallel spends its own downstream's tokens.
        follow_up_callers = {placeholder: context.caller(downstream) for placeholder, downstream in (
            ("WarehouseCallerArn", props.warehouse), ("MessagingCallerArn", props.messaging),
            ("LedgerCallerArn", props.ledger))}
        limits_key, breaker_key = downstream_tunables_key(gateway), breaker_tunables_key(gateway)

        # {pk: order_id, status: pending|paid|parked|cancelled, ...}: written by the workflow (and by the resumer
        # claiming a parked order for its resumption), read by GET /payments/{id}.
        self.orders_table = encrypted_table(scope, "OrdersTable", removal_policy=removal_policy)
        # {pk: sku, stock: N}: the workflow takes stock with a conditional decrement and gives it back.
        self.inventory_table = encrypted_table(scope, "InventoryTable", removal_policy=removal_policy)
        # Powertools idempotency records, in its default layout (key `id`, TTL `expiration`).
        self.payment_idempotency_table = encrypted_table(
            scope, "PaymentIdempotencyTable", removal_policy=removal_policy, partition_key="id",
            ttl_attribute="expiration",
        )

        self.parked_orders_dlq = dead_letter_queue(
            scope, "ParkedOrdersDeadLetterQueue", removal_policy=removal_policy,
            holds="parked orders the parked-orders queue could not keep",
        )
        # Orders waiting for the gateway's breaker to close, to be resumed; kept as long as SQS allows.
        self.parked_orders_queue = sqs.Queue(
            scope,
            "ParkedOrdersQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
            visibility_timeout=Duration.seconds(PARKED_ORDER_RESUMER_TIMEOUT_SEC),
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=PARKED_ORDER_MAX_RECEIVE_COUNT,
                                                  queue=self.parked_orders_dlq),
            removal_policy=removal_policy,
        )
        alarm_on_oldest_message_after(
            self.parked_orders_queue, after_sec=PARKED_ORDER_AGE_ALARM_SEC,
            reason="an order waits here as long as the payment gateway's breaker stays open; an hour is an outage"
            " someone should know about, or orders that nothing resumes")
        # Encrypted with the AWS managed key: publishers and subscribers of this account need no key policy.
        self.customer_notifications = sns.Topic(
            scope,
            "CustomerNotificationsTopic",
            master_key=kms.Alias.from_alias_name(scope, "SnsManagedKey", "alias/aws/sns"),
            enforce_ssl=True,
        )

        authorizer = HandlerFunction(
            scope,
            "PaymentAuthorizer",
            code=lambda_code(),
            handler="handlers.authorize_payment.handler",
            service="payment-authorizer",
            description="Authorizes an order's payment at the gateway, at most once per order",
            log_retention=context.log_retention,
            removal_policy=removal_policy,
            timeout_sec=int(gateway.timeout_sec) + PAYMENT_LIMITER_MAX_WAIT_SEC + 5,
            # Without a reservation the limiter still holds the gateway's rate; only the cap on orders waiting
            # in the function for a token goes (they then hold the account's concurrency for up to 2 s each).
            reserved_concurrency=payment_authorizer_concurrency(gateway) if config.reserve_concurrency else None,
            environment={
                **shared_limits.caller_environment(gateway, tunables_cache_sec=config.tunables_cache_sec),
                names.ENV_BREAKER_TUNABLES_PARAMETER_NAME: shared_limits.tunables.parameter(breaker_key).parameter_name,
                names.ENV_BREAKER_TUNABLES_DEFAULTS: breaker_tunables_seed(gateway),
                names.ENV_LIMITER_MAX_WAIT_SEC: str(PAYMENT_LIMITER_MAX_WAIT_SEC),
                names.ENV_BREAKER_TABLE_NAME: shared_limits.breakers.table.table_name,
                names.ENV_IDEMPOTENCY_TABLE_NAME: self.payment_idempotency_table.table_name,
                names.ENV_IDEMPOTENCY_EXPIRY_SEC: str(PAYMENT_IDEMPOTENCY_EXPIRY_SEC),
                names.ENV_GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC: str(PAYMENT_GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC),
            },
        )
        self.payment_authorizer = authorizer.function
        shared_limits.rate_limiter.grant_acquire(authorizer.function)
        shared_limits.breakers.grant_update(authorizer.function)
        shared_limits.tunables.grant_read(authorizer.function, limits_key)
        shared_limits.tunables.grant_read(authorizer.function, breaker_key)
        # What Powertools' DynamoDB persistence layer does, and nothing more.
        self.payment_idempotency_table.grant(
            authorizer.function, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"
        )

        self.workflow = AslStateMachine(
            scope,
            "PaymentAuthorization",
            definition_file=statemachine_file("payment_authorization.asl.json"),
            definition_substitutions={
                "OrdersTableName": self.orders_table.table_name,
                "InventoryTableName": self.inventory_table.table_name,
                "CircuitBreakerTableName": shared_limits.breakers.table.table_name,
                "ParkedOrdersQueueUrl": self.parked_orders_queue.queue_url,
                "CustomerNotificationsTopicArn": self.customer_notifications.topic_arn,
                "AuthorizeFunctionArn": authorizer.function.function_arn,
                "PaymentGatewayCallerArn": gateway_caller.function_arn,
                **{placeholder: caller.function_arn for placeholder, caller in follow_up_callers.items()},
                "DefaultTenant": names.DEFAULT_TENANT,
                # A payment and everything that follows it (the void, the follow-ups, their undoing) is the work
                # kept flowing when a downstream is saturated: the classes below are refused first.
                "PaymentPriority": names.PRIORITY_CRITICAL,
            },
            log_retention=context.log_retention,
            removal_policy=removal_policy,
            # A declined card or an empty shelf ends in a named Fail: the control loop watches its timeouts.
            fail_states_are_outcomes=True,
        )
        # Exactly what the file's Tasks do, each on its one resource.
        role = self.workflow.role
        self.orders_table.grant(role, "dynamodb:PutItem", "dynamodb:UpdateItem")
        self.inventory_table.grant(role, "dynamodb:UpdateItem")
        shared_limits.breakers.grant_read_state(role)
        self.parked_orders_queue.grant_send_messages(role)
        self.customer_notifications.grant_publish(role)
        # The unqualified ARNs only: grant_invoke would add `<arn>:*` (every version and alias) as well.
        iam.Grant.add_to_principal(grantee=role, actions=["lambda:InvokeFunction"],
                                   resource_arns=[authorizer.function.function_arn, gateway_caller.function_arn,
                                                  *(caller.function_arn for caller in follow_up_callers.values())])
        self._build_parked_order_resumer(scope, context, gateway)

        starter = HandlerFunction(
            scope,
            "PaymentStarter",
            code=lambda_code(),
            handler="handlers.start_payment.handler",
            service="payment-starter",
            description="Starts the payment workflow once per order (execution name order-<order_id>)",
            log_retention=context.log_retention,
            removal_policy=removal_policy,
            timeout_sec=10,
            environment={names.ENV_PAYMENT_STATE_MACHINE_ARN: self.workflow.state_machine.state_machine_arn},
        )
        self.payment_starter = starter.function
        self.workflow.state_machine.grant_start_execution(starter.function)
        # An order whose workflow could not be started must never vanish. Lambda retries a failed start
        # (a repeat is refused by the execution name, so no retry starts a second workflow), then hands
        # the event, with its error, to this queue; EventBridge hands the events it could not deliver to
        # the starter at all to the other. Both are dead-letter queues: any message in them alarms.
        self.order_start_failures = dead_letter_queue(
            scope, "OrderStartFailedQueue", removal_policy=removal_policy,
            holds="OrderPlaced events whose workflow the starter could not start after Lambda's retries, as"
            " Lambda's invocation records (the event under requestPayload, the error under responsePayload)",
        )
        self.order_placed_undelivered = dead_letter_queue(
            scope, "OrderPlacedUndeliveredQueue", removal_policy=removal_policy,
            holds="OrderPlaced events EventBridge could not hand to the starter, with its error code as message"
            " attributes",
        )
        starter.function.configure_async_invoke(
            on_failure=lambda_destinations.SqsDestination(self.order_start_failures),
            retry_attempts=ORDER_START_RETRY_ATTEMPTS, max_event_age=Duration.hours(ORDER_START_MAX_EVENT_AGE_HOURS))
        self.order_placed_rule = events.Rule(
            scope,
            "OrderPlacedRule",
            description="Start the payment workflow for every order placed",
            event_pattern=events.EventPattern(source=[ORDER_EVENT_SOURCE], detail_type=[ORDER_PLACED_DETAIL_TYPE]),
            # EventBridge's own delivery retries (its defaults, written out), then the undelivered queue.
            targets=[targets.LambdaFunction(
                starter.function, dead_letter_queue=self.order_placed_undelivered,
                retry_attempts=ORDER_DELIVERY_RETRY_ATTEMPTS,
                max_event_age=Duration.hours(ORDER_DELIVERY_MAX_EVENT_AGE_HOURS))],
        )

        CfnOutput(scope, "PaymentAuthorizationStateMachineArn",
                  value=self.workflow.state_machine.state_machine_arn)
        CfnOutput(scope, "OrdersTableName", value=self.orders_table.table_name)
        CfnOutput(scope, "InventoryTableName", value=self.inventory_table.table_name)
        CfnOutput(scope, "PaymentIdempotencyTableName", value=self.payment_idempotency_table.table_name)
        CfnOutput(scope, "ParkedOrdersQueueUrl", value=self.parked_orders_queue.queue_url)
        CfnOutput(scope, "ParkedOrdersDeadLetterQueueUrl", value=self.parked_orders_dlq.queue_url)
        CfnOutput(scope, "ParkedOrderResumerName", value=self.parked_order_resumer.function_name)
        CfnOutput(scope, "CustomerNotificationsTopicArn", value=self.customer_notifications.topic_arn)
        CfnOutput(scope, "PaymentStarterName", value=starter.function.function_name)
        CfnOutput(scope, "OrderStartFailedQueueUrl", value=self.order_start_failures.queue_url)
        CfnOutput(scope, "OrderPlacedUndeliveredQueueUrl", value=self.order_placed_undelivered.queue_url)
        CfnOutput(scope, "PaymentAuthorizerName", value=authorizer.function.function_name)

    def _build_parked_order_resumer(self, scope: Stack, context: UseCaseContext, gateway: DownstreamConfig) -> None:
        """Parked orders: resumed every minute once the gateway's breaker lets calls through.

        No event-source mapping: it would receive while the breaker is open and spend the messages'
        receive counts until healthy orders reached the dead-letter queue. The function reads the
        breaker first and receives only what it may resume (`handlers.resume_parked_orders`).
        """
        config, shared_limits, removal_policy = context.config, context.shared_limits, context.removal_policy
        machine = self.workflow.state_machine
        machine = self.workflow.state_machine
        resumer = HandlerFunction(
            scope,
            "ParkedOrderResumer",
            code=lambda_code(),
            handler="handlers.resume_parked_orders.handler",
            service="parked-order-resumer",
            description="Resumes parked payments once the gateway's breaker lets calls through",
            log_retention=context.log_retention,
            removal_policy=removal_policy,
            timeout_sec=PARKED_ORDER_RESUMER_TIMEOUT_SEC,
            environment={
                names.ENV_PARKED_ORDERS_QUEUE_URL: self.parked_orders_queue.queue_url,
                names.ENV_PARKED_ORDERS_DLQ_URL: self.parked_orders_dlq.queue_url,
                names.ENV_ORDERS_TABLE_NAME: self.orders_table.table_name,
                names.ENV_BREAKER_TABLE_NAME: shared_limits.breakers.table.table_name,
                names.ENV_BREAKER_NAME: gateway.name,
                names.ENV_PAYMENT_STATE_MACHINE_ARN: machine.state_machine_arn,
                names.ENV_RESUMES_PER_RUN: str(parked_order_resumes_per_run(gateway)),
            },
        )
        self.parked_order_resumer = resumer.function
        alarm_on_errors(resumer.function, reason="a run stopped on a failing AWS call; parked orders wait until one"
                        " succeeds (its log names the call)")
        shared_limits.breakers.grant_read_state(resumer.function)
        self.parked_orders_queue.grant_consume_messages(resumer.function)
        self.parked_orders_dlq.grant_send_messages(resumer.function)
        # Read an order, and claim it for its resumption (the workflow's RecordPending checks the claim).
        self.orders_table.grant(resumer.function, "dynamodb:GetItem", "dynamodb:UpdateItem")
        machine.grant_start_execution(resumer.function)
        # Whether the execution that parked an order still runs, and whether a resumption already started.
        stack = Stack.of(scope)
        executions = stack.format_arn(service="states", resource="execution",
                                      resource_name=f"{machine.state_machine_name}:*",
                                      arn_format=ArnFormat.COLON_RESOURCE_NAME)
        iam.Grant.add_to_principal(grantee=resumer.function, actions=["states:DescribeExecution"],
                                   resource_arns=[executions])
        machine_id = stack.get_logical_id(machine.node.default_child)
        region = "<AWS::Region>" if Token.is_unresolved(scope.region) else scope.region  # as cdk-nag prints it
        Validations.of(resumer.role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:{region}:<AWS::AccountId>"
                   f":execution:<{machine_id}.Name>:*]",
                reason="the payment workflow's executions, named per order at run time; DescribeExecution only",
            )
        )
        # A run that failed is not worth repeating: the next one starts within a minute, with fresh state.
        resumer.function.configure_async_invoke(retry_attempts=0, max_event_age=Duration.minutes(1))
        self.parked_order_resume_schedule = events.Rule(
            scope,
            "ParkedOrderResumeSchedule",
            description="Resume parked payments once the gateway's breaker lets calls through",
            schedule=events.Schedule.rate(Duration.seconds(PARKED_ORDER_RESUME_PERIOD_SEC)),
            targets=[targets.LambdaFunction(resumer.function, retry_attempts=0, max_event_age=Duration.minutes(1))],
        )


def payment_authorizer_concurrency(gateway: DownstreamConfig) -> int:
    """Environments the payment authorizer may use: the gateway's calls in flight plus the callers waiting for a token.

    At 2 req/s and 0.4 s a call that is 1 call in flight, and up to 2 req/s x 2 s = 4 callers waiting
    in the function for their token. Beyond that Lambda throttles and the workflow retries for free,
    instead of a flood of orders holding the account's concurrency to wait for a 2 req/s gateway.
    """
    seconds_per_call = gateway.expected_latency_ms / 1000 + PAYMENT_LIMITER_MAX_WAIT_SEC
    return max(2, math.ceil(gateway.max_rate_per_sec * seconds_per_call))


def parked_order_resumes_per_run(gateway: DownstreamConfig) -> int:
    """Orders one run of the resumer may resume: a quarter of the gateway's planned tokens per period, at least 1.

    Each resumption makes one authorization, so at 1.98 req/s x 60 s x 0.25 = 29 they take a quarter
    of the minute's tokens and new orders keep the rest; the shared limiter, not this number, keeps the
    gateway within its rate, and 29 executions started at once drain through it in about 15 s, well
    within the authorizer's retries (the emulator shows 30 orders at once paid with no 429).
    """
    return max(1, math.floor(gateway.planned_rate_per_sec * PARKED_ORDER_RESUME_PERIOD_SEC * PARKED_ORDER_RESUME_SHARE))

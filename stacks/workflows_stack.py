"""Workflows: the functions that call downstreams, and the state machines of the use cases that run them.

One `call_downstream` function per downstream, so each has its own limits, metrics dimension and
blast radius, and reads only its own tunables. Use case 1 (`statemachines/crm_batch_email.asl.json`)
e-mails a CRM segment once a day through the CRM's caller; a segment too large for one execution is a
CSV object in the segments bucket, e-mailed by a Distributed Map (`statemachines/crm_segment_large.asl.json`)
through the same caller. Use case 2
(`statemachines/payment_authorization.asl.json`) authorizes each order's payment at the 2 req/s
payment gateway, once per order, parks orders while the gateway's breaker is open, and resumes them
once it lets calls through. Use case 3
(`statemachines/ugc_moderation.asl.json`) moderates every object uploaded to a bucket with several AI
models through the `ai_model` caller, decides from their scores (`handlers.decide_moderation`), and
stores and publishes the decision.
"""

from __future__ import annotations

import math

from aws_cdk import (
    Acknowledgment,
    ArnFormat,
    CfnOutput,
    Duration,
    RemovalPolicy,
    Stack,
    Token,
    Validations,
)
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as lambda_destinations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.config import AppConfig, DownstreamConfig
from stacks.patterns import AslStateMachine, HandlerFunction, alarm_on_errors, alarm_on_oldest_message_after
from stacks.patterns.secure_defaults import dead_letter_queue, encrypted_bucket, encrypted_table
from stacks.shared_limits_stack import (
    SharedLimitsStack,
    breaker_tunables_key,
    breaker_tunables_seed,
    downstream_tunables_key,
    downstream_tunables_seed,
)

# Use case 1, inline. The largest segment one execution e-mails: its history (25,000 events, 14 per user sent without a
# retry) and its state (256 KiB, the segment's ids in it until the Map) must hold it with room for retries and waits;
# the ASL's CheckSegmentSize refuses a larger one, and the segment format keeps each user id within the bytes below.
INLINE_SEGMENT_MAX_USERS = 1_000
SEGMENT_USER_ID_MAX_BYTES = 128
# Use case 1, large segments. Where segment exports are read from and where each run writes its users' outcomes.
SEGMENT_OBJECTS_PREFIX = "segments/"
SEGMENT_RUN_RESULTS_PREFIX = "runs/"
# Segment exports and run results name users: kept long enough to audit a run and redrive it (a failed
# execution can be redriven for 14 days), then deleted.
SEGMENT_OBJECTS_RETENTION_DAYS = 30

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


class WorkflowsStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: AppConfig, shared_limits: SharedLimitsStack, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        removal_policy = RemovalPolicy.DESTROY if config.removal_policy == "destroy" else RemovalPolicy.RETAIN
        self.downstream_callers: dict[str, lambda_.Function] = {}
        for downstream in config.downstreams:
            key = downstream_tunables_key(downstream)
            parameter = shared_limits.tunables.parameter(key)
            caller = HandlerFunction(
                self,
                f"{_pascal(downstream.name)}Caller",
                handler="handlers.call_downstream.handler",
                service=f"{downstream.name}-caller",
                description=f"Calls {downstream.name} within its limits",
                log_retention_days=config.log_retention_days,
                removal_policy=removal_policy,
                timeout_sec=int(downstream.timeout_sec) + 5,
                environment={
                    "DOWNSTREAM_NAME": downstream.name,
                    "DOWNSTREAM_BASE_URL": downstream.base_url,
                    "DOWNSTREAM_TIMEOUT_SEC": str(downstream.timeout_sec),
                    "DOWNSTREAM_RATE_LIMIT_PER_SEC": str(downstream.rate_limit_per_sec),
                    "DOWNSTREAM_BURST": str(downstream.burst),
                    "TUNABLES_PARAMETER_NAME": parameter.parameter_name,
                    "TUNABLES_DEFAULTS": downstream_tunables_seed(downstream),
                    "TUNABLES_CACHE_SEC": str(config.tunables_cache_sec),
                    "RATE_LIMITER_TABLE_NAME": shared_limits.rate_limiter.table.table_name,
                    "LIMITER_MAX_WAIT_SEC": "1",
                },
            )
            shared_limits.tunables.grant_read(caller.function, key)
            shared_limits.rate_limiter.grant_acquire(caller.function)
            self.downstream_callers[downstream.name] = caller.function
            CfnOutput(self, f"{_pascal(downstream.name)}CallerName", value=caller.function.function_name)

        self._add_crm_batch_email(config, shared_limits, removal_policy)
        self._add_crm_segment_large(config, shared_limits, removal_policy)
        self._add_payment_authorization(config, shared_limits, removal_policy)
        self._add_ugc_moderation(config, shared_limits, removal_policy)

    def _add_crm_batch_email(
        self, config: AppConfig, shared_limits: SharedLimitsStack, removal_policy: RemovalPolicy
    ) -> None:
        """Use case 1: a daily e-mail to every user of a CRM segment, within the CRM's 10 req/s."""
        crm = config.downstream("crm")
        crm_caller = self.downstream_callers[crm.name]
        crm_tunables = shared_limits.tunables.parameter(downstream_tunables_key(crm))

        # One item per segment: {pk: segment_id, user_ids: [user id strings]} (see the ASL's ReadSegment).
        self.segments_table = encrypted_table(self, "SegmentsTable", removal_policy=removal_policy)
        self.crm_batch_email_dlq = dead_letter_queue(
            self, "CrmBatchEmailDeadLetterQueue", removal_policy=removal_policy,
            holds="the users the CRM batch could not e-mail, sent by its RecordFailure state",
        )

        self.crm_batch_email = AslStateMachine(
            self,
            "CrmBatchEmail",
            definition_file="crm_batch_email.asl.json",
            definition_substitutions={
                "CrmTunablesParameterName": crm_tunables.parameter_name,
                "SegmentsTableName": self.segments_table.table_name,
                "CrmCallerFunctionArn": crm_caller.function_arn,
                "DeadLetterQueueUrl": self.crm_batch_email_dlq.queue_url,
            },
            log_retention_days=config.log_retention_days,
            removal_policy=removal_policy,
        )
        # Exactly what the file's Tasks do, each on its one resource.
        role = self.crm_batch_email.role
        shared_limits.tunables.grant_read(role, downstream_tunables_key(crm))
        self.segments_table.grant(role, "dynamodb:GetItem")
        # The unqualified ARN only: grant_invoke would add `<arn>:*` (every version and alias) as well.
        iam.Grant.add_to_principal(grantee=role, actions=["lambda:InvokeFunction"],
                                   resource_arns=[crm_caller.function_arn])
        self.crm_batch_email_dlq.grant_send_messages(role)

        self.crm_batch_email_schedule = events.Rule(
            self,
            "CrmBatchEmailSchedule",
            description="E-mail the daily CRM segment at 06:00 UTC",
            schedule=events.Schedule.cron(minute="0", hour="6"),
            targets=[
                targets.SfnStateMachine(
                    self.crm_batch_email.state_machine,
                    input=events.RuleTargetInput.from_object({"segment_id": "daily"}),
                )
            ],
        )

        CfnOutput(self, "CrmBatchEmailStateMachineArn", value=self.crm_batch_email.state_machine.state_machine_arn)
        CfnOutput(self, "SegmentsTableName", value=self.segments_table.table_name)
        CfnOutput(self, "CrmBatchEmailDeadLetterQueueUrl", value=self.crm_batch_email_dlq.queue_url)

    def _add_crm_segment_large(
        self, config: AppConfig, shared_limits: SharedLimitsStack, removal_policy: RemovalPolicy
    ) -> None:
        """Use case 1 for large segments: a CSV object per segment, one child execution per user, same CRM limits."""
        crm = config.downstream("crm")
        crm_caller = self.downstream_callers[crm.name]
        crm_tunables = shared_limits.tunables.parameter(downstream_tunables_key(crm))

        self.segments_bucket = encrypted_bucket(
            self, "SegmentsBucket", removal_policy=removal_policy,
            audited_by="segment exports are written by the CRM's export job and each one is read by the execution it"
            " starts, which writes every user's outcome back under runs/",
            expire_after_days=SEGMENT_OBJECTS_RETENTION_DAYS,
        )
        # EventBridge notifications through the bucket's own property, as for the uploads bucket.
        self.segments_bucket.node.default_child.add_property_override(
            "NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True)

        self.crm_segment_large = AslStateMachine(
            self,
            "CrmSegmentLarge",
            definition_file="crm_segment_large.asl.json",
            definition_substitutions={
                "CrmTunablesParameterName": crm_tunables.parameter_name,
                "SegmentsBucketName": self.segments_bucket.bucket_name,
                "CrmCallerFunctionArn": crm_caller.function_arn,
                "DeadLetterQueueUrl": self.crm_batch_email_dlq.queue_url,
            },
            log_retention_days=config.log_retention_days,
            removal_policy=removal_policy,
        )
        machine = self.crm_segment_large.state_machine
        # Exactly what the file's Tasks, its ItemReader and its ResultWriter do, each on its one resource.
        role = self.crm_segment_large.role
        shared_limits.tunables.grant_read(role, downstream_tunables_key(crm))
        # The unqualified ARN only: grant_invoke would add `<arn>:*` (every version and alias) as well.
        iam.Grant.add_to_principal(grantee=role, actions=["lambda:InvokeFunction"],
                                   resource_arns=[crm_caller.function_arn])
        self.crm_batch_email_dlq.grant_send_messages(role)
        # The Distributed Map runs its children as executions of this very state machine, and the role names
        # the machine: a policy of its own, since the machine already depends on the role's default policy.
        stack = Stack.of(self)
        segments = self.segments_bucket.arn_for_objects(f"{SEGMENT_OBJECTS_PREFIX}*")
        results = self.segments_bucket.arn_for_objects(f"{SEGMENT_RUN_RESULTS_PREFIX}*")
        # The machine's own executions are `execution:<machine>:<name>`; the children of its map runs
        # `execution:<machine>/<map run label>:<id>`, and the map runs `mapRun:<machine>/<label>:<id>`.
        own_executions, child_executions, map_runs = (
            stack.format_arn(service="states", resource=resource, resource_name=f"{machine.state_machine_name}{tail}",
                             arn_format=ArnFormat.COLON_RESOURCE_NAME)
            for resource, tail in (("execution", ":*"), ("execution", "/*"), ("mapRun", "/*")))
        map_run_policy = iam.Policy(self, "CrmSegmentLargeMapRunPolicy", roles=[role], statements=[
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[segments]),
            # The actions AWS documents for ResultWriter, which uploads a large result file in parts.
            iam.PolicyStatement(actions=["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts",
                                         "s3:AbortMultipartUpload"], resources=[results]),
            iam.PolicyStatement(actions=["states:StartExecution"], resources=[machine.state_machine_arn]),
            iam.PolicyStatement(actions=["states:DescribeExecution", "states:StopExecution"],
                                resources=[own_executions, child_executions]),
            # Redriving a failed run redrives its Map Run, which redrives the children that failed or never
            # started (the README's promise): AWS documents RedriveExecution on the child executions.
            iam.PolicyStatement(actions=["states:RedriveExecution"], resources=[child_executions]),
            iam.PolicyStatement(actions=["states:DescribeMapRun"], resources=[map_runs]),
        ])
        bucket_id = stack.get_logical_id(self.segments_bucket.node.default_child)
        machine_id = stack.get_logical_id(machine.node.default_child)
        region = "<AWS::Region>" if Token.is_unresolved(self.region) else self.region  # as cdk-nag prints it
        own_runs = f"arn:<AWS::Partition>:states:{region}:<AWS::AccountId>"
        Validations.of(map_run_policy).acknowledge(*(
            Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{resource}]", reason=reason)
            for resource, reason in (
                (f"<{bucket_id}.Arn>/{SEGMENT_OBJECTS_PREFIX}*",
                 "the segment to read is the run's input; any export under the segments prefix, nothing else"),
                (f"<{bucket_id}.Arn>/{SEGMENT_RUN_RESULTS_PREFIX}*",
                 "ResultWriter names its files after the map run's id, made at run time, under the results prefix"),
                (f"{own_runs}:execution:<{machine_id}.Name>:*",
                 "this state machine's own executions, which the Distributed Map describes and stops"),
                (f"{own_runs}:execution:<{machine_id}.Name>/*",
                 "the child executions of this state machine's own map runs, whose names are made at run time"),
                (f"{own_runs}:mapRun:<{machine_id}.Name>/*",
                 "this state machine's own map runs, whose ids are made at run time"),
            )
        ))

        # One run per segment export created under segments/, started with the object's key.
        self.segment_created_rule = events.Rule(
            self,
            "SegmentCreatedRule",
            description="E-mail every segment export created in the segments bucket",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={"bucket": {"name": [self.segments_bucket.bucket_name]},
                        "object": {"key": [{"prefix": SEGMENT_OBJECTS_PREFIX}]}},
            ),
            targets=[
                targets.SfnStateMachine(
                    machine,
                    input=events.RuleTargetInput.from_object(
                        {"segment_key": events.EventField.from_path("$.detail.object.key")}),
                )
            ],
        )

        CfnOutput(self, "CrmSegmentLargeStateMachineArn", value=machine.state_machine_arn)
        CfnOutput(self, "SegmentsBucketName", value=self.segments_bucket.bucket_name)

    def _add_payment_authorization(
        self, config: AppConfig, shared_limits: SharedLimitsStack, removal_policy: RemovalPolicy
    ) -> None:
        """Use case 2: authorize each order's payment at a 2 req/s gateway, once, and park orders while it fails."""
        gateway = config.downstream("payment_gateway")
        gateway_caller = self.downstream_callers[gateway.name]
        limits_key, breaker_key = downstream_tunables_key(gateway), breaker_tunables_key(gateway)

        # {pk: order_id, status: pending|paid|parked|cancelled, ...}: written by the workflow (and by the resumer
        # claiming a parked order for its resumption), read by GET /payments/{id}.
        self.orders_table = encrypted_table(self, "OrdersTable", removal_policy=removal_policy)
        # {pk: sku, stock: N}: the workflow takes stock with a conditional decrement and gives it back.
        self.inventory_table = encrypted_table(self, "InventoryTable", removal_policy=removal_policy)
        # Powertools idempotency records, in its default layout (key `id`, TTL `expiration`).
        self.payment_idempotency_table = encrypted_table(
            self, "PaymentIdempotencyTable", removal_policy=removal_policy, partition_key="id",
            ttl_attribute="expiration",
        )

        self.parked_orders_dlq = dead_letter_queue(
            self, "ParkedOrdersDeadLetterQueue", removal_policy=removal_policy,
            holds="parked orders the parked-orders queue could not keep",
        )
        # Orders waiting for the gateway's breaker to close, to be resumed; kept as long as SQS allows.
        self.parked_orders_queue = sqs.Queue(
            self,
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
            self,
            "CustomerNotificationsTopic",
            master_key=kms.Alias.from_alias_name(self, "SnsManagedKey", "alias/aws/sns"),
            enforce_ssl=True,
        )

        authorizer = HandlerFunction(
            self,
            "PaymentAuthorizer",
            handler="handlers.authorize_payment.handler",
            service="payment-authorizer",
            description="Authorizes an order's payment at the gateway, at most once per order",
            log_retention_days=config.log_retention_days,
            removal_policy=removal_policy,
            timeout_sec=int(gateway.timeout_sec) + PAYMENT_LIMITER_MAX_WAIT_SEC + 5,
            # Without a reservation the limiter still holds the gateway's rate; only the cap on orders waiting
            # in the function for a token goes (they then hold the account's concurrency for up to 2 s each).
            reserved_concurrency=payment_authorizer_concurrency(gateway) if config.reserve_concurrency else None,
            environment={
                "DOWNSTREAM_NAME": gateway.name,
                "DOWNSTREAM_BASE_URL": gateway.base_url,
                "DOWNSTREAM_TIMEOUT_SEC": str(gateway.timeout_sec),
                "DOWNSTREAM_RATE_LIMIT_PER_SEC": str(gateway.rate_limit_per_sec),
                "DOWNSTREAM_BURST": str(gateway.burst),
                "TUNABLES_PARAMETER_NAME": shared_limits.tunables.parameter(limits_key).parameter_name,
                "TUNABLES_DEFAULTS": downstream_tunables_seed(gateway),
                "TUNABLES_CACHE_SEC": str(config.tunables_cache_sec),
                "BREAKER_TUNABLES_PARAMETER_NAME": shared_limits.tunables.parameter(breaker_key).parameter_name,
                "BREAKER_TUNABLES_DEFAULTS": breaker_tunables_seed(gateway),
                "RATE_LIMITER_TABLE_NAME": shared_limits.rate_limiter.table.table_name,
                "LIMITER_MAX_WAIT_SEC": str(PAYMENT_LIMITER_MAX_WAIT_SEC),
                "BREAKER_TABLE_NAME": shared_limits.breakers.table.table_name,
                "IDEMPOTENCY_TABLE_NAME": self.payment_idempotency_table.table_name,
                "IDEMPOTENCY_EXPIRY_SEC": str(PAYMENT_IDEMPOTENCY_EXPIRY_SEC),
                "GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC": str(PAYMENT_GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC),
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

        self.payment_authorization = AslStateMachine(
            self,
            "PaymentAuthorization",
            definition_file="payment_authorization.asl.json",
            definition_substitutions={
                "OrdersTableName": self.orders_table.table_name,
                "InventoryTableName": self.inventory_table.table_name,
                "CircuitBreakerTableName": shared_limits.breakers.table.table_name,
                "ParkedOrdersQueueUrl": self.parked_orders_queue.queue_url,
                "CustomerNotificationsTopicArn": self.customer_notifications.topic_arn,
                "AuthorizeFunctionArn": authorizer.function.function_arn,
                "PaymentGatewayCallerArn": gateway_caller.function_arn,
            },
            log_retention_days=config.log_retention_days,
            removal_policy=removal_policy,
            # A declined card or an empty shelf ends in a named Fail: the control loop watches its timeouts.
            fail_states_are_outcomes=True,
        )
        # Exactly what the file's Tasks do, each on its one resource.
        role = self.payment_authorization.role
        self.orders_table.grant(role, "dynamodb:PutItem", "dynamodb:UpdateItem")
        self.inventory_table.grant(role, "dynamodb:UpdateItem")
        shared_limits.breakers.grant_read_state(role)
        self.parked_orders_queue.grant_send_messages(role)
        self.customer_notifications.grant_publish(role)
        # The unqualified ARNs only: grant_invoke would add `<arn>:*` (every version and alias) as well.
        iam.Grant.add_to_principal(grantee=role, actions=["lambda:InvokeFunction"],
                                   resource_arns=[authorizer.function.function_arn, gateway_caller.function_arn])
        self._add_parked_order_resumer(config, shared_limits, removal_policy)

        starter = HandlerFunction(
            self,
            "PaymentStarter",
            handler="handlers.start_payment.handler",
            service="payment-starter",
            description="Starts the payment workflow once per order (execution name order-<order_id>)",
            log_retention_days=config.log_retention_days,
            removal_policy=removal_policy,
            timeout_sec=10,
            environment={"PAYMENT_STATE_MACHINE_ARN": self.payment_authorization.state_machine.state_machine_arn},
        )
        self.payment_starter = starter.function
        self.payment_authorization.state_machine.grant_start_execution(starter.function)
        # An order whose workflow could not be started must never vanish. Lambda retries a failed start
        # (a repeat is refused by the execution name, so no retry starts a second workflow), then hands
        # the event, with its error, to this queue; EventBridge hands the events it could not deliver to
        # the starter at all to the other. Both are dead-letter queues: any message in them alarms.
        self.order_start_failures = dead_letter_queue(
            self, "OrderStartFailedQueue", removal_policy=removal_policy,
            holds="OrderPlaced events whose workflow the starter could not start after Lambda's retries, as"
            " Lambda's invocation records (the event under requestPayload, the error under responsePayload)",
        )
        self.order_placed_undelivered = dead_letter_queue(
            self, "OrderPlacedUndeliveredQueue", removal_policy=removal_policy,
            holds="OrderPlaced events EventBridge could not hand to the starter, with its error code as message"
            " attributes",
        )
        starter.function.configure_async_invoke(
            on_failure=lambda_destinations.SqsDestination(self.order_start_failures),
            retry_attempts=ORDER_START_RETRY_ATTEMPTS, max_event_age=Duration.hours(ORDER_START_MAX_EVENT_AGE_HOURS))
        self.order_placed_rule = events.Rule(
            self,
            "OrderPlacedRule",
            description="Start the payment workflow for every order placed",
            event_pattern=events.EventPattern(source=[ORDER_EVENT_SOURCE], detail_type=[ORDER_PLACED_DETAIL_TYPE]),
            # EventBridge's own delivery retries (its defaults, written out), then the undelivered queue.
            targets=[targets.LambdaFunction(
                starter.function, dead_letter_queue=self.order_placed_undelivered,
                retry_attempts=ORDER_DELIVERY_RETRY_ATTEMPTS,
                max_event_age=Duration.hours(ORDER_DELIVERY_MAX_EVENT_AGE_HOURS))],
        )

        CfnOutput(self, "PaymentAuthorizationStateMachineArn",
                  value=self.payment_authorization.state_machine.state_machine_arn)
        CfnOutput(self, "OrdersTableName", value=self.orders_table.table_name)
        CfnOutput(self, "InventoryTableName", value=self.inventory_table.table_name)
        CfnOutput(self, "PaymentIdempotencyTableName", value=self.payment_idempotency_table.table_name)
        CfnOutput(self, "ParkedOrdersQueueUrl", value=self.parked_orders_queue.queue_url)
        CfnOutput(self, "ParkedOrdersDeadLetterQueueUrl", value=self.parked_orders_dlq.queue_url)
        CfnOutput(self, "ParkedOrderResumerName", value=self.parked_order_resumer.function_name)
        CfnOutput(self, "CustomerNotificationsTopicArn", value=self.customer_notifications.topic_arn)
        CfnOutput(self, "PaymentStarterName", value=starter.function.function_name)
        CfnOutput(self, "OrderStartFailedQueueUrl", value=self.order_start_failures.queue_url)
        CfnOutput(self, "OrderPlacedUndeliveredQueueUrl", value=self.order_placed_undelivered.queue_url)
        CfnOutput(self, "PaymentAuthorizerName", value=authorizer.function.function_name)

    def _add_parked_order_resumer(
        self, config: AppConfig, shared_limits: SharedLimitsStack, removal_policy: RemovalPolicy
    ) -> None:
        """Use case 2, parked orders: resumed every minute once the gateway's breaker lets calls through.

        No event-source mapping: it would receive while the breaker is open and spend the messages'
        receive counts until healthy orders reached the dead-letter queue. The function reads the
        breaker first and receives only what it may resume (`handlers.resume_parked_orders`).
        """
        gateway = config.downstream("payment_gateway")
        machine = self.payment_authorization.state_machine
        resumer = HandlerFunction(
            self,
            "ParkedOrderResumer",
            handler="handlers.resume_parked_orders.handler",
            service="parked-order-resumer",
            description="Resumes parked payments once the gateway's breaker lets calls through",
            log_retention_days=config.log_retention_days,
            removal_policy=removal_policy,
            timeout_sec=PARKED_ORDER_RESUMER_TIMEOUT_SEC,
            environment={
                "PARKED_ORDERS_QUEUE_URL": self.parked_orders_queue.queue_url,
                "PARKED_ORDERS_DLQ_URL": self.parked_orders_dlq.queue_url,
                "ORDERS_TABLE_NAME": self.orders_table.table_name,
                "BREAKER_TABLE_NAME": shared_limits.breakers.table.table_name,
                "BREAKER_NAME": gateway.name,
                "PAYMENT_STATE_MACHINE_ARN": machine.state_machine_arn,
                "RESUMES_PER_RUN": str(parked_order_resumes_per_run(gateway)),
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
        stack = Stack.of(self)
        executions = stack.format_arn(service="states", resource="execution",
                                      resource_name=f"{machine.state_machine_name}:*",
                                      arn_format=ArnFormat.COLON_RESOURCE_NAME)
        iam.Grant.add_to_principal(grantee=resumer.function, actions=["states:DescribeExecution"],
                                   resource_arns=[executions])
        machine_id = stack.get_logical_id(machine.node.default_child)
        region = "<AWS::Region>" if Token.is_unresolved(self.region) else self.region  # as cdk-nag prints it
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
            self,
            "ParkedOrderResumeSchedule",
            description="Resume parked payments once the gateway's breaker lets calls through",
            schedule=events.Schedule.rate(Duration.seconds(PARKED_ORDER_RESUME_PERIOD_SEC)),
            targets=[targets.LambdaFunction(resumer.function, retry_attempts=0, max_event_age=Duration.minutes(1))],
        )

    def _add_ugc_moderation(
        self, config: AppConfig, shared_limits: SharedLimitsStack, removal_policy: RemovalPolicy
    ) -> None:
        """Use case 3: moderate every uploaded object with several AI models, within the model API's limit."""
        model = config.downstream("ai_model")
        model_caller = self.downstream_callers[model.name]
        model_tunables = shared_limits.tunables.parameter(downstream_tunables_key(model))

        # No auto_delete_objects and no `event_bridge_enabled=True`: both add a Lambda-backed custom resource.
        self.uploads_bucket = s3.Bucket(
            self,
            "UploadsBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            versioned=True,
            removal_policy=removal_policy,
        )
        # EventBridge notifications through the bucket's own CloudFormation property. CDK's
        # `event_bridge_enabled=True` sets them with a Lambda-backed custom resource instead (an extra
        # function and role to deploy and secure, which the embedded emulator could not run either).
        cfn_bucket = self.uploads_bucket.node.default_child
        cfn_bucket.add_property_override("NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True)
        Validations.of(self.uploads_bucket).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-S1",
                reason="uploads are written by the application and each one is traced by its moderation execution"
                " (Step Functions logs and the results table); CloudTrail data events, not a log bucket, are the"
                " place to audit object access if a stage needs it",
            )
        )

        # {pk: object key, bucket, decision: approved|needs_review|rejected, reason, verdicts: JSON string,
        # execution_name}.
        self.moderation_results_table = encrypted_table(self, "ModerationResultsTable", removal_policy=removal_policy)
        # Encrypted with the AWS managed key, as the customer notifications are.
        self.moderation_results_topic = sns.Topic(
            self,
            "ModerationResultsTopic",
            master_key=kms.Alias.from_alias_name(self, "ModerationSnsManagedKey", "alias/aws/sns"),
            enforce_ssl=True,
        )

        # JSONPath cannot take the highest score over a model's categories: this decides, with the stage's thresholds.
        decider = HandlerFunction(
            self,
            "ModerationDecider",
            handler="handlers.decide_moderation.handler",
            service="moderation-decider",
            description="Decides an upload's moderation from the AI models' scores",
            log_retention_days=config.log_retention_days,
            removal_policy=removal_policy,
            timeout_sec=10,
            environment={
                "MODERATION_REVIEW_SCORE": str(config.moderation.review_score),
                "MODERATION_REJECT_SCORE": str(config.moderation.reject_score),
            },
        )
        self.moderation_decider = decider.function
        alarm_on_errors(decider.function, reason="every upload it could not decide went to human review instead"
                        " (the workflow's safe outcome), so reviewers are doing the models' work")

        self.ugc_moderation = AslStateMachine(
            self,
            "UgcModeration",
            definition_file="ugc_moderation.asl.json",
            definition_substitutions={
                "AiModelTunablesParameterName": model_tunables.parameter_name,
                "AiModelCallerFunctionArn": model_caller.function_arn,
                "ModerationDeciderFunctionArn": decider.function.function_arn,
                "ResultsTableName": self.moderation_results_table.table_name,
                "ModerationResultsTopicArn": self.moderation_results_topic.topic_arn,
            },
            log_retention_days=config.log_retention_days,
            removal_policy=removal_policy,
        )
        # Exactly what the file's Tasks do, each on its one resource.
        role = self.ugc_moderation.role
        shared_limits.tunables.grant_read(role, downstream_tunables_key(model))
        self.moderation_results_table.grant(role, "dynamodb:PutItem")
        self.moderation_results_topic.grant_publish(role)
        # The unqualified ARN only: grant_invoke would add `<arn>:*` (every version and alias) as well.
        iam.Grant.add_to_principal(grantee=role, actions=["lambda:InvokeFunction"],
                                   resource_arns=[model_caller.function_arn, decider.function.function_arn])

        # One execution per object created in the uploads bucket, started with the event itself.
        self.upload_created_rule = events.Rule(
            self,
            "UploadCreatedRule",
            description="Moderate every object created in the uploads bucket",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={"bucket": {"name": [self.uploads_bucket.bucket_name]}},
            ),
            targets=[targets.SfnStateMachine(self.ugc_moderation.state_machine)],
        )

        CfnOutput(self, "UgcModerationStateMachineArn", value=self.ugc_moderation.state_machine.state_machine_arn)
        CfnOutput(self, "UploadsBucketName", value=self.uploads_bucket.bucket_name)
        CfnOutput(self, "ModerationResultsTableName", value=self.moderation_results_table.table_name)
        CfnOutput(self, "ModerationResultsTopicArn", value=self.moderation_results_topic.topic_arn)
        CfnOutput(self, "ModerationDeciderName", value=decider.function.function_name)


def payment_authorizer_concurrency(gateway: DownstreamConfig) -> int:
    """Environments the payment authorizer may use: the gateway's calls in flight plus the callers waiting for a token.

    At 2 req/s and 0.4 s a call that is 1 call in flight, and up to 2 req/s x 2 s = 4 callers waiting
    in the function for their token. Beyond that Lambda throttles and the workflow retries for free,
    instead of a flood of orders holding the account's concurrency to wait for a 2 req/s gateway.
    """
    seconds_per_call = gateway.expected_latency_ms / 1000 + PAYMENT_LIMITER_MAX_WAIT_SEC
    return max(2, math.ceil(gateway.rate_limit_per_sec * seconds_per_call))


def parked_order_resumes_per_run(gateway: DownstreamConfig) -> int:
    """Orders one run of the resumer may resume: a quarter of the gateway's planned tokens per period, at least 1.

    Each resumption makes one authorization, so at 1.98 req/s x 60 s x 0.25 = 29 they take a quarter
    of the minute's tokens and new orders keep the rest; the shared limiter, not this number, keeps the
    gateway within its rate, and 29 executions started at once drain through it in about 15 s, well
    within the authorizer's retries (the emulator shows 30 orders at once paid with no 429).
    """
    return max(1, math.floor(gateway.planned_rate_per_sec * PARKED_ORDER_RESUME_PERIOD_SEC * PARKED_ORDER_RESUME_SHARE))


def _pascal(snake: str) -> str:
    return "".join(part.title() for part in snake.split("_"))

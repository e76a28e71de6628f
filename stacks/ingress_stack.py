"""Ingress: the API clients call, in front of the workflows and buffers, with no Lambda on the way in.

Routes (every one needs an API key; see `stacks/patterns/throttled_api.py` for the limits met):
- `POST /payments` starts the payment workflow (use case 2) through Step Functions' StartExecution,
  named after the order, so a repeated request starts nothing twice;
- `POST /legacy-records` queues a record for the mainframe (use case 4) through SQS SendMessage;
- `GET /payments/{id}` reads the order's state from the orders table through DynamoDB GetItem.

Direct service integrations instead of a Lambda in between: one hop less latency, no cold starts,
no function concurrency to share with the workers, and nothing to pay per request but the service
call itself. The mapping templates live in `stacks/mapping_templates/` with `${Placeholders}`, and
the request models below are the contract a body must meet before any integration runs (the
workflow's and the consumer's own parsers agree with them; a contract test checks both).
"""

from __future__ import annotations

import re
from pathlib import Path

from aws_cdk import Aws, CfnOutput, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.buffers_stack import BuffersStack
from stacks import stage_props
from stacks.config import AppConfig, IngressConfig, ThrottleConfig
from stacks.patterns.throttled_api import JSON, ApiLimits, Throttle, ThrottledApi, UsageTier
from stacks.use_cases import LegacyBuffer, Payments
from stacks.workflows_stack import WorkflowsStack

MAPPING_TEMPLATES_DIR = Path(__file__).resolve().parent / "mapping_templates"
# What a client is told to wait when an AWS service behind a route throttles or fails. Every route
# answers the same way: the service's 5xx and its throttling (which DynamoDB, SQS and Step Functions
# answer with 400) become 503 with Retry-After; its other 4xx become 500, or 400 where the content
# is the client's; 429 is left to the client's own limits at the door.
SERVICE_RETRY_AFTER_SEC = 1


def mapping_template(name: str, **placeholders: str | int) -> str:
    """`stacks/mapping_templates/<name>.vtl` with its `${Placeholders}` filled; every one must be given."""
    # Without the file's last newline: API Gateway would send it, and a form-encoded body's last value would keep it.
    text = (MAPPING_TEMPLATES_DIR / f"{name}.vtl").read_text().rstrip("\n")
    for key, value in placeholders.items():
        if f"${{{key}}}" not in text:
            raise ValueError(f"mapping template {name}.vtl has no placeholder ${{{key}}}; remove it from the call")
        text = text.replace(f"${{{key}}}", str(value))
    missing = sorted(set(re.findall(r"\$\{([A-Z]\w*)\}", text)))
    if missing:
        raise ValueError(f"mapping template {name}.vtl needs placeholders {missing}; pass them to mapping_template()")
    return text


# Money as a decimal string with exactly two decimals, "0.01" to "1000000.00" (as PayPal's API takes
# it, and as GET /payments/{id} answers it). Not a number with `multipleOf: 0.01`: a validator that
# divides in binary floating point refuses 19.99, 0.07 or 1.13, and JSON Schema leaves that
# arithmetic to the validator. A pattern has no arithmetic, so every validator agrees, and one
# spelling per amount keeps a repeated order the same bytes for Step Functions' idempotency.
# `payments.orders` parses with the same pattern; a property test checks both ways.
AMOUNT_PATTERN = "^(0\\.(0[1-9]|[1-9][0-9])|[1-9][0-9]{0,5}\\.[0-9]{2}|1000000\\.00)$"

# The same rules as `payments.orders.parse_order`, which the payment workflow's authorizer applies
# again; unknown keys are refused here, so the workflow's input is exactly the order.
PAYMENT_ORDER_SCHEMA = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    title="PaymentOrder",
    type=apigw.JsonSchemaType.OBJECT,
    required=["order_id", "customer_id", "amount", "currency", "items"],
    additional_properties=False,
    properties={
        "order_id": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, pattern="^[A-Za-z0-9_-]{1,74}$"),
        "customer_id": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1, max_length=128,
                                        pattern="\\S"),
        "amount": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, pattern=AMOUNT_PATTERN),
        "currency": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, pattern="^[A-Z]{3}$"),
        "items": apigw.JsonSchema(
            type=apigw.JsonSchemaType.ARRAY,
            min_items=1,
            max_items=100,
            items=apigw.JsonSchema(
                type=apigw.JsonSchemaType.OBJECT,
                required=["sku", "quantity"],
                additional_properties=False,
                properties={
                    "sku": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, pattern="^[A-Za-z0-9_.:-]{1,64}$"),
                    "quantity": apigw.JsonSchema(type=apigw.JsonSchemaType.INTEGER, minimum=1, maximum=10_000),
                },
            ),
        ),
    },
)

# The mainframe's record contract, as the legacy consumer checks it (`handlers.legacy_consumer`:
# RECORD_ID_PATTERN, MAX_PAYLOAD_DEPTH; a contract test keeps the two equal). The id is the
# mainframe's Idempotency-Key, so only characters any HTTP header carries (ECMA-262 `$`: the very end).
LEGACY_RECORD_ID_PATTERN = "^[A-Za-z0-9_.:-]{1,128}$"
LEGACY_PAYLOAD_MAX_DEPTH = 8


def nesting_at_most(levels: int) -> apigw.JsonSchema:
    """A draft-4 schema for any JSON value holding at most `levels` nested objects or arrays.

    Draft 4 has no depth keyword, and API Gateway documents references between models only as
    absolute model URLs (`https://apigateway.amazonaws.com/restapis/<id>/models/<name>`), so the levels
    are written out instead: each applies the next to every array item and object member. Both
    branches hold the next level, so the model doubles with each level (about 10 KB at 8): keep the
    bound small.
    """
    if levels == 0:
        return apigw.JsonSchema(type=[apigw.JsonSchemaType.STRING, apigw.JsonSchemaType.NUMBER,
                                      apigw.JsonSchemaType.BOOLEAN, apigw.JsonSchemaType.NULL])
    inner = nesting_at_most(levels - 1)
    return apigw.JsonSchema(items=inner, additional_properties=inner)


LEGACY_RECORD_SCHEMA = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    title="LegacyRecord",
    type=apigw.JsonSchemaType.OBJECT,
    required=["record_id", "payload"],
    additional_properties=False,
    properties={
        "record_id": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, pattern=LEGACY_RECORD_ID_PATTERN),
        # The payload object is level 1; its members may nest the remaining levels.
        "payload": apigw.JsonSchema(type=apigw.JsonSchemaType.OBJECT,
                                    additional_properties=nesting_at_most(LEGACY_PAYLOAD_MAX_DEPTH - 1)),
    },
)

# A method's answers, each with a JSON body (the gateway's own refusals are gateway responses).
def _responses(*status_codes: str) -> list[apigw.MethodResponse]:
    return [
        apigw.MethodResponse(
            status_code=code,
            response_models={JSON: apigw.Model.EMPTY_MODEL},
            response_parameters={"method.response.header.Retry-After": False} if code in ("429", "503") else None,
        )
        for code in status_codes
    ]


def _unavailable() -> apigw.IntegrationResponse:
    return apigw.IntegrationResponse(
        status_code="503",
        selection_pattern="5\\d{2}",
        response_parameters={"method.response.header.Retry-After": f"'{SERVICE_RETRY_AFTER_SEC}'"},
        response_templates={JSON: mapping_template("service_unavailable", RetryAfterSec=SERVICE_RETRY_AFTER_SEC)},
    )


class IngressStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        workflows: WorkflowsStack,
        buffers: BuffersStack,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        if config.ingress is None:
            raise ValueError(f"stage {config.stage} has no ingress config; add stages.{config.stage}.ingress")
        removal_policy = stage_props.removal_policy(config)
        self.api = ThrottledApi(
            self,
            "Api",
            limits=api_limits(config.ingress),
            api_name=f"{config.stack_prefix}-api",
            stage_name=config.stage,
            log_retention=stage_props.log_retention(config),
            removal_policy=removal_policy,
            api_key_name_prefix=config.stack_prefix.lower(),
        )
        # Route -> the use case whose resource it integrates with, directly (the architecture diagram's edges).
        self.route_targets: dict[str, str] = {}
        self._add_start_payment(workflows)
        self._add_get_payment(workflows)
        self._add_send_legacy_record(buffers)
        self.api.add_usage_plans(name_prefix=config.stack_prefix.lower())

        CfnOutput(self, "ApiUrl", value=self.api.rest_api.url)
        CfnOutput(self, "RestApiId", value=self.api.rest_api.rest_api_id)
        for client, key in self.api.api_keys.items():
            CfnOutput(self, f"ApiKeyId{''.join(p.capitalize() for p in client.split('-'))}", value=key.key_id,
                      description=f"API key id of client {client} (aws apigateway get-api-key --include-value)")

    def _integration_role(self, construct_id: str, purpose: str) -> iam.Role:
        return iam.Role(self, construct_id, assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
                        description=f"API Gateway: {purpose}; nothing else")

    def _add_start_payment(self, workflows: WorkflowsStack) -> None:
        state_machine = workflows.use_case(Payments).workflow.state_machine
        role = self._integration_role("StartPaymentRole", "starts the payment workflow")
        state_machine.grant_start_execution(role)
        integration = apigw.AwsIntegration(
            service="states",
            action="StartExecution",
            integration_http_method="POST",
            options=apigw.IntegrationOptions(
                credentials_role=role,
                passthrough_behavior=apigw.PassthroughBehavior.NEVER,
                request_templates={JSON: mapping_template(
                    "start_payment.request", PaymentStateMachineArn=state_machine.state_machine_arn,
                    TenantOfApiKey=self.api.tenant_of_api_key_vtl())},
                integration_responses=[
                    apigw.IntegrationResponse(status_code="202",
                                              response_templates={JSON: mapping_template("start_payment.accepted")}),
                    apigw.IntegrationResponse(
                        status_code="500",
                        selection_pattern="4\\d{2}",
                        response_templates={JSON: mapping_template(
                            "start_payment.refused", RetryAfterSec=SERVICE_RETRY_AFTER_SEC)},
                    ),
                    _unavailable(),
                ],
            ),
        )
        self.route_targets["POST /payments"] = Payments.__name__
        self.api.add_route(
            "POST /payments",
            integration,
            request_model=self.api.add_model("PaymentOrder", PAYMENT_ORDER_SCHEMA),
            method_responses=_responses("202", "200", "500", "503"),
            operation_name="StartPayment",
        )

    def _add_get_payment(self, workflows: WorkflowsStack) -> None:
        orders_table = workflows.use_case(Payments).orders_table
        role = self._integration_role("GetPaymentRole", "reads one order from the orders table")
        orders_table.grant(role, "dynamodb:GetItem")
        integration = apigw.AwsIntegration(
            service="dynamodb",
            action="GetItem",
            integration_http_method="POST",
            options=apigw.IntegrationOptions(
                credentials_role=role,
                passthrough_behavior=apigw.PassthroughBehavior.NEVER,
                request_templates={JSON: mapping_template(
                    "get_payment.request", OrdersTableName=orders_table.table_name)},
                integration_responses=[
                    apigw.IntegrationResponse(status_code="200",
                                              response_templates={JSON: mapping_template("get_payment.response")}),
                    apigw.IntegrationResponse(
                        status_code="500",
                        selection_pattern="4\\d{2}",
                        response_templates={JSON: mapping_template(
                            "get_payment.refused", RetryAfterSec=SERVICE_RETRY_AFTER_SEC)},
                    ),
                    _unavailable(),
                ],
            ),
        )
        self.route_targets["GET /payments/{id}"] = Payments.__name__
        self.api.add_route(
            "GET /payments/{id}",
            integration,
            request_parameters={"method.request.path.id": True},
            method_responses=_responses("200", "404", "500", "503"),
            operation_name="GetPayment",
        )

    def _add_send_legacy_record(self, buffers: BuffersStack) -> None:
        queue = buffers.use_case(LegacyBuffer).consumer.queue
        role = self._integration_role("SendLegacyRecordRole", "queues records for the legacy mainframe")
        queue.grant_send_messages(role)
        integration = apigw.AwsIntegration(
            service="sqs",
            path=f"{Aws.ACCOUNT_ID}/{queue.queue_name}",
            integration_http_method="POST",
            options=apigw.IntegrationOptions(
                credentials_role=role,
                passthrough_behavior=apigw.PassthroughBehavior.NEVER,
                request_parameters={
                    "integration.request.header.Content-Type": "'application/x-www-form-urlencoded'"},
                request_templates={JSON: mapping_template(
                    "send_legacy_record.request", TenantOfApiKey=self.api.tenant_of_api_key_vtl())},
                integration_responses=[
                    apigw.IntegrationResponse(
                        status_code="202", response_templates={JSON: mapping_template("send_legacy_record.accepted")}),
                    apigw.IntegrationResponse(
                        status_code="500",
                        selection_pattern="4\\d{2}",
                        response_templates={JSON: mapping_template(
                            "send_legacy_record.refused", RetryAfterSec=SERVICE_RETRY_AFTER_SEC)},
                    ),
                    _unavailable(),
                ],
            ),
        )
        self.route_targets["POST /legacy-records"] = LegacyBuffer.__name__
        self.api.add_route(
            "POST /legacy-records",
            integration,
            request_model=self.api.add_model("LegacyRecord", LEGACY_RECORD_SCHEMA),
            method_responses=_responses("202", "400", "500", "503"),
            operation_name="QueueLegacyRecord",
        )


def api_limits(ingress: IngressConfig) -> ApiLimits:
    """The stage's ingress config as the API's limits."""
    def throttle(config: ThrottleConfig) -> Throttle:
        return Throttle(rate_limit_per_sec=config.rate_limit_per_sec, burst=config.burst)

    return ApiLimits(
        stage_throttle=throttle(ingress.throttle),
        method_throttles={route: throttle(t) for route, t in ingress.method_throttles.items()},
        tiers=tuple(
            UsageTier(name=tier.name, throttle=throttle(tier.throttle), quota_limit=tier.quota.limit,
                      quota_period=tier.quota.period,
                      method_throttles={route: throttle(t) for route, t in tier.method_throttles.items()},
                      api_keys=tier.api_keys)
            for tier in ingress.tiers),
        quota_retry_after_sec=ingress.quota_retry_after_sec,
        waf_requests_per_5_min_per_ip=ingress.waf.requests_per_5_min_per_ip if ingress.waf.enabled else None,
    )

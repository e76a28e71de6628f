"""A REST API whose every limit comes from its props, and whose every refusal tells the client what to do.

What a request meets on its way in, in order (each refuses with its own status and body):
1. AWS WAF, when enabled: a rate-based rule per source IP (429, Retry-After: the rule's window).
2. The API key: missing or unknown on a route that needs one (403, `INVALID_API_KEY`).
3. The key's usage plan: the tier's quota for the period (429 `QUOTA_EXCEEDED`), then the tier's
   throttle and its per-method throttles (429 `THROTTLED`).
4. The stage's per-method throttle, then the stage throttle (429 `THROTTLED`), all inside the
   account's 10,000 req/s and 5,000 burst per region.
5. Request validation against the route's JSON schema model (400 `BAD_REQUEST_BODY` with the
   validator's message), so a malformed body never reaches an integration.

Every 429 carries `Retry-After`. API Gateway's gateway responses substitute variables but cannot
compute, so the value is static: for throttling, the time one token takes at the slowest bucket a
client can meet (a throttled client that waits that long finds a token); for a quota, the configured
`quota_retry_after_sec` (quotas reset at 00:00 UTC; the body says so).

The stage writes JSON access logs (with the API key id, so a tier's traffic can be told apart),
execution logs at ERROR, per-method metrics and X-Ray traces, each log group with a retention.

The tenant of a request is the client its API key was created for (`tenant_of_api_key_vtl`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import jsii
from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct, IValidation

from throttling.core import names

# The access log line: one JSON object per request, with what an operator needs to tell a client's
# 429 (its key, its tier's limit) from the stage's, and to join the line to the X-Ray trace. API
# Gateway substitutes each variable as it is, without escaping, so only values no client writes go
# in: a quote in a User-Agent (or a path, a header) would break the line's JSON, and the metric
# filter that counts 429s from `$.status` would skip it. The request id joins the line to the
# execution logs and the trace, which hold the rest.
CLIENT_WRITTEN_CONTEXT_VARIABLES = (
    "$context.identity.userAgent", "$context.identity.caller", "$context.identity.user", "$context.path",
    "$context.identity.userArn", "$context.authorizer", "$context.requestOverride",
)
ACCESS_LOG_FIELDS = {
    "request_id": "$context.requestId",
    "time": "$context.requestTimeEpoch",
    "stage": "$context.stage",
    "route": "$context.httpMethod $context.resourcePath",
    "status": "$context.status",
    "response_type": "$context.error.responseType",
    "error": "$context.error.message",
    "api_key_id": "$context.identity.apiKeyId",
    "source_ip": "$context.identity.sourceIp",
    "latency_ms": "$context.responseLatency",
    "integration_status": "$context.integration.status",
    "integration_latency_ms": "$context.integration.latency",
    "waf_status": "$context.waf.status",
    "xray_trace_id": "$context.xrayTraceId",
}
# Gateway responses are not VTL: `$context...` values are substituted as they are, with no escaping
# of ours possible. Only values no client writes go in: the response type and request id (API
# Gateway's own), `messageString` (API Gateway's message, JSON-quoted by it) and, in the 400 for a
# body, `validationErrorString`: the validator's message, which quotes the offending value. API
# Gateway escapes the double quotes in it; whether it escapes a control character there is not
# documented, so a value holding one could leave that client's own 400 body unparseable (its status
# says enough to act on). Nothing a client sends reaches any other client's answer.
_ERROR_FIELDS = '"type": "$context.error.responseType", "request_id": "$context.requestId"'
JSON = "application/json"
METRIC_PERIOD = Duration.minutes(1)
# AWS WAF's rate-based rule counts requests over this window.
WAF_WINDOW_SEC = 300


@dataclass(frozen=True)
class Throttle:
    """An API Gateway token bucket: a steady rate and the burst (the bucket's size) it allows."""

    rate_limit_per_sec: float
    burst: int


@dataclass(frozen=True)
class UsageTier:
    """A usage plan: a per-client throttle and quota, per-method throttles, and the API keys it holds.

    :param quota_period: `DAY`, `WEEK` or `MONTH` (API Gateway resets the quota at 00:00 UTC).
    :param method_throttles: route ("POST /payments") -> its throttle for this tier's clients; default none.
    :param api_keys: the clients given a key in this tier; default none.
    """

    name: str
    throttle: Throttle
    quota_limit: int
    quota_period: str
    method_throttles: Mapping[str, Throttle] = field(default_factory=dict)
    api_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApiLimits:
    """Every limit of the API, as a request meets them (see the module's docstring).

    :param stage_throttle: the stage's token bucket, over every client.
    :param method_throttles: route -> the stage's throttle for that method; default none.
    :param tiers: the usage plans; default none (then no client can use the API, and synth says so).
    :param quota_retry_after_sec: the Retry-After of a request over its quota; default 3600 s.
    :param waf_requests_per_5_min_per_ip: a WAF rate-based rule per source IP; default None (no web ACL).
    """

    stage_throttle: Throttle
    method_throttles: Mapping[str, Throttle] = field(default_factory=dict)
    tiers: tuple[UsageTier, ...] = ()
    quota_retry_after_sec: int = 3600
    waf_requests_per_5_min_per_ip: int | None = None

    @property
    def throttle_retry_after_sec(self) -> int:
        """The Retry-After of a throttled request: one token of the slowest bucket a client can meet."""
        rates = [self.stage_throttle.rate_limit_per_sec, *(t.rate_limit_per_sec for t in self.method_throttles.values())]
        for tier in self.tiers:
            rates += [tier.throttle.rate_limit_per_sec, *(t.rate_limit_per_sec for t in tier.method_throttles.values())]
        return max(1, math.ceil(1 / min(rates)))

    def routes(self) -> set[str]:
        """Every route some throttle names, so the API can refuse a throttle for a route it does not have."""
        names = set(self.method_throttles)
        for tier in self.tiers:
            names |= set(tier.method_throttles)
        return names


class ThrottledApi(Construct):
    """A regional REST API with stage, method and per-tier limits, validation, and explicit refusals.

    Routes are added with `add_route("POST /payments", integration, request_model=...)`; the
    usage plans (one per tier, with its API keys and per-method throttles) are added once the
    routes exist, by `add_usage_plans()`. Synth fails if a throttle of `limits` names a route the
    API does not have, or if the usage plans were never added.

    :param limits: the stage's, the methods' and the tiers' limits, and the optional WAF rule.
    :param api_name: the REST API's name.
    :param stage_name: the one stage's name.
    :param log_retention: of the access and execution log groups; default two years (CDK's default for a log group).
    :param removal_policy: of the log groups; default RETAIN.
    :param api_key_name_prefix: each client's key is named `<prefix>-<client>`; default `api_name`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        limits: ApiLimits,
        api_name: str,
        stage_name: str,
        log_retention: logs.RetentionDays = logs.RetentionDays.TWO_YEARS,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        api_key_name_prefix: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.limits = limits
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=log_retention, removal_policy=removal_policy)
        self.rest_api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=api_name,
            description="Throttled ingress: every limit from config, 429 with Retry-After, 400 before any integration",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            api_key_source_type=apigw.ApiKeySourceType.HEADER,
            # The account-level role that lets API Gateway write logs in this region; kept on delete,
            # since every API of the account and region shares it.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=stage_name,
                throttling_rate_limit=limits.stage_throttle.rate_limit_per_sec,
                throttling_burst_limit=limits.stage_throttle.burst,
                method_options={
                    # A method's settings replace the stage's for that method, so metrics and logging are repeated.
                    stage_method_path(route): apigw.MethodDeploymentOptions(
                        throttling_rate_limit=throttle.rate_limit_per_sec, throttling_burst_limit=throttle.burst,
                        metrics_enabled=True, logging_level=apigw.MethodLoggingLevel.ERROR, data_trace_enabled=False,
                    )
                    for route, throttle in limits.method_throttles.items()
                },
                metrics_enabled=True,
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                # Request and response bodies in logs would put payment details there.
                data_trace_enabled=False,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
            ),
        )
        # API Gateway creates its execution log group on first use, without a retention; created here
        # first, under the name it will use, it gets one.
        Validations.of(self.rest_api).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                reason="API Gateway's account-level logging role takes AWS's own policy for it, which only"
                " writes to CloudWatch Logs; the role is shared by every API of the account and region",
            )
        )
        self.execution_logs = logs.LogGroup(
            self,
            "ExecutionLogs",
            log_group_name=f"API-Gateway-Execution-Logs_{self.rest_api.rest_api_id}/{stage_name}",
            retention=log_retention,
            removal_policy=removal_policy,
        )
        self.api_name = api_name
        self.stage_name = stage_name
        # API Gateway counts 4xx together; the 429s the door answers (throttle, quota, WAF) are counted
        # from the access log, per stage.
        self.access_logs.add_metric_filter(
            "Refused429",
            filter_pattern=logs.FilterPattern.string_value("$.status", "=", "429"),
            metric_namespace=names.METRICS_NAMESPACE,
            metric_name=names.INGRESS_REFUSED_429,
            metric_value="1",
            dimensions={"Stage": "$.stage"},
        )
        self.request_validator = self.rest_api.add_request_validator(
            "Validator", request_validator_name="body-and-parameters",
            validate_request_body=True, validate_request_parameters=True,
        )
        self._add_gateway_responses()
        self.methods: dict[str, apigw.Method] = {}
        self.usage_plans: dict[str, apigw.UsagePlan] = {}
        self.api_keys: dict[str, apigw.IApiKey] = self._add_api_keys(
            name_prefix=api_key_name_prefix or api_name)
        self.web_acl: wafv2.CfnWebACL | None = self._add_web_acl() if limits.waf_requests_per_5_min_per_ip else None
        if self.web_acl is None:
            Validations.of(self.rest_api.deployment_stage).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-APIG3",
                    reason="WAF is off for this stage (no waf_requests_per_5_min_per_ip); the stage, method and"
                    " usage-plan throttles still bound every client. Turn it on where the API faces the internet",
                )
            )
        self.node.add_validation(_RoutesAndPlansComplete(self))

    def add_route(
        self,
        route: str,
        integration: apigw.Integration,
        *,
        method_responses: list[apigw.MethodResponse],
        request_model: apigw.IModel | None = None,
        request_parameters: dict[str, bool] | None = None,
        operation_name: str | None = None,
    ) -> apigw.Method:
        """Add `route` ("POST /payments"), API key required, validated before the integration runs."""
        verb, path = route.split(" ", 1)
        resource = self.rest_api.root.resource_for_path(path)
        method = resource.add_method(
            verb,
            integration,
            api_key_required=True,
            request_validator=self.request_validator,
            request_models={JSON: request_model} if request_model else None,
            request_parameters=request_parameters,
            method_responses=method_responses,
            operation_name=operation_name,
        )
        Validations.of(method).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-APIG4",
                reason="API keys here pick the client's usage plan (its throttle and quota); they are not"
                " authentication. Put the identity provider's authorizer (Cognito, IAM or a Lambda"
                " authorizer) on the method where the API is deployed; the limits do not depend on it",
            ),
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-COG4",
                reason="As APIG4: the authorizer is the deployment's choice of identity provider, not the throttling's",
            ),
        )
        self.methods[route] = method
        return method

    # -- metrics (per stage; the stage's detailed metrics also have them per method) ----------------
    # Built from the names, not from the stage resource, so a stack watching them takes no reference on it.
    def _stage_metric(self, metric_name: str, statistic: str, label: str, **route: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/ApiGateway", metric_name=metric_name, period=METRIC_PERIOD, statistic=statistic,
            dimensions_map={"ApiName": self.api_name, "Stage": self.stage_name, **route}, label=label)

    def metric_requests(self) -> cloudwatch.Metric:
        return self._stage_metric("Count", "Sum", "requests")

    def metric_client_errors(self) -> cloudwatch.Metric:
        return self._stage_metric("4XXError", "Sum", "4xx")

    def metric_server_errors(self) -> cloudwatch.Metric:
        return self._stage_metric("5XXError", "Sum", "5xx")

    def metric_latency(self, statistic: str) -> cloudwatch.Metric:
        return self._stage_metric("Latency", statistic, f"latency {statistic} (ms)")

    def metric_route(self, route: str, metric_name: str, statistic: str = "Sum") -> cloudwatch.Metric:
        """A stage's detailed (per-method) metric for `route` ("POST /payments")."""
        verb, path = route.split(" ", 1)
        return self._stage_metric(metric_name, statistic, f"{route} {metric_name}", Method=verb, Resource=path)

    def metric_refused(self) -> cloudwatch.Metric:
        """Requests answered 429 at the door (throttle, quota, WAF), from the access log."""
        return cloudwatch.Metric(namespace=names.METRICS_NAMESPACE, metric_name=names.INGRESS_REFUSED_429,
                                 dimensions_map={"Stage": self.stage_name}, period=METRIC_PERIOD, statistic="Sum",
                                 label="429s")

    def metric_refused_rate_percent(self) -> cloudwatch.MathExpression:
        return cloudwatch.MathExpression(
            expression="IF(requests >= 10, 100 * FILL(refused, 0) / requests, 0)",
            using_metrics={"requests": self.metric_requests(), "refused": self.metric_refused()},
            period=METRIC_PERIOD, label="429s (% of requests)")

    def metric_server_error_rate_percent(self) -> cloudwatch.MathExpression:
        return cloudwatch.MathExpression(
            expression="IF(requests >= 10, 100 * FILL(errors, 0) / requests, 0)",
            using_metrics={"requests": self.metric_requests(), "errors": self.metric_server_errors()},
            period=METRIC_PERIOD, label="5xx (% of requests)")

    def add_model(self, model_name: str, schema: apigw.JsonSchema) -> apigw.Model:
        return self.rest_api.add_model(f"{model_name}Model", model_name=model_name, content_type=JSON, schema=schema)

    def add_usage_plans(self, *, name_prefix: str) -> None:
        """One usage plan per tier, with its quota, its throttles and one API key per named client."""
        for tier in self.limits.tiers:
            plan = self.rest_api.add_usage_plan(
                f"{_pascal(tier.name)}Plan",
                name=f"{name_prefix}-{tier.name}",
                description=f"Tier {tier.name}: {tier.throttle.rate_limit_per_sec:g} req/s, burst"
                f" {tier.throttle.burst}, {tier.quota_limit} requests per {tier.quota_period.lower()}",
                throttle=_throttle_settings(tier.throttle),
                quota=apigw.QuotaSettings(limit=tier.quota_limit, period=apigw.Period[tier.quota_period]),
                api_stages=[
                    apigw.UsagePlanPerApiStage(
                        api=self.rest_api,
                        stage=self.rest_api.deployment_stage,
                        throttle=[
                            apigw.ThrottlingPerMethod(method=self.methods[route], throttle=_throttle_settings(t))
                            for route, t in tier.method_throttles.items()
                            if route in self.methods
                        ],
                    )
                ],
            )
            for client in tier.api_keys:
                plan.add_api_key(self.api_keys[client])
            self.usage_plans[tier.name] = plan

    def _add_api_keys(self, *, name_prefix: str) -> dict[str, apigw.IApiKey]:
        """One key per named client, created before the routes, whose mapping templates name their ids.

        Not `RestApi.add_api_key`: it ties the key to the deployment stage (`StageKeys`, the way keys
        were used before usage plans), and the stage depends on every method, so a method naming a key
        would close a cycle. The usage plan is what admits a key to the stage.
        """
        keys: dict[str, apigw.IApiKey] = {}
        for tier in self.limits.tiers:
            for client in tier.api_keys:
                if client == names.DEFAULT_TENANT:
                    raise ValueError(f"an API client may not be named {client!r}: that is the tenant of requests"
                                     " whose key the stack did not create; rename the client")
                keys[client] = apigw.ApiKey(
                    self.rest_api, f"{_pascal(client)}Key", api_key_name=f"{name_prefix}-{client}",
                    description=f"Client {client}, tier {tier.name}", enabled=True,
                )
        return keys

    def tenant_of_api_key_vtl(self, variable: str = "tenant") -> str:
        """VTL that sets `$<variable>` to the tenant of the request: the client its API key was created for.

        Why the key, and why resolved here: the key is what API Gateway has already checked against a
        usage plan before any template runs, so the tenant costs no authorizer and no lookup; a tenant a
        client wrote in a header or the body would be whatever the client claims, and the keys are not
        authentication (see APIG4 in `add_route`). API Gateway gives templates the key's id
        (`$context.identity.apiKeyId`), not its name, and the ids exist only once the keys are created,
        so the template compares the id with each key this API created (CloudFormation fills the ids
        in); a key created outside the stack (an operator's, in the console) gets the default tenant's
        share, never an unlimited one and never an error.
        """
        return tenant_of_api_key_vtl({client: key.key_id for client, key in self.api_keys.items()}, variable)

    def _add_gateway_responses(self) -> None:
        limits = self.limits
        refusals = [
            ("Throttled", apigw.ResponseType.THROTTLED, "429", limits.throttle_retry_after_sec,
             "Too many requests: retry after Retry-After seconds, spreading retries with jitter"),
            ("QuotaExceeded", apigw.ResponseType.QUOTA_EXCEEDED, "429", limits.quota_retry_after_sec,
             "This API key's quota for the period is used up; it resets at 00:00 UTC (a day, a week's"
             " Monday or a month's first day); ask for a higher tier to raise it"),
        ]
        for construct_id, response_type, status, retry_after_sec, message in refusals:
            self.rest_api.add_gateway_response(
                construct_id,
                type=response_type,
                status_code=status,
                response_headers={"Retry-After": f"'{retry_after_sec}'", "Content-Type": f"'{JSON}'"},
                templates={JSON: f'{{"message": "{message}", "retry_after_sec": {retry_after_sec}, {_ERROR_FIELDS}}}'},
            )
        self.rest_api.add_gateway_response(
            "BadRequestBody",
            type=apigw.ResponseType.BAD_REQUEST_BODY,
            status_code="400",
            response_headers={"Content-Type": f"'{JSON}'"},
            templates={JSON: '{"message": "The request body does not match the route\'s model; nothing was'
                       ' started", "validation_errors": "$context.error.validationErrorString", '
                       + _ERROR_FIELDS + "}"},
        )
        for construct_id, response_type in (
            ("BadRequestParameters", apigw.ResponseType.BAD_REQUEST_PARAMETERS),
            ("Default4xx", apigw.ResponseType.DEFAULT_4_XX),
            ("Default5xx", apigw.ResponseType.DEFAULT_5_XX),
        ):
            self.rest_api.add_gateway_response(
                construct_id,
                type=response_type,
                response_headers={"Content-Type": f"'{JSON}'"},
                templates={JSON: f'{{"message": $context.error.messageString, {_ERROR_FIELDS}}}'},
            )

    def _add_web_acl(self) -> wafv2.CfnWebACL:
        requests_per_window = self.limits.waf_requests_per_5_min_per_ip
        window_sec = WAF_WINDOW_SEC
        metric_prefix = re.sub(r"[^A-Za-z0-9]", "", Stack.of(self).stack_name)
        web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility(f"{metric_prefix}WebAcl"),
            custom_response_bodies={
                "rate-limited": wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON",
                    content=json.dumps({"message": f"Too many requests from this address: more than"
                                        f" {requests_per_window} in 5 minutes; retry after"
                                        " Retry-After seconds", "retry_after_sec": window_sec}),
                )
            },
            rules=[
                wafv2.CfnWebACL.RuleProperty(
                    name="rate-per-source-ip",
                    priority=0,
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            aggregate_key_type="IP", limit=requests_per_window,
                            evaluation_window_sec=window_sec,
                        )
                    ),
                    action=wafv2.CfnWebACL.RuleActionProperty(
                        block=wafv2.CfnWebACL.BlockActionProperty(
                            custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                                response_code=429,
                                custom_response_body_key="rate-limited",
                                response_headers=[
                                    wafv2.CfnWebACL.CustomHTTPHeaderProperty(name="Retry-After", value=str(window_sec))
                                ],
                            )
                        )
                    ),
                    visibility_config=_visibility(f"{metric_prefix}RatePerSourceIp"),
                )
            ],
        )
        wafv2.CfnWebACLAssociation(
            self, "WebAclAssociation", resource_arn=self.rest_api.deployment_stage.stage_arn,
            web_acl_arn=web_acl.attr_arn,
        )
        return web_acl


def tenant_of_api_key_vtl(key_ids: Mapping[str, str], variable: str = "tenant") -> str:
    """VTL setting `$<variable>` to the client (key of `key_ids`) whose key id `$context.identity.apiKeyId` is,
    or to the default tenant for any other key."""
    # Each line ends in a comment, which takes its newline with it: a form-encoded body must not start
    # with the blank lines the directives would leave.
    lines = [f'#set(${variable} = "{names.DEFAULT_TENANT}")##']
    lines += [f'#if($context.identity.apiKeyId == "{key_id}")#set(${variable} = "{client}")#end##'
              for client, key_id in key_ids.items()]
    return "\n".join(lines)


def stage_method_path(route: str) -> str:
    """'GET /payments/{id}' as a stage's method settings name it: '/payments/{id}/GET'."""
    verb, path = route.split(" ", 1)
    return f"{path.rstrip('/')}/{verb}"


def _throttle_settings(throttle: Throttle) -> apigw.ThrottleSettings:
    return apigw.ThrottleSettings(rate_limit=throttle.rate_limit_per_sec, burst_limit=throttle.burst)


def _visibility(metric_name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric_name, sampled_requests_enabled=True
    )


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", name))


@jsii.implements(IValidation)
class _RoutesAndPlansComplete:
    """Refuses a synth whose throttles name routes the API lacks, or whose usage plans were never added."""

    def __init__(self, api: ThrottledApi) -> None:
        self._api = api

    def validate(self) -> list[str]:
        errors = [
            f"the API's limits throttle {route!r}, but the API has no such route; routes: {sorted(self._api.methods)}"
            for route in sorted(self._api.limits.routes() - set(self._api.methods))
        ]
        if not self._api.usage_plans:
            errors.append("ThrottledApi.add_usage_plans() was never called: no client tier could use the API")
        return errors

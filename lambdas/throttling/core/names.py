"""Every name the CDK app and the Lambdas both use, defined once: what one side writes, the other reads.

The stacks set environment variables, seed SSM documents, build alarms and dashboards on metrics and
route alarms by kind; the Lambdas read those variables and documents, emit those metrics and act on
those kinds; the CLI, the emulator's demo and the lab speak the same vocabulary. A name spelt twice
drifts (an alarm on a metric nobody emits stays green forever), so each is a constant here, stdlib
only, importable from `cdk synth` and from inside a Lambda alike.
"""

from __future__ import annotations

from typing import Final

# -- Stages -----------------------------------------------------------------------------------------

# A stage is whatever `cdk.json`'s `stages.<name>` holds; its name goes into stack names
# (`Throttling-<stage>-SharedLimits`), SSM paths and the API's stage. No hyphen: `throttlectl` finds a
# stage's stacks by the prefix `Throttling-<stage>-`, which for a stage "eu" would also match "eu-prod".
STAGE_NAME_PATTERN: Final = r"[a-z][a-z0-9]{0,19}"
# What `cdk synth` builds without `-c stage=...`.
DEFAULT_STAGE: Final = "dev"

# -- Metrics ----------------------------------------------------------------------------------------

# The CloudWatch namespace of every metric our functions emit (Powertools EMF) and of the API's
# refused-request metric filter.
METRICS_NAMESPACE: Final = "Throttling"
# The dimensions the callers add: which downstream, and (Powertools' own) which service called it.
DOWNSTREAM_DIMENSION: Final = "Downstream"
SERVICE_DIMENSION: Final = "service"

# One downstream call's outcome (`throttling.runtime.call_metrics.record_call` says when each counts).
DOWNSTREAM_CALLS: Final = "DownstreamCalls"
DOWNSTREAM_SUCCEEDED: Final = "DownstreamSucceeded"
DOWNSTREAM_THROTTLED: Final = "DownstreamThrottled"
DOWNSTREAM_UNAVAILABLE: Final = "DownstreamUnavailable"
DOWNSTREAM_REJECTED: Final = "DownstreamRejected"
DOWNSTREAM_TIMEOUTS: Final = "DownstreamTimeouts"
DOWNSTREAM_DOWN: Final = "DownstreamDown"
DOWNSTREAM_LATENCY: Final = "DownstreamLatency"
# The shared limiter, as its callers see it.
LIMITER_ADMITTED: Final = "LimiterAdmitted"
RATE_LIMITED: Final = "RateLimited"
# A caller told the limiter's inner loop of a 429 (or a 503 with Retry-After) its call met.
LIMITER_SIGNALS_REPORTED: Final = "LimiterSignalsReported"
# The controller's own (dimension `service` = the controller's service name).
CONTROLLER_MAX_CONCURRENCY: Final = "ControllerMaxConcurrency"
CONTROLLER_RATE_PER_SEC: Final = "ControllerRatePerSec"
CONTROLLER_INCREASES: Final = "ControllerIncreases"
CONTROLLER_DECREASES: Final = "ControllerDecreases"
BREAKER_OPEN: Final = "BreakerOpen"
# Requests the API answered 429 (throttle, quota, WAF), counted from its access log.
INGRESS_REFUSED_429: Final = "IngressRefused429"

# -- Alarm kinds ------------------------------------------------------------------------------------

# What an alarm routed to a downstream tells the controller: slow down for 429s, for errors, for
# latency, or (a sustained error rate) open the downstream's breaker and slow down as for errors.
ALARM_THROTTLED: Final = "throttled"
ALARM_ERRORS: Final = "errors"
ALARM_LATENCY: Final = "latency"
ALARM_BREAKER: Final = "breaker"
# The kinds the pure controller acts on, and every kind an alarm route may carry.
ALARM_KINDS: Final = (ALARM_THROTTLED, ALARM_ERRORS, ALARM_LATENCY)
ALARM_ROUTE_KINDS: Final = (*ALARM_KINDS, ALARM_BREAKER)

# -- Tunables documents (SSM) -----------------------------------------------------------------------



def tunables_prefix(stage: str) -> str:
    """Where a stage's operator-tunable parameters live in Parameter Store."""
    return f"/throttling/{stage}"


def downstream_tunables_key(downstream: str) -> str:
    """A downstream's document under its stage's prefix: rate, burst, concurrency, mode."""
    return f"downstreams/{downstream}"


def breaker_tunables_key(downstream: str) -> str:
    """A downstream's circuit breaker's document under its stage's prefix."""
    return f"breakers/{downstream}"


def downstream_tunables_parameter(stage: str, downstream: str) -> str:
    """The full name of a downstream's document, e.g. `/throttling/dev/downstreams/crm`."""
    return f"{tunables_prefix(stage)}/{downstream_tunables_key(downstream)}"


# A downstream's document's fields: what the stack seeds, operators and the controller write, and the
# callers parse.
TUNABLE_RATE_PER_SEC: Final = "rate_per_sec"
TUNABLE_BURST: Final = "burst"
TUNABLE_MAX_CONCURRENCY: Final = "max_concurrency"
TUNABLE_MODE: Final = "mode"
# The limiter's inner loop (`throttling.core.adaptive_rate`), optional: a document without them has the defaults.
TUNABLE_DECREASE_FACTOR: Final = "decrease_factor"
TUNABLE_INCREASE_FRACTION_PER_SEC: Final = "increase_fraction_per_sec"
TUNABLE_FLOOR_FRACTION: Final = "floor_fraction"
# Where a downstream's limit is unknown: the share of the ceiling an unused bucket starts at before the
# inner loop discovers the rate (absent: 1, the bucket starts at the rate in force).
TUNABLE_SEED_FRACTION: Final = "seed_fraction"
# Tenants' weighted soft shares and the priority classes' reserves (`throttling.core.hierarchical_rate`),
# optional. Documents are flat (the parameters' AllowedPattern), so a tenant's share is the field
# `share_<tenant id>` (a tenant named there has a lowercase snake_case id of at most 34 characters;
# any other tenant has the default share), and a class's reserve `reserve_<class>`.
TUNABLE_TENANT_SHARE_PREFIX: Final = "share_"
TUNABLE_DEFAULT_TENANT_SHARE: Final = "default_tenant_share"
TUNABLE_BORROW_DEPTH: Final = "borrow_depth"
TUNABLE_RESERVE_STANDARD: Final = "reserve_standard"
TUNABLE_RESERVE_BATCH: Final = "reserve_batch"
# "manual" pins the values: the controller reads them and never writes over them.
TUNABLES_MODE_AUTO: Final = "auto"
TUNABLES_MODE_MANUAL: Final = "manual"
TUNABLES_MODES: Final = (TUNABLES_MODE_AUTO, TUNABLES_MODE_MANUAL)

# -- Priority classes -------------------------------------------------------------------------------

# A request's class, highest first: what callers pass and the tunables' reserves name.
PRIORITY_CRITICAL: Final = "critical"
PRIORITY_STANDARD: Final = "standard"
PRIORITY_BATCH: Final = "batch"
PRIORITY_CLASSES: Final = (PRIORITY_CRITICAL, PRIORITY_STANDARD, PRIORITY_BATCH)

# -- Environment variables the stacks set and the Lambdas read --------------------------------------

# Every caller of a downstream: which one, where, its contract, and where its tunables live.
ENV_DOWNSTREAM_NAME: Final = "DOWNSTREAM_NAME"
ENV_DOWNSTREAM_BASE_URL: Final = "DOWNSTREAM_BASE_URL"
ENV_DOWNSTREAM_TIMEOUT_SEC: Final = "DOWNSTREAM_TIMEOUT_SEC"
ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC: Final = "DOWNSTREAM_RATE_LIMIT_PER_SEC"
ENV_DOWNSTREAM_BURST: Final = "DOWNSTREAM_BURST"
ENV_TUNABLES_PARAMETER_NAME: Final = "TUNABLES_PARAMETER_NAME"
ENV_TUNABLES_DEFAULTS: Final = "TUNABLES_DEFAULTS"
ENV_TUNABLES_CACHE_SEC: Final = "TUNABLES_CACHE_SEC"
ENV_LIMITER_MAX_WAIT_SEC: Final = "LIMITER_MAX_WAIT_SEC"
# A downstream that wants credentials: how it takes them (a JSON `DownstreamAuth` document) and the secret that
# holds them (its ARN, or the name of an existing secret); absent for a downstream without auth.
ENV_DOWNSTREAM_AUTH: Final = "DOWNSTREAM_AUTH"
ENV_DOWNSTREAM_SECRET_ID: Final = "DOWNSTREAM_SECRET_ID"
# The shared limits' tables.
ENV_RATE_LIMITER_TABLE_NAME: Final = "RATE_LIMITER_TABLE_NAME"
ENV_SEMAPHORE_TABLE_NAME: Final = "SEMAPHORE_TABLE_NAME"
ENV_BREAKER_TABLE_NAME: Final = "BREAKER_TABLE_NAME"
# A circuit breaker's name and its policy document.
ENV_BREAKER_NAME: Final = "BREAKER_NAME"
ENV_BREAKER_TUNABLES_PARAMETER_NAME: Final = "BREAKER_TUNABLES_PARAMETER_NAME"
ENV_BREAKER_TUNABLES_DEFAULTS: Final = "BREAKER_TUNABLES_DEFAULTS"
# A queue consumer (`ThrottledQueueConsumer` sets the first three).
ENV_QUEUE_URL: Final = "QUEUE_URL"
ENV_QUEUE_MAX_RECEIVE_COUNT: Final = "QUEUE_MAX_RECEIVE_COUNT"
ENV_DEAD_LETTER_QUEUE_URL: Final = "DEAD_LETTER_QUEUE_URL"
ENV_RECORDS_TABLE_NAME: Final = "RECORDS_TABLE_NAME"
# Payments: the authorizer's idempotency, the order intake and the parked orders.
ENV_IDEMPOTENCY_TABLE_NAME: Final = "IDEMPOTENCY_TABLE_NAME"
ENV_IDEMPOTENCY_EXPIRY_SEC: Final = "IDEMPOTENCY_EXPIRY_SEC"
ENV_GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC: Final = "GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC"
ENV_PAYMENT_STATE_MACHINE_ARN: Final = "PAYMENT_STATE_MACHINE_ARN"
ENV_ORDERS_TABLE_NAME: Final = "ORDERS_TABLE_NAME"
ENV_PARKED_ORDERS_QUEUE_URL: Final = "PARKED_ORDERS_QUEUE_URL"
ENV_PARKED_ORDERS_DLQ_URL: Final = "PARKED_ORDERS_DLQ_URL"
ENV_RESUMES_PER_RUN: Final = "RESUMES_PER_RUN"
# Moderation's thresholds.
ENV_MODERATION_REVIEW_SCORE: Final = "MODERATION_REVIEW_SCORE"
ENV_MODERATION_REJECT_SCORE: Final = "MODERATION_REJECT_SCORE"
# The controller.
ENV_CONTROLLER_PLANS_PATH: Final = "CONTROLLER_PLANS_PATH"
ENV_CONTROLLER_PLANS_CACHE_SEC: Final = "CONTROLLER_PLANS_CACHE_SEC"
ENV_CONTROLLER_POLICY: Final = "CONTROLLER_POLICY"
ENV_CONTROLLER_STATE_TABLE_NAME: Final = "CONTROLLER_STATE_TABLE_NAME"
ENV_PERIOD_SEC: Final = "PERIOD_SEC"
ENV_METRICS_DELAY_SEC: Final = "METRICS_DELAY_SEC"
# Powertools reads these itself; the stacks set them on every function (the control-loop stack
# finds a downstream's callers by them).
ENV_POWERTOOLS_SERVICE_NAME: Final = "POWERTOOLS_SERVICE_NAME"
ENV_POWERTOOLS_METRICS_NAMESPACE: Final = "POWERTOOLS_METRICS_NAMESPACE"



def in_flight_semaphore_name(downstream: str) -> str:
    """The semaphores table's item that holds a downstream's calls in flight (its `max_in_flight` leases)."""
    return f"in-flight/{downstream}"


# -- AWS constants ----------------------------------------------------------------------------------

# Lambda's bounds for an SQS event-source mapping's `ScalingConfig.MaximumConcurrency`.
SQS_MIN_MAXIMUM_CONCURRENCY: Final = 2
SQS_MAX_MAXIMUM_CONCURRENCY: Final = 1_000

# -- Downstream credentials (Secrets Manager) ----------------------------------------------------------

# The kinds of `downstreams.<name>.auth` and the keys of each kind's secret (a JSON object).
AUTH_API_KEY: Final = "api_key"
AUTH_OAUTH2_CLIENT_CREDENTIALS: Final = "oauth2_client_credentials"
AUTH_KINDS: Final = (AUTH_API_KEY, AUTH_OAUTH2_CLIENT_CREDENTIALS)
SECRET_API_KEY: Final = "api_key"
SECRET_CLIENT_ID: Final = "client_id"
SECRET_CLIENT_SECRET: Final = "client_secret"
# How the auth document in ENV_DOWNSTREAM_AUTH names its fields.
AUTH_FIELD_KIND: Final = "kind"
AUTH_FIELD_HEADER: Final = "header"
AUTH_FIELD_TOKEN_PATH: Final = "token_path"
AUTH_FIELD_SCOPE: Final = "scope"
AUTH_FIELD_SECRET_CACHE_SEC: Final = "secret_cache_sec"
# Counted by a caller each time a 401 made it read its credentials again.
CREDENTIALS_RENEWED: Final = "CredentialsRenewed"

# -- Tenants ----------------------------------------------------------------------------------------

# The tenant of a request whose API key the stack did not name (a key added to a usage plan outside
# the app) and of a message that carries none: one shared default share, never unlimited, never an error.
DEFAULT_TENANT: Final = "default"
# The log line a caller writes for each take the limiter refused, with the invocation's tenant and
# priority beside it: what the per-tenant Contributor Insights rule matches.
LIMITER_REFUSED_LOG_MESSAGE: Final = "the shared limiter refused a token"
# The log line a caller writes for each call the downstream answered (`handlers/call_downstream.py`): what the
# per-tenant "calls answered" rule matches. A contract test runs the handler and applies both rules to its lines.
CALL_ANSWERED_LOG_MESSAGE: Final = "downstream answered"
# The JSON log keys the per-tenant rules read: Powertools' message key, and the keys a caller appends.
LOG_KEY_MESSAGE: Final = "message"
LOG_KEY_TENANT: Final = "tenant"
LOG_KEY_PRIORITY: Final = "priority"
# A tenant's TAT in a limiter shard's item is the attribute `<prefix><tenant key>` (written by
# `adapters/dynamodb_rate_limiter.py`, read by `throttlectl status`; a contract test keeps the two equal).
LIMITER_TENANT_TAT_PREFIX: Final = "t#"

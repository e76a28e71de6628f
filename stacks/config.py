"""The one typed configuration of the app, built from `cdk.json` context for one stage.

`app.py` is the only reader of context: it hands the raw values to `load_config`, which merges the
shared `defaults` under the stage's own settings, validates every field and fails synth with one
line naming the key, the bad value and the allowed values (a key no dataclass field names is refused
with the closest known one). Stacks and constructs receive typed slices of the resulting `AppConfig`
and read nothing else.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from throttling.core import planning
from throttling.core.controller import MODES as CONTROLLER_MODES
from throttling.core.names import (
    AUTH_API_KEY,
    AUTH_FIELD_HEADER,
    AUTH_FIELD_KIND,
    AUTH_FIELD_SCOPE,
    AUTH_FIELD_SECRET_CACHE_SEC,
    AUTH_FIELD_TOKEN_PATH,
    AUTH_KINDS,
    DEFAULT_STAGE,
    STAGE_NAME_PATTERN,
    TUNABLE_FLOOR_FRACTION,
    TUNABLE_SEED_FRACTION,
    tunables_prefix,
)
from throttling.core.planning import (
    DEFAULT_HEADROOM,
    EXPECTED_LATENCY_MS_BOUNDS,
    HEADROOM_BOUNDS,
    MIN_JITTER_MARGIN_SEC,
    headroom_for_margin,
    jitter_margin_sec,
    limiter_settings,
)
from throttling.core.tunables import (
    BURST_BOUNDS,
    FLOOR_FRACTION_BOUNDS,
    RATE_PER_SEC_BOUNDS,
    SEED_FRACTION_BOUNDS,
    discovery_fields,
)

# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS_ALLOWED = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)
REMOVAL_POLICIES = ("destroy", "retain")
# Matched whole with fullmatch: `$` would let a trailing newline through ("crm\n"); [0-9], not \d,
# which takes any Unicode digit.
_DOWNSTREAM_NAME = re.compile(r"[a-z][a-z0-9_]{1,30}")
_REGION = re.compile(r"[a-z]{2}(-gov)?-[a-z]+-[0-9]")
_ACCOUNT = re.compile(r"[0-9]{12}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# "POST /payments", "GET /payments/{id}": a verb and a resource path as API Gateway spells them.
_ROUTE = re.compile(r"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (/|(/([A-Za-z0-9._-]+|\{[A-Za-z0-9_]+\}))+)")
_API_KEY_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_URL = re.compile(r"https?://[^\s/]+(/\S*)?")
_STAGE_NAME = re.compile(STAGE_NAME_PATTERN)
# API Gateway's account-level defaults per region: what one account's APIs may take together.
ACCOUNT_RATE_LIMIT_PER_SEC = 10_000
ACCOUNT_BURST = 5_000
QUOTA_PERIODS = ("DAY", "WEEK", "MONTH")
# AWS WAF's bounds for a rate-based rule's limit (requests per 5-minute window per source IP).
WAF_RATE_LIMIT_BOUNDS = (10, 2_000_000_000)
# A batch is one child execution's input and, with the CRM's answer beside it, its state, which Step Functions
# caps at 256 KiB: a recipient with an id of 128 bytes and its idempotency key (execution name + id) takes
# about 370 bytes, and as many again when the CRM answers it rejected or deferred, so 250 stay under 190 KB.
MAX_BATCH_SIZE = 250


class ConfigError(ValueError):
    """A context value is missing or out of range; the message names the key and the allowed values."""


# A header name as RFC 9110 spells a token; a secret name as Secrets Manager takes it; a token endpoint's path.
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
_URL_PATH = re.compile(r"/[A-Za-z0-9._~/-]{0,255}")


@dataclass(frozen=True)
class DownstreamAuth:
    """How a downstream takes its credentials (`downstreams.<name>.auth`), kept in Secrets Manager.

    :param kind: "api_key" (the key sent in `header` on every call; secret `{"api_key": ...}`) or
        "oauth2_client_credentials" (a bearer token from the downstream's token endpoint, RFC 6749 4.4,
        for the client of secret `{"client_id": ..., "client_secret": ...}`).
    :param header: the API key's header; default "x-api-key" (api_key only).
    :param token_path: the token endpoint, under the downstream's base_url; default "/oauth2/token" (oauth2 only).
    :param scope: the scope asked for with each token; default none (the client's own).
    :param secret_name: an existing secret to read; default none: the stack creates the secret
        (`<Name>Credentials`) and you put the value the third party issued.
    :param secret_cache_sec: how long a caller keeps the secret before reading it again; default 300 (a 401
        reads it again at once, so a rotation takes effect on the next call it breaks).
    """

    kind: str
    header: str = "x-api-key"
    token_path: str = "/oauth2/token"
    scope: str | None = None
    secret_name: str | None = None
    secret_cache_sec: int = 300

    def document(self) -> str:
        """What the caller reads from `ENV_DOWNSTREAM_AUTH`: how to send the credentials, never the credentials."""
        fields: dict[str, Any] = {AUTH_FIELD_KIND: self.kind, AUTH_FIELD_SECRET_CACHE_SEC: self.secret_cache_sec}
        if self.kind == AUTH_API_KEY:
            fields[AUTH_FIELD_HEADER] = self.header
        else:
            fields[AUTH_FIELD_TOKEN_PATH] = self.token_path
            if self.scope:
                fields[AUTH_FIELD_SCOPE] = self.scope
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class DownstreamConfig:
    """A rate-limited third party the app calls, and the numbers we plan its traffic with.

    `rate_limit_per_sec` is the downstream's contractual limit: the ceiling the Lambda-side reader
    clamps any operator or controller value to. A downstream whose limit nobody told us gives
    `rate_ceiling_per_sec` instead (exactly one of the two): a rate we must never pass, below which
    the shared limiter's inner loop discovers the real limit, starting an unused bucket at
    `discovery_seed_fraction` of it (default 0.1) and never cutting below `discovery_floor_fraction`
    (default half the seed). Everything planned from a contract (the limiter's rate and burst,
    Little's-law concurrency, the controller's bounds and the clamp) is then planned from the
    ceiling: `max_rate_per_sec` is whichever was given. `headroom` is the fraction of it we leave unused;
    what keeps network jitter (calls admitted apart arriving together) from pushing the downstream
    over is mostly the half of its burst we leave unused (`throttling.core.planning.limiter_settings`
    gives the arithmetic), so 1 % suffices where the burst is 2 or more, and a burst-1 downstream
    needs a real rate headroom (the loader refuses one that keeps less than
    `MIN_JITTER_MARGIN_SEC` of jitter margin).
    `max_batch_size` is the most items its batch endpoint takes in one request (a request counts once
    against `rate_limit_per_sec` whatever its size); `None` (the default) means it has none.
    """

    name: str
    base_url: str
    burst: int
    expected_latency_ms: int
    rate_limit_per_sec: float | None = None
    rate_ceiling_per_sec: float | None = None
    discovery_seed_fraction: float | None = None
    discovery_floor_fraction: float | None = None
    timeout_sec: float = 5.0
    headroom: float = DEFAULT_HEADROOM
    max_batch_size: int | None = None
    # Its concurrency contract: at most this many of our calls in flight at once, across the account
    # (workflows take a lease of the shared semaphore per call); None when it sets no such bound.
    max_in_flight: int | None = None
    # None: the downstream takes no credentials.
    auth: DownstreamAuth | None = None

    def __post_init__(self) -> None:
        if (self.rate_limit_per_sec is None) == (self.rate_ceiling_per_sec is None):
            raise ValueError(f"{self.name}: give exactly one of rate_limit_per_sec and rate_ceiling_per_sec, got"
                             f" {self.rate_limit_per_sec!r} and {self.rate_ceiling_per_sec!r}")

    @property
    def contract_known(self) -> bool:
        """Whether the downstream told us its limit (`rate_limit_per_sec`), or only a ceiling to discover it under."""
        return self.rate_limit_per_sec is not None

    @property
    def max_rate_per_sec(self) -> float:
        """What we never send above, and plan from: the contract, or the ceiling where the limit is unknown."""
        rate = self.rate_limit_per_sec if self.rate_limit_per_sec is not None else self.rate_ceiling_per_sec
        assert rate is not None  # __post_init__ holds one of them
        return rate

    @property
    def discovery_tunables(self) -> dict[str, float]:
        """The inner loop's fields the tunables document carries so the loop discovers the rate under the
        ceiling (`throttling.core.tunables`); none for a known contract, whose bucket starts at the rate."""
        if self.contract_known:
            return {}
        return discovery_fields(self.discovery_seed_fraction, self.discovery_floor_fraction)

    @property
    def planned_rate_per_sec(self) -> float:
        """The rate the shared limiter admits by default: the contract (or ceiling) less the headroom."""
        return limiter_settings(self.max_rate_per_sec, self.burst, self.headroom)[0]

    @property
    def planned_burst(self) -> int:
        """The shared limiter's default burst: half the downstream's, at least 1 (see `limiter_settings`)."""
        return limiter_settings(self.max_rate_per_sec, self.burst, self.headroom)[1]

    @property
    def jitter_margin_sec(self) -> float:
        """How unevenly calls may lag the limiter's decisions under the planned rate and burst, 429-free."""
        return jitter_margin_sec(self.max_rate_per_sec, self.burst, self.planned_rate_per_sec, self.planned_burst)

    @property
    def default_max_concurrency(self) -> int:
        """In-flight calls that spend every token of the shared limiter, by Little's law (L = lambda * W).

        Every deployed caller takes a token, so the limiter holds the rate and the concurrency must
        never starve it: Little's law over the time a call holds its slot (a quarter slower than
        `expected_latency_ms`, plus 50 ms for the network and the limiter's round trip), rounded up,
        never below 1 nor above `max_in_flight` (`planning.planned_concurrency`). At 10 req/s and 200 ms
        that is 3 calls in flight: floor(10 x 0.2) = 2 delivers about 7.4 req/s once the network and
        slow calls count, and the seed's guess of 5 would offer 25 req/s for the limiter to hold back.
        """
        return planning.planned_concurrency(self.max_rate_per_sec, self.expected_latency_ms, self.max_in_flight)


@dataclass(frozen=True)
class ControlLoopConfig:
    """The control loop's mode and thresholds (`stages.<stage>.control_loop`; every key is optional).

    The same thresholds drive the alarms and the controller, so an alarm that says "slow down" and
    the controller's own reading of the metrics agree.

    :param mode: how the controller grows a healthy downstream's concurrency: "aimd" (additive
        increase, multiplicative decrease; default) or "gradient" (latency-based, as Gradient2).
    :param throttle_rate_threshold: 429s per call above which we slow down; default 0.01.
    :param error_rate_threshold: 5xx and timeouts per call above which we slow down; default 0.05.
    :param breaker_error_rate_threshold: an error rate that, sustained for
        `breaker_alarm_periods` minutes, opens the downstream's breaker; default 0.25.
    :param breaker_alarm_periods: minutes in a row for that; default 3.
    :param p99_latency_factor: the p99 latency alarm fires at this many times the downstream's
        expected latency (never above its timeout); default 5 (a slow call, as the breaker counts).
    :param max_concurrency_factor: the concurrency ceiling is this many times the Little's-law
        concurrency (floor(rate x latency)), never below the planned one the seed starts from
        (`DownstreamConfig.default_max_concurrency`) nor above the downstream's `max_in_flight`; default 4.
    :param min_rate_fraction: the controller never sets a rate below this fraction of the planned
        rate; default 0.1 (a downstream that is down is the breaker's job).
    :param clean_periods_to_increase: clean minutes in a row before any increase; default 3.
    :param cooldown_sec: after a decrease nothing moves for this long; default 120.
    :param metrics_delay_sec: how long after a minute its metrics are taken as complete; default 30.
    :param backlog_age_alarm_sec: a buffer whose oldest message is older than this alarms; default
        900 (15 minutes behind the downstream's pace).
    :param ingress_refused_rate_threshold: the share of the API's requests answered 429 (throttle,
        quota, WAF) above which people are told, in 2 of 3 minutes; default 0.05. Clients refused at
        the door are a plan or a stage limit to revisit, not the controller's business.
    :param ingress_p99_latency_ms: the API's p99 latency alarm, in ms; default 3000.
    :param alarm_emails: who the alarm topic e-mails; default nobody (subscribe elsewhere).
    :param adjust_rate: the controller also moves each downstream's `rate_per_sec`; default false.
        That rate is the ceiling of the shared limiter's inner loop, which already cuts the bucket's
        rate on the first 429 and probes it back within seconds, for every caller at once; a
        controller judging one-minute metrics 30 s late would cut the ceiling again for a 429 the
        inner loop has answered, and hold it down for its cooldown. So by default the controller
        owns the concurrency (Map states, event sources), the bounds and the breaker, and leaves the
        rate to the inner loop; true brings back the slow loop on the rate as well.
    """

    mode: str = planning.DEFAULT_CONTROLLER_MODE
    throttle_rate_threshold: float = planning.DEFAULT_THROTTLE_RATE_THRESHOLD
    error_rate_threshold: float = planning.DEFAULT_ERROR_RATE_THRESHOLD
    breaker_error_rate_threshold: float = 0.25
    breaker_alarm_periods: int = 3
    p99_latency_factor: float = planning.DEFAULT_P99_LATENCY_FACTOR
    max_concurrency_factor: int = planning.DEFAULT_MAX_CONCURRENCY_FACTOR
    min_rate_fraction: float = planning.DEFAULT_MIN_RATE_FRACTION
    clean_periods_to_increase: int = planning.DEFAULT_CLEAN_PERIODS_TO_INCREASE
    cooldown_sec: int = planning.DEFAULT_COOLDOWN_SEC
    metrics_delay_sec: int = planning.DEFAULT_METRICS_DELAY_SEC
    backlog_age_alarm_sec: int = 900
    ingress_refused_rate_threshold: float = 0.05
    ingress_p99_latency_ms: int = 3000
    alarm_emails: tuple[str, ...] = ()
    adjust_rate: bool = False

    def p99_latency_threshold_ms(self, downstream: DownstreamConfig) -> float:
        """A p99 this slow means slow down: a slow call as the breaker counts it, never beyond the timeout."""
        return planning.p99_latency_threshold_ms(downstream.expected_latency_ms, downstream.timeout_sec,
                                                 self.p99_latency_factor)

    def controller_bounds(self, downstream: DownstreamConfig) -> dict[str, float | int]:
        """Where the controller may move `downstream` (`throttling.core.planning.controller_bounds`; read by
        the Lambda side's `Bounds.from_document`).
        """
        return planning.controller_bounds(
            downstream.max_rate_per_sec, downstream.burst, downstream.expected_latency_ms, downstream.headroom,
            max_concurrency_factor=self.max_concurrency_factor, min_rate_fraction=self.min_rate_fraction,
            max_in_flight=downstream.max_in_flight)


@dataclass(frozen=True)
class ModerationConfig:
    """How UGC moderation decides from the AI models' scores (`stages.<stage>.moderation`; every key is optional).

    A model scores each of its categories from 0 to 1 (`lambdas/moderation/decision.py` says how the
    decision is made); one score at or above `reject_score` rejects the upload, one at or above
    `review_score` (or a model without an answer) sends it to a human, and below that every model
    must have answered to approve it.

    :param review_score: default 0.4.
    :param reject_score: default 0.8; 0 < review_score < reject_score <= 1.
    """

    review_score: float = 0.4
    reject_score: float = 0.8


@dataclass(frozen=True)
class ThrottleConfig:
    """An API Gateway token bucket: a steady rate and the burst (the bucket's size) it allows."""

    rate_limit_per_sec: float
    burst: int


@dataclass(frozen=True)
class QuotaConfig:
    """How many requests a client of a tier may make per period (API Gateway resets it at 00:00 UTC)."""

    limit: int
    period: str


@dataclass(frozen=True)
class UsageTierConfig:
    """A usage plan: a per-client throttle and quota, per-method throttles, and the API keys it holds."""

    name: str
    throttle: ThrottleConfig
    quota: QuotaConfig
    method_throttles: Mapping[str, ThrottleConfig] = field(default_factory=dict)
    api_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class WafConfig:
    """An optional AWS WAF web ACL in front of the API, with a rate-based rule per source IP."""

    enabled: bool = False
    requests_per_5_min_per_ip: int = 1_000


@dataclass(frozen=True)
class IngressConfig:
    """The API's limits (`stages.<stage>.ingress`): stage, per method, per client tier, and WAF.

    A request meets them in the order account, WAF, usage plan (its key's tier, then the tier's
    method throttle), method, stage; the tightest refuses it with 429.
    """

    throttle: ThrottleConfig
    method_throttles: Mapping[str, ThrottleConfig]
    tiers: tuple[UsageTierConfig, ...]
    quota_retry_after_sec: int = 3600
    waf: WafConfig = field(default_factory=WafConfig)

    # The Retry-After and the routes these limits imply are the API's to compute: `ThrottledApi`'s
    # `ApiLimits` (built from this by `stacks.ingress_stack.api_limits`).


@dataclass(frozen=True)
class AppConfig:
    """Everything one stage of the app is built from.

    :param reserve_concurrency: give the functions that need a ceiling or a guaranteed share their
        reserved concurrency (the controller 1, the lease sweep 1, the payment authorizer, the legacy
        consumer its mapping's); default true. A new account's limit (10, or 50) leaves nothing to
        reserve, since Lambda keeps 100 unreserved: a sandbox turns it off, and the SQS mappings'
        `MaximumConcurrency` and the shared limiter still bound the calls.
    :param parameter_store_high_throughput: the stage needs Parameter Store's higher throughput (the
        account-wide setting `/ssm/parameter-store/high-throughput-enabled`: more than the default
        40 reads/s shared by every execution start and every function's tunables read, billed per API
        interaction); `make deploy`'s pre-flight turns it on when asked, never off; default false.
    """

    stage: str
    region: str
    account: str | None
    log_retention_days: int
    removal_policy: str
    tunables_cache_sec: int
    nag: bool
    reserve_concurrency: bool = True
    parameter_store_high_throughput: bool = False
    downstreams: tuple[DownstreamConfig, ...] = field(default_factory=tuple)
    control_loop: ControlLoopConfig = field(default_factory=ControlLoopConfig)
    ingress: IngressConfig | None = None
    moderation: ModerationConfig = field(default_factory=ModerationConfig)

    @property
    def ssm_prefix(self) -> str:
        """Where this stage's operator-tunable parameters live in Parameter Store."""
        return tunables_prefix(self.stage)

    @property
    def controller_plans_path(self) -> str:
        """Where the stack writes the controller's plan of each downstream (apart from the tunables it may write)."""
        return f"/throttling-controller/{self.stage}/plans"

    @property
    def stack_prefix(self) -> str:
        return f"Throttling-{self.stage}"

    def downstream(self, name: str) -> DownstreamConfig:
        for downstream in self.downstreams:
            if downstream.name == name:
                return downstream
        known = ", ".join(d.name for d in self.downstreams)
        raise ConfigError(f"no downstream named {name!r}; configured downstreams: {known}")

    def with_downstream_base_urls(self, base_urls: Mapping[str, str]) -> AppConfig:
        """A copy pointing the named downstreams elsewhere (a simulator, a gateway in front of them)."""
        unknown = set(base_urls) - {d.name for d in self.downstreams}
        if unknown:
            raise ConfigError(f"no downstream named {sorted(unknown)}; configured: {[d.name for d in self.downstreams]}")
        return replace(
            self,
            downstreams=tuple(
                replace(d, base_url=_url(f"downstreams.{d.name}.base_url", base_urls[d.name]))
                if d.name in base_urls
                else d
                for d in self.downstreams
            ),
        )


def load_config(
    stages: Mapping[str, Any] | None,
    stage: str | None = None,
    nag: Any = None,
    downstream_base_urls: Any = None,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> AppConfig:
    """Build and validate the config of `stage` from the `stages` and `defaults` context objects of `cdk.json`.

    The stage's settings are `defaults` with `stages.<stage>` deep-merged over them (`merge_defaults`).
    `stage`, `nag` and `downstream_base_urls` come from the command line (`-c stage=prod -c nag=true
    -c downstream_base_urls='{"crm": "https://gateway.example.com/crm"}'`), so they may be strings.
    """
    if not isinstance(stages, Mapping) or not stages:
        raise ConfigError(f"cdk.json context 'stages' must be an object of stage name -> settings, got {stages!r};"
                          " add at least stages.dev")
    stage = _stage_name(DEFAULT_STAGE if stage is None else stage, stages)
    key = f"stages.{stage}"
    if not isinstance(stages[stage], Mapping):
        raise ConfigError(f"{key} must be an object of settings, got {stages[stage]!r}")
    if defaults is not None and not isinstance(defaults, Mapping):
        raise ConfigError(f"cdk.json context 'defaults' must be an object of settings every stage shares, got {defaults!r}")
    raw = merge_defaults(defaults or {}, stages[stage])
    if "powertools_layer_version" in raw:
        raise ConfigError(
            f"{key}.powertools_layer_version is no longer read: a layer number pins some Powertools release the tests"
            " never ran; the layer is now resolved at deploy from the release requirements-lambda.txt pins. Remove the key"
        )
    _refuse_unknown_keys(key, raw, settings_of(AppConfig, derived=("stage",)))

    downstreams_raw = _required(raw, key, "downstreams")
    if not isinstance(downstreams_raw, Mapping) or not downstreams_raw:
        raise ConfigError(f"{key}.downstreams must be a non-empty object of name -> settings, got {downstreams_raw!r}")

    account = raw.get("account")
    if account is not None and not (isinstance(account, str) and _ACCOUNT.fullmatch(account)):
        raise ConfigError(f"{key}.account must be a 12-digit AWS account id or absent, got {account!r}")
    region = _required(raw, key, "region")
    if not (isinstance(region, str) and _REGION.fullmatch(region)):
        raise ConfigError(f"{key}.region must be an AWS region such as 'eu-west-1', got {region!r}")

    config = AppConfig(
        stage=stage,
        region=region,
        account=account,
        log_retention_days=_choice(raw, key, "log_retention_days", LOG_RETENTION_DAYS_ALLOWED),
        removal_policy=_choice(raw, key, "removal_policy", REMOVAL_POLICIES),
        tunables_cache_sec=_int(raw, key, "tunables_cache_sec", 0, 300),
        nag=_bool("nag", nag if nag is not None else raw.get("nag", False)),
        reserve_concurrency=_bool(f"{key}.reserve_concurrency", raw.get("reserve_concurrency", True)),
        parameter_store_high_throughput=_bool(f"{key}.parameter_store_high_throughput",
                                              raw.get("parameter_store_high_throughput", False)),
        downstreams=tuple(
            _downstream(f"{key}.downstreams.{name}", name, value) for name, value in downstreams_raw.items()
        ),
        control_loop=_control_loop(f"{key}.control_loop", raw.get("control_loop", {})),
        ingress=_ingress(f"{key}.ingress", _required(raw, key, "ingress")),
        moderation=_moderation(f"{key}.moderation", raw.get("moderation", {})),
    )
    if downstream_base_urls:
        config = config.with_downstream_base_urls(_json_object("downstream_base_urls", downstream_base_urls))
    return config


def merge_defaults(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A stage's settings: `overrides` deep-merged over `defaults`, neither changed.

    Objects merge key by key; anything else (a number, a list such as `alarm_emails`) replaces the
    default whole. Nothing removes a default: the CDK drops context keys whose value is null before
    the app sees them, so what not every stage has stays out of `defaults`.
    """
    merged = {name: copy.deepcopy(value) for name, value in defaults.items()}
    for name, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            merged[name] = merge_defaults(merged[name], value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


def settings_of(config_class: type, *, derived: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The keys `cdk.json` may give for `config_class`: its dataclass fields, less the `derived` ones.

    Derived from the fields so a field added to a config class is a key the loader accepts, and a
    key no field names (a typo, a removed setting) is refused instead of silently defaulted.
    """
    return tuple(f.name for f in dataclasses.fields(config_class) if f.name not in derived)


def _stage_name(stage: Any, stages: Mapping[str, Any]) -> str:
    configured = ", ".join(sorted(stages))
    if not isinstance(stage, str) or not stage.strip():
        raise ConfigError(f"stage is empty (-c stage={stage if isinstance(stage, str) else repr(stage)}):"
                          f" pass -c stage=<name>, one of: {configured}")
    if stage not in stages:
        raise ConfigError(
            f"stage {stage!r} is not in cdk.json's stages{_did_you_mean(stage, stages)}; configured: {configured};"
            f" pass one of them with -c stage=<name>, or add stages.{stage}")
    if not _STAGE_NAME.fullmatch(stage):
        raise ConfigError(
            f"stage names must be lower-case letters and digits, starting with a letter, at most 20 (they name"
            f" stacks, SSM paths and the API's stage), got {stage!r}; rename stages.{stage}")
    return stage


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _refuse_unknown_keys(key: str, raw: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse keys `allowed` does not name, each with the closest allowed one: a typo must not mean a default."""
    allowed = sorted(allowed)
    unknown = sorted(str(name) for name in raw if name not in allowed)
    if unknown:
        named = ", ".join(f"{key}.{name}{_did_you_mean(name, allowed)}" for name in unknown)
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {named}; {key} takes: {', '.join(allowed)}")


def _downstream(key: str, name: str, raw: Any) -> DownstreamConfig:
    if not _DOWNSTREAM_NAME.fullmatch(name):
        raise ConfigError(f"{key}: downstream names must be snake_case (a-z, 0-9, _; 2-31 chars), got {name!r}")
    _object(key, raw, settings_of(DownstreamConfig, derived=("name",)))
    rate_key, discovery = _rate_key(key, raw)
    # The bounds the Lambdas' tunables and `throttlectl plan` apply too: a contract outside them could not be planned.
    rate = _number(raw, key, rate_key, *RATE_PER_SEC_BOUNDS)
    burst = _int(raw, key, "burst", *BURST_BOUNDS)
    if burst < 1 or burst > max(1, math.ceil(rate * 10)):
        raise ConfigError(
            f"{key}.burst must be between 1 and 10 s worth of {rate_key} ({max(1, math.ceil(rate * 10))}),"
            f" got {burst}; a larger burst would let a downstream limit be exceeded tenfold after an idle spell"
        )
    downstream = DownstreamConfig(
        name=name,
        base_url=_url(f"{key}.base_url", _required(raw, key, "base_url")),
        rate_limit_per_sec=rate if rate_key == "rate_limit_per_sec" else None,
        rate_ceiling_per_sec=rate if rate_key == "rate_ceiling_per_sec" else None,
        **discovery,
        burst=burst,
        expected_latency_ms=_int(raw, key, "expected_latency_ms", *EXPECTED_LATENCY_MS_BOUNDS),
        timeout_sec=_number(raw, key, "timeout_sec", 0.1, 900) if "timeout_sec" in raw else 5.0,
        headroom=_number(raw, key, "headroom", *HEADROOM_BOUNDS) if "headroom" in raw else DEFAULT_HEADROOM,
        max_batch_size=_int(raw, key, "max_batch_size", 1, MAX_BATCH_SIZE) if "max_batch_size" in raw else None,
        # The semaphore's limit; 1,000 is the tunables' own bound on concurrency.
        max_in_flight=_int(raw, key, "max_in_flight", 1, 1_000) if "max_in_flight" in raw else None,
        auth=_auth(f"{key}.auth", raw["auth"]) if "auth" in raw else None,
    )
    # Below this margin a call that travels a little slower than the one before it meets a 429, and
    # callers would drop most tokens as stale (they keep half the margin for the limiter's answer).
    margin = downstream.jitter_margin_sec
    if margin < MIN_JITTER_MARGIN_SEC - 1e-9:
        needed = headroom_for_margin(rate, burst)
        remedy = (
            f"set {key}.headroom to at least {needed:g}"
            if needed <= HEADROOM_BOUNDS[1]
            else f"no headroom up to {HEADROOM_BOUNDS[1]:g} does (it needs {needed:g}): ask the downstream for a burst of 2 or more"
        )
        raise ConfigError(
            f"{key}.headroom {downstream.headroom:g}{'' if 'headroom' in raw else ' (the default)'} leaves a jitter margin"
            f" of {margin:.3g} s at {downstream.planned_rate_per_sec:g}"
            f" req/s, burst {downstream.planned_burst} under {name}'s {'' if downstream.contract_known else 'ceiling of '}"
            f"{rate:g} req/s, burst {burst}; calls must be allowed"
            f" to lag our limiter's decisions by {MIN_JITTER_MARGIN_SEC:g} s unevenly without a 429: {remedy}"
        )
    return downstream


def _rate_key(key: str, raw: Mapping[str, Any]) -> tuple[str, dict[str, float]]:
    """Which rate a downstream plans from (its contract, or a ceiling to discover its limit under), and the
    discovery's seed and floor; refused unless exactly one rate is given, and the seed and floor only with a ceiling."""
    given = [name for name in ("rate_limit_per_sec", "rate_ceiling_per_sec") if name in raw]
    if len(given) != 1:
        shown_values = ", ".join(f"{name} {raw[name]!r}" for name in given)
        raise ConfigError(
            f"{key} gives {'both ' + shown_values if given else 'neither rate_limit_per_sec nor rate_ceiling_per_sec'};"
            " give exactly one: rate_limit_per_sec when the downstream documents its limit, or rate_ceiling_per_sec"
            " (a rate we must never pass) when it does not, for the shared limiter to discover the limit below it")
    fractions = [name for name in ("discovery_seed_fraction", "discovery_floor_fraction") if name in raw]
    if given == ["rate_limit_per_sec"]:
        if fractions:
            raise ConfigError(
                f"{key}.{fractions[0]} {raw[fractions[0]]!r} applies only where the limit is unknown: the inner loop"
                f" starts a known contract's bucket at its rate; remove it, or give rate_ceiling_per_sec instead of"
                f" rate_limit_per_sec {raw['rate_limit_per_sec']!r}")
        return "rate_limit_per_sec", {}
    # The tunables' own bounds (the callers would clamp anything outside them).
    fields = discovery_fields(
        _number(raw, key, "discovery_seed_fraction", *SEED_FRACTION_BOUNDS) if "discovery_seed_fraction" in raw else None,
        _number(raw, key, "discovery_floor_fraction", *FLOOR_FRACTION_BOUNDS) if "discovery_floor_fraction" in raw else None)
    seed, floor = fields[TUNABLE_SEED_FRACTION], fields[TUNABLE_FLOOR_FRACTION]
    if floor > seed:
        raise ConfigError(
            f"{key}.discovery_floor_fraction {floor:g} is above the seed, discovery_seed_fraction {seed:g}"
            f"{'' if 'discovery_seed_fraction' in raw else ' (the default)'}: an unused bucket starts at the seed and"
            " the floor is the lowest a 429 may cut it to; give a floor at most the seed")
    return "rate_ceiling_per_sec", {"discovery_seed_fraction": seed, "discovery_floor_fraction": floor}


def _auth(key: str, raw: Any) -> DownstreamAuth:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key} must be an object such as {{\"kind\": \"api_key\"}}, got {raw!r}")
    kind = raw.get("kind")
    if kind not in AUTH_KINDS:
        raise ConfigError(f"{key}.kind must be one of {list(AUTH_KINDS)}, got {kind!r}")
    allowed = {"kind", "secret_name", "secret_cache_sec"} | (
        {"header"} if kind == AUTH_API_KEY else {"token_path", "scope"})
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{key} has keys {unknown} that a {kind!r} auth does not take; it takes {sorted(allowed)}")
    defaults = DownstreamAuth(kind=kind)

    def text(name: str, pattern: re.Pattern[str], example: str) -> Any:
        value = raw.get(name, getattr(defaults, name))
        if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
            raise ConfigError(f"{key}.{name} must be {example}, got {value!r}")
        return value

    return DownstreamAuth(
        kind=kind,
        header=text("header", _HEADER_NAME, "an HTTP header name such as 'x-api-key'"),
        token_path=text("token_path", _URL_PATH, "a path such as '/oauth2/token'"),
        scope=text("scope", re.compile(r"[\x21\x23-\x5B\x5D-\x7E ]{1,256}"), "an OAuth2 scope such as 'messages:send'"),
        secret_name=text("secret_name", _SECRET_NAME, "a Secrets Manager secret name such as 'crm/api-key'"),
        secret_cache_sec=_int(raw, key, "secret_cache_sec", 0, 3600) if "secret_cache_sec" in raw
        else defaults.secret_cache_sec,
    )


def _control_loop(key: str, raw: Any) -> ControlLoopConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key} must be an object, got {raw!r}")
    _refuse_unknown_keys(key, raw, settings_of(ControlLoopConfig))
    defaults = ControlLoopConfig()

    def number(name: str, low: float, high: float) -> float:
        return _number(raw, key, name, low, high) if name in raw else getattr(defaults, name)

    def integer(name: str, low: int, high: int) -> int:
        return _int(raw, key, name, low, high) if name in raw else getattr(defaults, name)

    emails = raw.get("alarm_emails", [])
    if not isinstance(emails, list) or not all(isinstance(e, str) and _EMAIL.fullmatch(e) for e in emails):
        raise ConfigError(f"{key}.alarm_emails must be a list of e-mail addresses, got {emails!r}")
    throttle = number("throttle_rate_threshold", 0.001, 0.5)
    errors = number("error_rate_threshold", 0.001, 0.5)
    breaker = number("breaker_error_rate_threshold", 0.01, 1)
    if breaker < errors:
        raise ConfigError(
            f"{key}.breaker_error_rate_threshold must be >= error_rate_threshold ({errors}), got {breaker}:"
            " the breaker is for errors the controller's slow-down did not cure"
        )
    return ControlLoopConfig(
        mode=_choice(raw, key, "mode", CONTROLLER_MODES) if "mode" in raw else defaults.mode,
        throttle_rate_threshold=throttle,
        error_rate_threshold=errors,
        breaker_error_rate_threshold=breaker,
        breaker_alarm_periods=integer("breaker_alarm_periods", 1, 60),
        p99_latency_factor=number("p99_latency_factor", 1, 100),
        max_concurrency_factor=integer("max_concurrency_factor", 1, 100),
        min_rate_fraction=number("min_rate_fraction", 0.01, 1),
        clean_periods_to_increase=integer("clean_periods_to_increase", 1, 60),
        cooldown_sec=integer("cooldown_sec", 0, 3600),
        metrics_delay_sec=integer("metrics_delay_sec", 0, 300),
        backlog_age_alarm_sec=integer("backlog_age_alarm_sec", 60, 1_209_600),
        ingress_refused_rate_threshold=number("ingress_refused_rate_threshold", 0.001, 1),
        # API Gateway ends an integration at 29 s, so a p99 above that cannot be observed.
        ingress_p99_latency_ms=integer("ingress_p99_latency_ms", 50, 29_000),
        alarm_emails=tuple(emails),
        adjust_rate=_bool(f"{key}.adjust_rate", raw.get("adjust_rate", defaults.adjust_rate)),
    )


def _moderation(key: str, raw: Any) -> ModerationConfig:
    _object(key, raw, settings_of(ModerationConfig))
    defaults = ModerationConfig()
    review = _number(raw, key, "review_score", 0.01, 0.99) if "review_score" in raw else defaults.review_score
    reject = _number(raw, key, "reject_score", 0.01, 1) if "reject_score" in raw else defaults.reject_score
    if review >= reject:
        raise ConfigError(
            f"{key}.review_score must be below reject_score, got {review:g} >= {reject:g}: between them a human"
            " reviews the upload, so e.g. 0.4 and 0.8")
    return ModerationConfig(review_score=review, reject_score=reject)


def _ingress(key: str, raw: Any) -> IngressConfig:
    _object(key, raw, settings_of(IngressConfig))
    stage = _throttle(f"{key}.throttle", _required(raw, key, "throttle"), ceiling=None)
    method_throttles = _method_throttles(f"{key}.method_throttles", raw.get("method_throttles", {}), ceiling=stage)
    tiers_raw = _required(raw, key, "tiers")
    if not isinstance(tiers_raw, Mapping) or not tiers_raw:
        raise ConfigError(f"{key}.tiers must be a non-empty object of tier name -> usage plan, got {tiers_raw!r}")
    tiers = tuple(_tier(f"{key}.tiers.{name}", name, value, stage) for name, value in tiers_raw.items())
    seen: dict[str, str] = {}
    for tier in tiers:
        for api_key in tier.api_keys:
            if api_key in seen:
                raise ConfigError(
                    f"{key}.tiers: API key {api_key!r} is in tiers {seen[api_key]!r} and {tier.name!r}; API Gateway"
                    " allows a key in one usage plan per stage, so give each client one tier")
            seen[api_key] = tier.name
    waf_raw = raw.get("waf", {})
    _object(f"{key}.waf", waf_raw, settings_of(WafConfig))
    low, high = WAF_RATE_LIMIT_BOUNDS
    waf = WafConfig(
        enabled=_bool(f"{key}.waf.enabled", waf_raw.get("enabled", False)),
        requests_per_5_min_per_ip=(_int(waf_raw, f"{key}.waf", "requests_per_5_min_per_ip", low, high)
                                   if "requests_per_5_min_per_ip" in waf_raw else WafConfig.requests_per_5_min_per_ip),
    )
    return IngressConfig(
        throttle=stage,
        method_throttles=method_throttles,
        tiers=tiers,
        quota_retry_after_sec=(_int(raw, key, "quota_retry_after_sec", 1, 31 * 86_400)
                               if "quota_retry_after_sec" in raw else IngressConfig.quota_retry_after_sec),
        waf=waf,
    )


def _tier(key: str, name: str, raw: Any, stage: ThrottleConfig) -> UsageTierConfig:
    if not _API_KEY_NAME.fullmatch(name):
        raise ConfigError(f"{key}: tier names must be lower-case letters, digits and '-', got {name!r}")
    _object(key, raw, settings_of(UsageTierConfig, derived=("name",)))
    throttle = _throttle(f"{key}.throttle", _required(raw, key, "throttle"), ceiling=stage)
    quota_raw = _required(raw, key, "quota")
    _object(f"{key}.quota", quota_raw, settings_of(QuotaConfig))
    api_keys = raw.get("api_keys", [])
    if not isinstance(api_keys, list) or not all(isinstance(k, str) and _API_KEY_NAME.fullmatch(k) for k in api_keys):
        raise ConfigError(
            f"{key}.api_keys must be a list of client names (lower-case letters, digits and '-'), got {api_keys!r}")
    return UsageTierConfig(
        name=name,
        throttle=throttle,
        quota=QuotaConfig(
            limit=_int(quota_raw, f"{key}.quota", "limit", 1, 2_000_000_000),
            period=_choice(quota_raw, f"{key}.quota", "period", QUOTA_PERIODS),
        ),
        method_throttles=_method_throttles(f"{key}.method_throttles", raw.get("method_throttles", {}), ceiling=throttle),
        api_keys=tuple(api_keys),
    )


def _method_throttles(key: str, raw: Any, *, ceiling: ThrottleConfig) -> dict[str, ThrottleConfig]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key} must be an object of route -> throttle, got {raw!r}")
    throttles = {}
    for route, value in raw.items():
        if not _ROUTE.fullmatch(route):
            raise ConfigError(f"{key}: routes are written 'VERB /path', e.g. 'POST /payments', got {route!r}")
        throttles[route] = _throttle(f"{key}.{route}", value, ceiling=ceiling)
    return throttles


def _throttle(key: str, raw: Any, *, ceiling: ThrottleConfig | None) -> ThrottleConfig:
    """A token bucket within the account's API Gateway limits and within the bucket it sits under."""
    _object(key, raw, settings_of(ThrottleConfig))
    rate = _number(raw, key, "rate_limit_per_sec", 0.01, ACCOUNT_RATE_LIMIT_PER_SEC)
    burst = _int(raw, key, "burst", 1, ACCOUNT_BURST)
    if ceiling and (rate > ceiling.rate_limit_per_sec or burst > ceiling.burst):
        raise ConfigError(
            f"{key} ({rate:g} req/s, burst {burst}) exceeds the bucket it sits under ({ceiling.rate_limit_per_sec:g}"
            f" req/s, burst {ceiling.burst}); a request passes both, so the larger one would never apply")
    # AWS's own account defaults keep half a second of rate in the bucket (5,000 at 10,000 req/s). A
    # smaller bucket refuses clients whose requests arrive milliseconds apart, well below the rate.
    needed = max(1, math.ceil(rate / 2))
    if burst < needed:
        raise ConfigError(
            f"{key}.burst must be at least half a second of rate_limit_per_sec ({needed} for {rate:g} req/s), got"
            f" {burst}; requests arriving together would be refused with 429 well below the rate")
    return ThrottleConfig(rate_limit_per_sec=rate, burst=burst)


def _object(key: str, raw: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key} must be an object of settings ({', '.join(sorted(allowed))}), got {raw!r}")
    _refuse_unknown_keys(key, raw, allowed)


def _json_object(key: str, value: Any) -> Mapping[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(f"{key} must be a JSON object such as '{{\"crm\": \"https://...\"}}', got {value!r}") from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be an object of downstream name -> base URL, got {value!r}")
    return value


def _required(raw: Mapping[str, Any], key: str, name: str) -> Any:
    if name not in raw:
        raise ConfigError(f"{key}.{name} is required; add it to cdk.json")
    return raw[name]


def _number(raw: Mapping[str, Any], key: str, name: str, low: float, high: float) -> float:
    value = _required(raw, key, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{key}.{name} must be a number in [{_bound(low)}, {_bound(high)}], got {value!r}")
    return float(value)


def _bound(value: float) -> float | int:
    """A bound as cdk.json would write it: 10000, not 10000.0."""
    return int(value) if float(value).is_integer() else value


def _int(raw: Mapping[str, Any], key: str, name: str, low: int, high: int) -> int:
    value = _required(raw, key, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key}.{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _choice(raw: Mapping[str, Any], key: str, name: str, allowed: tuple[Any, ...]) -> Any:
    value = _required(raw, key, name)
    if isinstance(value, bool) or value not in allowed:
        raise ConfigError(f"{key}.{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _url(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _URL.fullmatch(value):
        raise ConfigError(f"{key} must be an http(s) URL such as 'https://crm.example.com', got {value!r}")
    return value.rstrip("/")

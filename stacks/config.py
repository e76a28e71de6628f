"""The one typed configuration of the app, built from `cdk.json` context for one stage.

`app.py` is the only reader of context: it hands the raw values to `load_config`, which validates
every field and fails synth with a message naming the key, the bad value and the allowed range.
Stacks and constructs receive typed slices of the resulting `AppConfig` and read nothing else.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

STAGES = ("dev", "prod")
DEFAULT_STAGE = "dev"

# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS_ALLOWED = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)
REMOVAL_POLICIES = ("destroy", "retain")
_DOWNSTREAM_NAME = re.compile(r"^[a-z][a-z0-9_]{1,30}$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_ACCOUNT = re.compile(r"^\d{12}$")


class ConfigError(ValueError):
    """A context value is missing or out of range; the message names the key and the allowed values."""


@dataclass(frozen=True)
class DownstreamConfig:
    """A rate-limited third party the app calls, and the numbers we plan its traffic with.

    `rate_limit_per_sec` is the downstream's contractual limit: it seeds the tunable rate and is the
    ceiling the Lambda-side reader clamps any operator or controller value to.
    """

    name: str
    base_url: str
    rate_limit_per_sec: float
    burst: int
    expected_latency_ms: int
    timeout_sec: float = 5.0

    @property
    def default_max_concurrency(self) -> int:
        """In-flight calls that keep the downstream at its limit, by Little's law (L = lambda * W).

        Rounded down, never below 1: at 10 req/s and 200 ms that is 2 calls in flight, where the
        seed's guess of 5 would offer 25 req/s to a 10 req/s CRM.
        """
        return max(1, math.floor(self.rate_limit_per_sec * self.expected_latency_ms / 1000))


@dataclass(frozen=True)
class AppConfig:
    """Everything one stage of the app is built from."""

    stage: str
    region: str
    account: str | None
    log_retention_days: int
    removal_policy: str
    powertools_layer_version: int
    tunables_cache_sec: int
    nag: bool
    downstreams: tuple[DownstreamConfig, ...] = field(default_factory=tuple)

    @property
    def ssm_prefix(self) -> str:
        """Where this stage's operator-tunable parameters live in Parameter Store."""
        return f"/throttling/{self.stage}"

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
) -> AppConfig:
    """Build and validate the config of `stage` from the `stages` context object of `cdk.json`.

    `stage`, `nag` and `downstream_base_urls` come from the command line (`-c stage=prod -c nag=true
    -c downstream_base_urls='{"crm": "https://gateway.example.com/crm"}'`), so they may be strings.
    """
    stage = stage or DEFAULT_STAGE
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {list(STAGES)}, got {stage!r}; pass -c stage=dev or -c stage=prod")
    if not isinstance(stages, Mapping) or stage not in stages:
        raise ConfigError(f"cdk.json context 'stages' has no entry for stage {stage!r}; add stages.{stage}")
    raw = stages[stage]
    if not isinstance(raw, Mapping):
        raise ConfigError(f"stages.{stage} must be an object, got {type(raw).__name__}")
    key = f"stages.{stage}"

    downstreams_raw = _required(raw, key, "downstreams")
    if not isinstance(downstreams_raw, Mapping) or not downstreams_raw:
        raise ConfigError(f"{key}.downstreams must be a non-empty object of name -> settings, got {downstreams_raw!r}")

    account = raw.get("account")
    if account is not None and not (isinstance(account, str) and _ACCOUNT.match(account)):
        raise ConfigError(f"{key}.account must be a 12-digit AWS account id or absent, got {account!r}")
    region = _required(raw, key, "region")
    if not (isinstance(region, str) and _REGION.match(region)):
        raise ConfigError(f"{key}.region must be an AWS region such as 'eu-west-1', got {region!r}")

    config = AppConfig(
        stage=stage,
        region=region,
        account=account,
        log_retention_days=_choice(raw, key, "log_retention_days", LOG_RETENTION_DAYS_ALLOWED),
        removal_policy=_choice(raw, key, "removal_policy", REMOVAL_POLICIES),
        powertools_layer_version=_int(raw, key, "powertools_layer_version", 1, 1000),
        tunables_cache_sec=_int(raw, key, "tunables_cache_sec", 0, 300),
        nag=_bool("nag", nag if nag is not None else raw.get("nag", False)),
        downstreams=tuple(
            _downstream(f"{key}.downstreams.{name}", name, value) for name, value in downstreams_raw.items()
        ),
    )
    if downstream_base_urls:
        config = config.with_downstream_base_urls(_json_object("downstream_base_urls", downstream_base_urls))
    return config


def _downstream(key: str, name: str, raw: Any) -> DownstreamConfig:
    if not _DOWNSTREAM_NAME.match(name):
        raise ConfigError(f"{key}: downstream names must be snake_case (a-z, 0-9, _; 2-31 chars), got {name!r}")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key} must be an object, got {raw!r}")
    rate = _number(raw, key, "rate_limit_per_sec", 0.01, 10_000)
    burst = _int(raw, key, "burst", 1, 5_000)
    if burst < 1 or burst > max(1, math.ceil(rate * 10)):
        raise ConfigError(
            f"{key}.burst must be between 1 and 10 s worth of rate_limit_per_sec ({max(1, math.ceil(rate * 10))}),"
            f" got {burst}; a larger burst would let a downstream limit be exceeded tenfold after an idle spell"
        )
    return DownstreamConfig(
        name=name,
        base_url=_url(f"{key}.base_url", _required(raw, key, "base_url")),
        rate_limit_per_sec=rate,
        burst=burst,
        expected_latency_ms=_int(raw, key, "expected_latency_ms", 1, 60_000),
        timeout_sec=_number(raw, key, "timeout_sec", 0.1, 900) if "timeout_sec" in raw else 5.0,
    )


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
        raise ConfigError(f"{key}.{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


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
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        raise ConfigError(f"{key} must be an http(s) URL such as 'https://crm.example.com', got {value!r}")
    return value.rstrip("/")
